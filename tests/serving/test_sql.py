"""The SQL surface on a real DuckDB connection: vector_search(...), text_search(...) and rrf(...) as
tables, quiver_search(...) as a list."""

from __future__ import annotations

import json

import duckdb
import pytest

from quiver.pipelines.sql import register
from quiver.resources.fusion import reciprocal_rank_fusion
from quiver.resources.search import HYBRID_COLUMNS, Searcher
from quiver.resources.spec import load_spec

ASEBA = 1188  # package "aseba": its name is a word only the full-text pass ranks first
TYPED = ["pkg_id", "package", "section", "short_description"]  # the dataset's own columns, typed
RRF = ["rank", "primary_key", *HYBRID_COLUMNS, "data", *TYPED]


@pytest.fixture(scope="module")
def conn(built, spec):
    spec_path, home, table = built
    conn = duckdb.connect()
    register(conn, home=home, spec_path=spec_path)
    conn.register("source", table)
    conn.execute("CREATE TABLE packages AS SELECT * FROM source")  # the user's own table
    yield conn
    conn.close()


def test_vector_search_table_best_first(conn, built):
    rel = conn.sql("SELECT * FROM vector_search('pkgs', 'text editor', 7)")
    assert rel.columns == ["rank", "primary_key", "score", "distance", "data", *TYPED]
    assert [str(t) for t in rel.types] == ["INTEGER", "VARCHAR", "DOUBLE", "DOUBLE", "JSON", "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR"]
    rows = rel.fetchall()
    for row in rows:  # the typed columns say what primary_key and data say
        assert row[5] == int(row[1]) and json.loads(row[4]) == dict(zip(TYPED[1:], row[6:]))
    assert [r[0] for r in rows] == list(range(1, 8))
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True)
    data = json.loads(rows[0][4])
    assert set(data) == {"package", "section", "short_description"}


def test_same_answer_as_python(conn, built):
    home = built[1]
    python = Searcher(home, ["pkgs"]).search("pkgs", "python library", k=5, mode="vector")
    sql = conn.sql("SELECT primary_key, score FROM vector_search('pkgs', 'python library', 5)").fetchall()
    assert [int(pk) for pk, _ in sql] == python.column("pkg_id").to_pylist()
    assert [s for _, s in sql] == pytest.approx(python.column("score").to_pylist())


def test_k_default_and_more_than_rows(conn):
    assert conn.sql("SELECT count(*) FROM vector_search('pkgs', 'database')").fetchone()[0] == 10
    assert conn.sql("SELECT count(*) FROM vector_search('pkgs', 'database', 500)").fetchone()[0] == 150


def test_join_back_to_user_table(conn):
    rows = conn.sql(
        """
        SELECT v.rank, p.pkg_id, p.package, v.data->>'package' AS served
        FROM vector_search('pkgs', 'email client', 5) AS v
        JOIN packages AS p ON p.pkg_id = v.primary_key::BIGINT
        ORDER BY v.rank
        """
    ).fetchall()
    assert len(rows) == 5
    assert all(package == served for _, _, package, served in rows)


def test_scalar_form_one_list_per_row(conn):
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE queries AS FROM (VALUES (1, 'text editor'), (2, 'web server'), (3, NULL)) t(id, q)"
    )
    rows = conn.sql(
        "SELECT id, len(quiver_search('pkgs', q, 3)) AS n, quiver_search('pkgs', q, 3)[1].rank AS top FROM queries ORDER BY id"
    ).fetchall()
    assert rows == [(1, 3, 1), (2, 3, 1), (3, None, None)]
    unnested = conn.sql(
        "SELECT id, hit.rank, hit.score FROM (SELECT id, unnest(quiver_search('pkgs', q, 4)) AS hit FROM queries) ORDER BY id, hit.rank"
    ).fetchall()
    assert [(i, r) for i, r, _ in unnested] == [(i, r) for i in (1, 2) for r in range(1, 5)]


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT quiver_search('nope', 'x', 3)", "unknown dataset 'nope'; known datasets: pkgs"),
        ("SELECT * FROM vector_search('pkgs', 'x', 0)", "k must be a positive integer, got 0"),
        ("SELECT * FROM vector_search('pkgs', 'x', -2)", "k must be a positive integer, got -2"),
        ("SELECT * FROM vector_search('pkgs', '  ', 3)", "empty text"),
    ],
)
def test_errors_are_clear_duckdb_errors(conn, sql, message):
    with pytest.raises(duckdb.InvalidInputException, match=message) as caught:
        conn.sql(sql).fetchall()
    assert "Python exception" not in str(caught.value) and "\n" not in str(caught.value), "the message alone, one line"


