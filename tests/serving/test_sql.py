"""The SQL surface on a real DuckDB connection: vector_search(...) as a table, quiver_search(...) as a list."""

from __future__ import annotations

import json

import duckdb
import pytest

from quiver.pipelines.sql import register
from quiver.resources.search import Searcher


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
    assert rel.columns == ["rank", "primary_key", "score", "distance", "data"]
    assert [str(t) for t in rel.types] == ["INTEGER", "VARCHAR", "DOUBLE", "DOUBLE", "JSON"]
    rows = rel.fetchall()
    assert [r[0] for r in rows] == list(range(1, 8))
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True)
    data = json.loads(rows[0][4])
    assert set(data) == {"package", "section", "short_description"}


def test_same_answer_as_python(conn, built):
    home = built[1]
    python = Searcher(home, ["pkgs"]).search("pkgs", "python library", k=5)
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
        ("SELECT * FROM vector_search('nope', 'x', 3)", "unknown dataset 'nope'; known datasets: pkgs"),
        ("SELECT * FROM vector_search('pkgs', 'x', 0)", "k must be a positive integer, got 0"),
        ("SELECT * FROM vector_search('pkgs', 'x', -2)", "k must be a positive integer, got -2"),
        ("SELECT * FROM vector_search('pkgs', '  ', 3)", "empty text"),
    ],
)
def test_errors_are_clear_duckdb_errors(conn, sql, message):
    with pytest.raises(duckdb.InvalidInputException, match=message):
        conn.sql(sql).fetchall()


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
