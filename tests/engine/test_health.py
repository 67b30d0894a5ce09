"""quiver.resources.health on engine-built index directories and small DuckDB tables (seeded, no model)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from quiver.resources import health
from quiver.resources.index import IndexReader
from quiver.resources.index.identity import HnswParams
from quiver.resources.warehouse import TableLayout

DIM = 16


def _clustered(kit, store, rows: int, seed: int = 3, snapshot: bool = True):
    """``rows`` clustered unit vectors in one segment (folded into a snapshot when ``snapshot``)."""
    rng = np.random.default_rng(seed)
    work = kit.Workload(seed, DIM, centers=rng.normal(size=(12, DIM)))
    table, first, last = work.batch(inserts=rows)
    store.append_segment(table, first, last)
    if snapshot:
        store.take_snapshot()
    return work


@pytest.fixture()
def index(kit, tmp_path):
    store = kit.new_store(tmp_path / "idx", kit.make_identity(dim=DIM))
    work = _clustered(kit, store, 400)
    return store, work


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot-graph", "delta-graph"])
def test_recall_of_a_sound_graph_is_high_and_seeded(kit, tmp_path, snapshot):
    store = kit.new_store(tmp_path / "idx", kit.make_identity(dim=DIM))
    _clustered(kit, store, 400, snapshot=snapshot)
    reader = IndexReader(store.root)
    first = health.measure_recall(reader, sample=100)
    again = health.measure_recall(IndexReader(store.root), sample=100)
    assert first.recall >= 0.95 and first.queries == 100 and first.k == 10 and first.ef_search == 64
    assert (first.graph_vectors, first.delta_vectors) == ((400, 0) if snapshot else (0, 400))
    if snapshot:  # the same published graph; a delta's graph is built anew (on several threads) per reader
        assert again.recall == first.recall
    same = health.sample_queries(IndexReader(store.root), 100).keys
    assert np.array_equal(same, health.sample_queries(reader, 100).keys)  # seeded
    assert not np.array_equal(same, health.sample_queries(reader, 100, seed=1).keys)
    assert first.latency_ms_p50 > 0 and first.seconds > 0


def test_recall_falls_with_a_poor_graph_and_rises_with_ef_search(kit, tmp_path):
    store = kit.new_store(
        tmp_path / "idx", kit.make_identity(dim=DIM), params=HnswParams(m=2, ef_construction=1, ef_search=1)
    )
    _clustered(kit, store, 600)
    reader = IndexReader(store.root)
    poor = health.measure_recall(reader, sample=150)
    assert poor.recall < 0.9 and poor.worst and all(r < 1 for _, r in poor.worst)
    sweep = health.ef_search_sweep(reader, (1, 16, 256), sample=150)
    assert [p.ef_search for p in sweep] == [1, 16, 256]
    assert sweep[0].recall == pytest.approx(poor.recall) and sweep[-1].recall > sweep[0].recall


def test_recall_on_a_delta_with_deletes_and_updates_uses_only_live_rows(kit, index):
    store, work = index
    table, first, last = work.batch(inserts=30, updates=40, deletes=50)
    store.append_segment(table, first, last)
    reader = IndexReader(store.root)
    result = health.measure_recall(reader, sample=500)
    assert result.live_vectors == len(work.model.rows) == 380 and result.queries == 380
    assert result.graph_vectors == 400 - 90 and result.delta_vectors == 70
    assert result.recall >= 0.9


@pytest.mark.parametrize(("rows", "k"), [(1, 0), (3, 2)])
def test_recall_on_tiny_indexes(kit, tmp_path, rows, k):
    store = kit.new_store(tmp_path / "idx", kit.make_identity(dim=DIM))
    _clustered(kit, store, rows)
    result = health.measure_recall(IndexReader(store.root), sample=50)
    assert result.k == k and result.queries == (rows if k else 0) and result.recall == 1.0


def test_parity_lists_missing_and_extra_keys(kit, index):
    store, work = index
    keys = np.array(sorted(work.model.rows), dtype=np.uint64)
    pks = [work.model.rows[int(k)].pk for k in keys]
    table = pa.table({"_key": keys, kit.PK: pa.array(pks, pa.int64())})
    reader = IndexReader(store.root)
    same = health.measure_parity(table, reader, table_seq=400)
    assert same.ok and same.table_count == same.index_count == 400 and same.missing == same.extra == []

    # The table gains two rows the index lacks and loses one it serves.
    extra_table = pa.table({"_key": pa.array([1, 2], pa.uint64()), kit.PK: pa.array([-1, -2], pa.int64())})
    changed = pa.concat_tables([table.slice(1), extra_table])
    result = health.measure_parity(changed, reader, table_seq=402)
    assert not result.ok
    assert sorted(result.missing) == [-2, -1] and result.extra == [pks[0]]
    assert (result.missing_count, result.extra_count, result.table_seq, result.served_seq) == (2, 1, 402, 400)


def test_fingerprint_is_a_key_set_digest():
    keys = np.array([5, 1, 2**63 + 7], dtype=np.uint64)
    assert health.fingerprint(keys) == health.fingerprint(keys[::-1].copy())
    assert health.fingerprint(keys) != health.fingerprint(keys[:2])
    assert health.fingerprint(np.empty(0, dtype=np.uint64)) == health.fingerprint([])


def test_snapshot_integrity_reports_damage_file_by_file(kit, index):
    store, work = index
    root = store.root
    sound = health.check_snapshots(root)
    assert sound.ok and not sound.problems and sound.current.vectors == 400 and sound.current.role == "current"

    # A second snapshot makes the first the fallback; damage the fallback: a warning, not a failure.
    table, first, last = work.batch(inserts=10)
    store.append_segment(table, first, last)
    store.take_snapshot()
    result = health.check_snapshots(root)
    assert [s.role for s in result.snapshots] == ["current", "previous"] and result.ok
    previous = root / result.snapshots[1].dir / "rows.parquet"
    previous.write_bytes(previous.read_bytes()[:-3] + b"xyz")
    result = health.check_snapshots(root)
    assert result.ok and len(result.problems) == 1 and "previous snapshot" in result.problems[0]

    current = root / result.current.dir / "index.usearch"
    data = bytearray(current.read_bytes())
    data[100] ^= 0x01
    current.write_bytes(bytes(data))
    result = health.check_snapshots(root)
    assert not result.ok and "fails its checksum" in result.current.problem


def test_snapshot_integrity_reports_a_damaged_segment_after_the_snapshot(kit, index):
    store, work = index
    table, first, last = work.batch(inserts=10)
    segment = store.append_segment(table, first, last)
    segment.path.write_bytes(segment.path.read_bytes()[:-20])
    result = health.check_snapshots(store.root)
    assert not result.ok and result.log_problem and result.segments_after == 1


def test_snapshot_integrity_without_an_index(tmp_path):
    result = health.check_snapshots(tmp_path / "nothing")
    assert not result.ok and result.manifest_problem


@pytest.fixture()
def conn(tmp_path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield connection
    connection.close()


def test_check_embeddings_classifies_each_bad_vector(conn):
    layout = TableLayout(dataset="t", primary_key="id", text_columns=("text",))
    conn.execute('CREATE TABLE "t_embeddings" (id VARCHAR, _key UBIGINT, _vector FLOAT[3])')
    conn.execute(
        """INSERT INTO "t_embeddings" VALUES
           ('ok', 1, [1, 2, 3]), ('zero', 2, [0, 0, 0]), ('nan', 3, ['nan'::FLOAT, 1, 1]),
           ('inf', 4, [1, '-inf'::FLOAT, 1]), ('null', 5, NULL), ('hole', 6, [1, NULL, 2]), ('tiny', 7, [1e-30, 0, 0])"""
    )
    found = health.check_embeddings(conn, layout, expected_dim=3)
    assert not found.ok and found.rows == 7 and found.dim == 3
    assert found.counts == {"null_vector": 1, "null_element": 1, "non_finite": 2, "zero_vector": 1}
    assert found.examples == {
        "null_vector": ["null"],
        "null_element": ["hole"],
        "non_finite": ["inf", "nan"],
        "zero_vector": ["zero"],
    }
    assert not conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_bad'").fetchone()[0]


def test_check_embeddings_compares_the_dimension(conn):
    layout = TableLayout(dataset="t", primary_key="id", text_columns=("text",))
    assert health.check_embeddings(conn, layout, expected_dim=3).dim is None  # nothing embedded yet
    conn.execute('CREATE TABLE "t_embeddings" (id INTEGER, _key UBIGINT, _vector FLOAT[3])')
    conn.execute('INSERT INTO "t_embeddings" VALUES (1, 1, [1, 2, 3])')
    assert health.check_embeddings(conn, layout, expected_dim=3).ok
    wrong = health.check_embeddings(conn, layout, expected_dim=4)
    assert not wrong.ok and wrong.bad_rows == 0 and (wrong.dim, wrong.expected_dim) == (3, 4)


def test_markdown_helpers():
    table = health.md_table(["a", "b"], [[1234567, "x|y\nz"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1,234,567 | x\\|y z |"]
    preview = health.preview_md(pa.table({"n": list(range(8)), "s": ["w" * 80] * 8}), limit=5, width=10)
    assert preview.count("\n| ") == 5 and "_3 more_" in preview and "wwwwwwwww…" in preview
    assert health.preview_md(None) == "_no rows_"
    assert health.preview_md(pa.table({"n": [1, 2]}), total=40).endswith("_38 more_")


def test_render_sweep_chart_writes_a_png(kit, index, tmp_path):
    pytest.importorskip("matplotlib")
    store, _ = index
    points = health.ef_search_sweep(IndexReader(store.root), (8, 64), sample=30)
    path = health.render_sweep_chart(points, tmp_path / "out" / "chart.png", "test", current_ef=64)
    assert path.read_bytes().startswith(b"\x89PNG") and not list(path.parent.glob("*.tmp"))


def test_a_large_delta_is_searched_as_served_not_given_a_graph(kit, tmp_path):
    store = kit.new_store(
        tmp_path / "idx", kit.make_identity(dim=DIM), params=HnswParams(m=2, ef_construction=1, ef_search=1)
    )
    _clustered(kit, store, 300, snapshot=False)
    reader = IndexReader(store.root)
    as_served = health.measure_recall(reader, sample=100, max_delta_graph=299)
    assert not as_served.delta_graph and as_served.delta_vectors == 300 and as_served.recall == 1.0
    through_graph = health.measure_recall(reader, sample=100, max_delta_graph=300)
    assert through_graph.delta_graph and through_graph.recall < 0.9