@pytest.mark.parametrize("macro", ["vector_search", "text_search", "rrf"])
def test_an_unknown_dataset_is_a_missing_table(conn, macro):
    """The table macros take a dataset as a table (Spice's form), so DuckDB names the unknown one."""
    with pytest.raises(duckdb.CatalogException, match="nope does not exist"):
        conn.sql(f"SELECT * FROM {macro}('nope', 'x', 3)").fetchall()


def test_the_dataset_as_a_bare_table_name_and_the_users_own_table_untouched(conn):
    bare = conn.sql("SELECT pkg_id, package, score FROM vector_search(pkgs, 'text editor', 3)").fetchall()
    quoted = conn.sql("SELECT pkg_id, package, score FROM vector_search('pkgs', 'text editor', 3)").fetchall()
    assert bare == quoted and len(bare) == 3
    assert conn.sql("SELECT count(*) FROM packages").fetchone()[0] > 3, "the user's table is theirs, not a view of quiver's"


def test_register_again_and_nothing_persisted(built, tmp_path):
    spec_path, home, _ = built
    path = tmp_path / "user.duckdb"
    conn = duckdb.connect(str(path))
    register(conn, home=home, spec_path=spec_path)
    register(conn, home=home, spec_path=spec_path)  # replaces, no "already exists"
    assert conn.sql("SELECT count(*) FROM vector_search('pkgs', 'shell', 2)").fetchone()[0] == 2
    conn.close()
    reopened = duckdb.connect(str(path))  # TEMP macros: the user's file does not need quiver to open
    assert (
        reopened.sql("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'vector_search'").fetchone()[0] == 0
    )
    reopened.close()


# --- where (filter :=) -------------------------------------------------------------------------


def test_filter_returns_top_matching_rows(conn, built):
    _, _, table = built
    python_ones = sum(1 for s in table.column("section").to_pylist() if s == "python")
    rows = conn.sql(
        "SELECT data->>'section' FROM vector_search('pkgs', 'library', 500, filter := 'section = ''python''')"
    ).fetchall()
    assert len(rows) == python_ones > 0
    assert {r[0] for r in rows} == {"python"}
    top = conn.sql(
        "SELECT count(*) FROM vector_search('pkgs', 'library', 3, filter := 'section = ''python''', ef_search := 128)"
    ).fetchone()[0]
    assert top == min(3, python_ones)


def test_bad_filter_is_refused(conn):
    with pytest.raises(duckdb.InvalidInputException, match="not served|not a SQL predicate|where"):
        conn.sql("SELECT * FROM vector_search('pkgs', 'x', 3, filter := '1=1; DROP TABLE packages')").fetchall()
    assert conn.sql("SELECT count(*) FROM packages").fetchone()[0] == 150


# --- text_search and rrf ------------------------------------------------------------------------


def test_text_search_is_bm25_alone(conn, built):
    rel = conn.sql("SELECT * FROM text_search('pkgs', 'aseba')")
    assert rel.columns == ["rank", "primary_key", "score", "distance", "data", *TYPED]
    assert [str(t) for t in rel.types] == ["INTEGER", "VARCHAR", "DOUBLE", "DOUBLE", "JSON", "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR"]
    rows = rel.fetchall()
    for row in rows:  # the typed columns say what primary_key and data say
        assert row[5] == int(row[1]) and json.loads(row[4]) == dict(zip(TYPED[1:], row[6:]))
    assert rows[0][1] == str(ASEBA) and json.loads(rows[0][4])["package"] == "aseba"
    assert all(row[3] is None for row in rows)
    python = Searcher(built[1], ["pkgs"]).search("pkgs", "aseba", mode="text")
    assert [int(r[1]) for r in rows] == python.column("pkg_id").to_pylist()
    assert [r[2] for r in rows] == pytest.approx(python.column("score").to_pylist())
    vector_first = conn.sql("SELECT primary_key FROM vector_search('pkgs', 'aseba', 1)").fetchone()[0]
    assert vector_first != str(ASEBA)  # what the text pass adds


def test_text_search_filter_and_k(conn):
    many = conn.sql("SELECT primary_key FROM text_search('pkgs', 'library development', 500)").fetchall()
    few = conn.sql("SELECT primary_key FROM text_search('pkgs', 'library development', 2)").fetchall()
    assert len(many) > 2 and few == many[:2]
    rows = conn.sql(
        "SELECT data->>'section' FROM text_search('pkgs', 'library development', 500, "
        "filter := 'section = ''libdevel''')"
    ).fetchall()
    assert 0 < len(rows) < len(many) and {r[0] for r in rows} == {"libdevel"}


def _ranking(conn, macro: str, query: str, depth: int) -> list[str]:
    sql = f"SELECT primary_key FROM {macro}('pkgs', '{query}', {depth}) ORDER BY rank"
    return [r[0] for r in conn.sql(sql).fetchall()]


