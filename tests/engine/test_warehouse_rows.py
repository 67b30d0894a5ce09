"""``warehouse.load_source`` in full mode: the rows table equals the source after every refresh,
and only the rows that changed are written again."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.resources import warehouse

LAYOUT = warehouse.TableLayout(dataset="t", primary_key="id", text_columns=("text",))
SCHEMA = pa.schema(
    [("id", pa.int64()), ("text", pa.string()), ("score", pa.float64()), ("tags", pa.list_(pa.string()))]
)


def _load(conn, tmp_path, rows: list[dict], schema: pa.Schema = SCHEMA) -> None:
    path = tmp_path / "source.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    warehouse.load_source(conn, LAYOUT, [str(path)])


def _normal(value):
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _table(conn) -> list[tuple]:
    rows = conn.execute("SELECT * FROM t_rows").fetchall()
    return sorted((tuple(_normal(v) if not isinstance(v, list) else tuple(v) for v in row) for row in rows), key=repr)


def _expected(rows: list[dict]) -> list[tuple]:
    return sorted(
        (tuple(_normal(r[c]) if not isinstance(r[c], list) else tuple(r[c]) for c in SCHEMA.names) for r in rows),
        key=repr,
    )


_row_values = st.fixed_dictionaries(
    {
        "text": st.sampled_from(["a", "b", "c", ""]),
        "score": st.one_of(st.none(), st.sampled_from([0.0, 1.5, -2.0, float("nan")])),
        "tags": st.one_of(st.none(), st.lists(st.sampled_from(["x", "y"]), max_size=2)),
    }
)
_source = st.dictionaries(st.integers(0, 30), _row_values, max_size=25).map(
    lambda rows: [{"id": pk, **values} for pk, values in sorted(rows.items())]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sources=st.lists(_source, min_size=1, max_size=5))
def test_the_rows_table_equals_every_source_in_turn(tmp_path, sources):
    conn = duckdb.connect()
    for rows in sources:
        _load(conn, tmp_path, rows)
        assert _table(conn) == _expected(rows)


def test_a_source_rewritten_in_place_at_the_same_size_is_read_afresh(tmp_path):
    """Found by the property test above: DuckDB's external file cache kept the first file's bytes."""
    conn = duckdb.connect()
    first = [
        {"id": 0, "text": "a", "score": None, "tags": None},
        {"id": 1, "text": "b", "score": None, "tags": None},
        {"id": 2, "text": "c", "score": 0.0, "tags": None},
        {"id": 3, "text": "a", "score": None, "tags": ["x"]},
        {"id": 4, "text": "", "score": None, "tags": None},
    ]
    second = [
        {"id": 0, "text": "b", "score": None, "tags": None},
        {"id": 1, "text": "b", "score": None, "tags": None},
        {"id": 2, "text": "", "score": None, "tags": None},
        {"id": 3, "text": "b", "score": None, "tags": ["x"]},
        {"id": 4, "text": "b", "score": 0.0, "tags": None},
        {"id": 5, "text": "b", "score": 1.5, "tags": None},
    ]
    _load(conn, tmp_path, first)
    size = (tmp_path / "source.parquet").stat().st_size
    _load(conn, tmp_path, second)
    assert (tmp_path / "source.parquet").stat().st_size == size
    assert _table(conn) == _expected(second)


def test_only_new_and_changed_rows_are_written_again(tmp_path):
    conn = duckdb.connect()
    base = [{"id": i, "text": f"row {i}", "score": float(i), "tags": ["x"]} for i in range(100)]
    _load(conn, tmp_path, base)
    before = dict(conn.execute("SELECT id, rowid FROM t_rows").fetchall())

    changed = [dict(r) for r in base if r["id"] != 7]  # 7 deleted
    changed[3]["text"] = "row 3, edited"
    changed[4]["score"] = None  # a value that becomes null is a change too
    changed.append({"id": 500, "text": "new", "score": 1.0, "tags": None})
    _load(conn, tmp_path, changed)

    assert _table(conn) == _expected(changed)
    after = dict(conn.execute("SELECT id, rowid FROM t_rows").fetchall())
    rewritten = {pk for pk in after if before.get(pk) != after[pk]}
    assert rewritten == {3, 4, 500}


@pytest.mark.parametrize(
    "schema",
    [
        pa.schema([("id", pa.int64()), ("text", pa.string()), ("score", pa.int32()), ("tags", pa.list_(pa.string()))]),
        pa.schema([("id", pa.int64()), ("text", pa.string()), ("score", pa.float64())]),
    ],
    ids=["a column changes type", "a column is dropped"],
)
def test_a_new_source_schema_replaces_the_table(tmp_path, schema):
    conn = duckdb.connect()
    _load(conn, tmp_path, [{"id": 1, "text": "a", "score": 1.0, "tags": ["x"]}])
    rows = [{"id": 1, "text": "a", "score": 1}, {"id": 2, "text": "b", "score": 2}]
    _load(conn, tmp_path, rows, schema)
    described = {name: kind for name, kind, *_ in conn.execute("DESCRIBE t_rows").fetchall()}
    assert list(described) == schema.names
    assert described["score"] == ("INTEGER" if schema.field("score").type == pa.int32() else "DOUBLE")
    assert sorted(conn.execute("SELECT id, text FROM t_rows").fetchall()) == [(1, "a"), (2, "b")]
