"""``warehouse.commit_changes`` with chunks: a row's chunks are replaced whole in one commit, keys
are stable per (primary key, chunk), and tables written before chunking carry on."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quiver.resources import warehouse
from quiver.resources.index.commitlog import CHUNK, CHUNK_END, CHUNK_START, KEY, OP, SEQ

LAYOUT = warehouse.TableLayout(dataset="t", primary_key="id", text_columns=("text",), served_columns=("text",))
DIM = 4


def refresh(conn, tmp_path, texts: dict[int, str], pieces: dict[int, int]) -> warehouse.CommitResult | None:
    """Load ``texts``, then commit: row ``id`` as ``pieces[id]`` chunks (one vector each)."""
    path = tmp_path / "source.parquet"
    pq.write_table(pa.table({"id": list(texts), "text": list(texts.values())}), path)
    warehouse.load_source(conn, LAYOUT, [str(path)])
    plan = warehouse.plan_changes(conn, LAYOUT, "model")
    rows = warehouse.read_rows(conn, LAYOUT, plan, plan.to_embed)
    ids = rows.column("id").to_pylist()
    owners = [i for i in ids for _ in range(pieces[i])]
    numbers = [n for i in ids for n in range(pieces[i])]
    chunks = pa.table(
        {
            "id": pa.array(owners, pa.int64()),
            CHUNK: pa.array(numbers, pa.int32()),
            CHUNK_START: pa.array([n * 10 for n in numbers], pa.int32()),
            CHUNK_END: pa.array([n * 10 + 10 for n in numbers], pa.int32()),
        }
    )
    vectors = np.random.default_rng(len(owners)).normal(size=(len(owners), DIM)).astype(np.float32)
    return warehouse.commit_changes(conn, LAYOUT, plan, rows, vectors, chunks)


def keys_of(conn) -> dict[tuple[int, int], int]:
    return {(i, c): k for i, c, k in conn.execute(f"SELECT id, {CHUNK}, {KEY} FROM t_keys").fetchall()}


def chunks_of(conn) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, c in conn.execute(f"SELECT id, {CHUNK} FROM t_embeddings ORDER BY 1, 2").fetchall():
        out.setdefault(i, []).append(c)
    return out


def test_a_row_that_shrinks_grows_and_leaves_in_one_commit_each(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    refresh(conn, tmp_path, {1: "one", 2: "two"}, {1: 5, 2: 1})
    first_keys = keys_of(conn)
    assert chunks_of(conn) == {1: [0, 1, 2, 3, 4], 2: [0]} and len(set(first_keys.values())) == 6

    shrink = refresh(conn, tmp_path, {1: "one, shorter", 2: "two"}, {1: 2, 2: 1})
    assert chunks_of(conn) == {1: [0, 1], 2: [0]}
    changes, last = warehouse.changes_after(conn, LAYOUT, shrink.first_seq - 1)
    got = sorted(zip(changes.column(OP).to_pylist(), changes.column(KEY).to_pylist()))
    want = sorted([("upsert", first_keys[1, 0]), ("upsert", first_keys[1, 1])] + [("delete", first_keys[1, n]) for n in (2, 3, 4)])
    assert got == want and last == shrink.last_seq  # one commit: the new chunks and the stale ones' deletes
    assert changes.column(CHUNK).to_pylist()[:2] == [0, 1] and changes.column(CHUNK_END).to_pylist()[:2] == [10, 20]

    refresh(conn, tmp_path, {1: "one, much longer now", 2: "two"}, {1: 7, 2: 1})
    keys = keys_of(conn)
    assert {k: v for k, v in keys.items() if k in first_keys} == first_keys, "a chunk number keeps its key"
    assert chunks_of(conn) == {1: list(range(7)), 2: [0]}

    leave = refresh(conn, tmp_path, {2: "two"}, {2: 1})
    assert chunks_of(conn) == {2: [0]} and (leave.upserted, leave.deleted) == (0, 7)


def test_tables_from_before_chunking_carry_on(tmp_path):
    """The old layout: keys without ``_chunk``, embeddings without the chunk columns."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("CREATE TABLE t_rows AS SELECT 1::BIGINT AS id, 'old text' AS text")
    conn.execute("CREATE TABLE t_keys AS SELECT 1::BIGINT AS id, 1::UBIGINT AS _key")
    conn.execute(
        "CREATE TABLE t_embeddings AS SELECT 1::BIGINT AS id, 1::UBIGINT AS _key, 1::BIGINT AS _seq, "
        "md5('model' || chr(0) || 'old text') AS _content_hash, md5(CAST(struct_pack(text := 'old text') AS VARCHAR)) "
        "AS _served_hash, [1, 0, 0, 0]::FLOAT[4] AS _vector, 'old text' AS text"
    )
    conn.execute("CREATE TABLE t_changes AS SELECT 1::BIGINT AS _seq, 'upsert' AS _op, 1::UBIGINT AS _key, 1::BIGINT AS id, now()::TIMESTAMPTZ AS _at")
    old, _ = warehouse.changes_after(conn, LAYOUT, 0)  # read before any write: chunk 0, whole
    assert (old.column(CHUNK).to_pylist(), old.column(CHUNK_END).to_pylist()) == ([0], [None])

    committed = refresh(conn, tmp_path, {1: "old text", 3: "a new row, long"}, {3: 3})
    assert (committed.upserted, committed.deleted) == (3, 0), "the old row is unchanged: not embedded again"
    assert keys_of(conn)[1, 0] == 1 and chunks_of(conn) == {1: [0], 3: [0, 1, 2]}
    changes, _ = warehouse.changes_after(conn, LAYOUT, 0)
    assert sorted(changes.column(SEQ).to_pylist()) == [1, 2, 3, 4]


def test_whitespace_only_text_is_skipped_and_counted_not_embedded(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    path = tmp_path / "source.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": ["words", "\n\t \n", "   ", None]}), path)
    warehouse.load_source(conn, LAYOUT, [str(path)])
    plan = warehouse.plan_changes(conn, LAYOUT, "model")
    assert plan.to_embed.column("id").to_pylist() == [1]
    assert (plan.skipped_empty, plan.skipped_examples) == (3, [2, 3, 4])