@pytest.mark.parametrize("query", ["aseba", "text editor", "bluetooth scanner", "python library"])
def test_rrf_is_the_fusion_of_the_two_macros(conn, query):
    rel = conn.sql(f"SELECT * FROM rrf('pkgs', '{query}', 10)")
    assert rel.columns == RRF
    rows = [dict(zip(RRF, r)) for r in rel.fetchall()]
    assert [r["rank"] for r in rows] == list(range(1, 11))
    # Recomputed in Python from the two passes, each asked for its 50 best (the macro's depth).
    passes = {"text": _ranking(conn, "text_search", query, 50), "vector": _ranking(conn, "vector_search", query, 50)}
    assert passes["text"], "the query must reach the text pass too"
    fused = reciprocal_rank_fusion(passes)[:10]
    assert [r["primary_key"] for r in rows] == [f.key for f in fused]
    assert [r["fused_score"] for r in rows] == pytest.approx([f.score for f in fused])
    for row, f in zip(rows, fused):
        assert (row["vector_rank"], row["text_rank"]) == (f.ranks.get("vector"), f.ranks.get("text"))
        assert (row["score"] is None) == (row["distance"] is None) == (row["vector_rank"] is None)
        assert (row["text_score"] is None) == (row["text_rank"] is None)


def test_rrf_and_python_hybrid_agree_on_a_name(conn, built):
    spec_path, home, _ = built
    rows = conn.sql("SELECT primary_key, text_rank, data->>'package' FROM rrf('pkgs', 'aseba', 5)").fetchall()
    assert rows[0] == (str(ASEBA), 1, "aseba")
    python = Searcher.for_spec(home, load_spec(spec_path)).search("pkgs", "aseba", k=5, mode="hybrid")
    assert python.column("pkg_id")[0].as_py() == ASEBA
    assert [int(pk) for pk, _, _ in rows] == python.column("pkg_id").to_pylist()  # same depth, same ranks


def test_rrf_weights_and_rrf_k(conn):
    sql = "SELECT primary_key FROM rrf('pkgs', 'library development', 3, vector_weight := 0)"
    texts = _ranking(conn, "text_search", "library development", 3)
    assert [r[0] for r in conn.sql(sql).fetchall()] == texts  # a pass of weight 0 only breaks ties
    sql = "SELECT fused_score, vector_rank, text_rank FROM rrf('pkgs', 'aseba', 1, rrf_k := 0, text_weight := 2)"
    score, vector_rank, text_rank = conn.sql(sql).fetchone()
    assert text_rank == 1 and score == pytest.approx(2 / text_rank + (1 / vector_rank if vector_rank else 0))


def test_rrf_filter(conn, built):
    _, _, table = built
    python_ones = sum(1 for s in table.column("section").to_pylist() if s == "python")
    rows = conn.sql(
        "SELECT data->>'section' FROM rrf('pkgs', 'python library', 500, filter := 'section = ''python''')"
    ).fetchall()
    assert len(rows) == python_ones > 0 and {r[0] for r in rows} == {"python"}


def test_quiver_search_mode(conn):
    text = conn.sql("SELECT quiver_search('pkgs', 'aseba', 3, mode := 'text')[1]").fetchone()[0]
    assert text["primary_key"] == str(ASEBA) and text["score"] > 0 and text["distance"] is None
    default = conn.sql("SELECT quiver_search('pkgs', 'aseba', 3)[1]").fetchone()[0]  # hybrid: a full-text index
    assert default["primary_key"] == str(ASEBA) and default["fused_score"] > 0 and default["text_rank"] == 1
    vector = conn.sql("SELECT quiver_search('pkgs', 'aseba', 3, mode := 'vector')[1]").fetchone()[0]
    assert vector["fused_score"] is None and vector["text_score"] is None and vector["distance"] is not None


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT * FROM rrf('pkgs', 'x', 0)", "rrf: k must be a positive integer, got 0"),
        ("SELECT * FROM rrf('pkgs', 'x', 3, rrf_k := -1)", "rrf: rrf_k must be 0 or more, got -1"),
        ("SELECT * FROM rrf('pkgs', 'x', 3, text_weight := -1)", "vector_weight and text_weight must be numbers >= 0"),
        ("SELECT * FROM text_search('pkgs', '  ', 3)", "empty text"),
        ("SELECT quiver_search('pkgs', 'x', 3, mode := 'fuzzy')", "mode must be one of hybrid, vector, text"),
    ],
)
def test_text_and_rrf_errors(conn, sql, message):
    with pytest.raises(duckdb.InvalidInputException, match=message):
        conn.sql(sql).fetchall()
