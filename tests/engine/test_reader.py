"""reader.py: search over snapshot + delta, exact k, no ghosts, fresh state, recall, and I5."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError
from quiver.resources.index.reader import IndexReader

METRICS = ["cosine", "l2", "inner_product"]


def reader_keys(reader: IndexReader) -> set[int]:
    """Every live key, through the public API: a search for more than the index holds."""
    hits = reader.search(np.ones(reader.identity.dim, dtype=np.float32), k=len(reader) + 7)
    keys = hits.keys.tolist()
    assert len(keys) == len(set(keys)) == len(reader), "search returns each live key once"
    return set(keys)


def exact_distances(metric: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """usearch's distances, in float64: cos = 1 - cosine, ip = 1 - dot, l2sq = squared euclidean."""
    query, vectors = query.astype(np.float64), vectors.astype(np.float64)
    if metric == "cosine":
        return 1.0 - vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    if metric == "inner_product":
        return 1.0 - vectors @ query
    return ((vectors - query) ** 2).sum(axis=1)


def populate(root, kit, *, seed=0, dim=16, metric="cosine", inserts=300, centers=None):
    identity = kit.make_identity(dim=dim, metric=metric)
    store = kit.new_store(root, identity)
    work = kit.Workload(seed, dim, centers=centers)
    store.append_segment(*work.batch(inserts=inserts))
    store.take_snapshot()
    return store, work


@pytest.mark.parametrize(
    ("deletes", "updates"),
    [(450, 0), (0, 450), (300, 150), (495, 0)],
    ids=["delete90", "update90", "mixed", "delete99"],
)
@pytest.mark.parametrize("ef_search", [None, 10])
def test_exactly_k_rows_after_most_snapshot_keys_change(tmp_path, kit, deletes, updates, ef_search):
    store, work = populate(tmp_path, kit, inserts=500)
    snapshot_keys = set(work.model.rows)
    store.append_segment(*work.batch(updates=updates, deletes=deletes))
    deleted = snapshot_keys - set(work.model.rows)
    reader = IndexReader(tmp_path)
    assert len(reader) == len(work.model.rows) == 500 - deletes
    rng = np.random.default_rng(1)
    queries = [kit.random_unit(rng, 16) for _ in range(15)]
    queries += [v.vector for v in list(work.model.rows.values())[:5]]
    for query in queries:
        for k in (1, 5, 10):
            hits = reader.search(query, k, ef_search=ef_search)
            assert len(hits.keys) == min(k, len(work.model.rows))
            assert len(set(hits.keys.tolist())) == len(hits.keys)
            assert set(hits.keys.tolist()) <= set(work.model.rows)
            assert not set(hits.keys.tolist()) & deleted
            assert np.all(np.diff(hits.distances) >= 0), "best first"
    assert reader_keys(reader) == set(work.model.rows)
    for k in (1, 5, 10):  # a batch (one graph search for all) answers as each query alone
        batch = reader.search_many(np.stack(queries), k, ef_search=ef_search)
        alone = [reader.search(query, k, ef_search=ef_search) for query in queries]
        assert [h.keys.tolist() for h in batch] == [h.keys.tolist() for h in alone]
        assert all(np.allclose(b.distances, a.distances) for b, a in zip(batch, alone, strict=True))


@pytest.mark.parametrize("k", [1, 4, 50])
def test_fewer_live_rows_than_k_returns_them_all(tmp_path, kit, k):
    store, work = populate(tmp_path, kit, inserts=20)
    store.append_segment(*work.batch(inserts=2, updates=3, deletes=17))
    reader = IndexReader(tmp_path)
    hits = reader.search(kit.random_unit(np.random.default_rng(0), 16), k)
    assert len(hits.keys) == min(k, 5)
    assert set(hits.keys.tolist()) <= set(work.model.rows)


@pytest.mark.parametrize("when", ["after-snapshot", "before-snapshot", "both"])
@pytest.mark.parametrize("metric", METRICS)
def test_a_deleted_key_never_appears(tmp_path, kit, when, metric):
    store, work = populate(tmp_path, kit, metric=metric, inserts=200)
    victims = []
    if when in ("before-snapshot", "both"):
        old = dict(work.model.rows)
        store.append_segment(*work.batch(inserts=5, deletes=40))
        victims += [old[key] for key in set(old) - set(work.model.rows)]
        store.take_snapshot()
    if when in ("after-snapshot", "both"):
        old = dict(work.model.rows)
        store.append_segment(*work.batch(inserts=5, updates=5, deletes=40))
        victims += [old[key] for key in set(old) - set(work.model.rows)]
    gone = {kit.key_of(row.pk) for row in victims}
    assert len(gone) == len(victims) >= 40
    reader = IndexReader(tmp_path)
    for row in victims:
        hits = reader.search(row.vector, k=25)
        assert len(hits.keys) == 25
        assert not set(hits.keys.tolist()) & gone
    assert not reader_keys(reader) & gone


@pytest.mark.parametrize("snapshot_the_update", [False, True])
@pytest.mark.parametrize("metric", METRICS)
def test_an_updated_key_answers_with_its_new_vector_only(tmp_path, kit, metric, snapshot_the_update):
    store, work = populate(tmp_path, kit, metric=metric, inserts=300)
    before = dict(work.model.rows)
    store.append_segment(*work.batch(updates=30))
    if snapshot_the_update:
        store.take_snapshot()
    updated = [key for key in before if not np.array_equal(before[key].vector, work.model.rows[key].vector)]
    assert len(updated) == 30
    reader = IndexReader(tmp_path)
    for key in updated:
        old, new = before[key].vector, work.model.rows[key].vector
        hits = reader.search(new, k=5)
        assert int(hits.keys[0]) == key
        assert abs(float(hits.distances[0])) < 1e-5
        hits = reader.search(old, k=10)
        listed = hits.keys.tolist()
        if key in listed:  # only ever at the distance of its new vector
            moved = exact_distances(metric, old, new[None, :])[0]
            assert float(hits.distances[listed.index(key)]) == pytest.approx(moved, abs=1e-4)
            assert moved > 1e-3
        assert reader.rows(np.array([key], dtype=np.uint64)).column("name").to_pylist() == [work.model.rows[key].name]


def test_refresh_picks_up_segments_and_snapshots(tmp_path, kit):
    store, work = populate(tmp_path, kit, inserts=50)
    reader = IndexReader(tmp_path)
    assert reader.refresh() is True, "the first refresh loads"
    assert reader.refresh() is False
    assert reader_keys(reader) == set(work.model.rows)

    store.append_segment(*work.batch(inserts=10, updates=5, deletes=5))
    assert reader.refresh() is True
    assert reader.refresh() is False
    assert reader_keys(reader) == set(work.model.rows)
    assert reader.manifest.snapshot_seq == 50

    store.append_segment(*work.batch(inserts=3, deletes=2))
    store.take_snapshot()
    assert reader.refresh() is True
    assert reader.manifest.snapshot_seq == work.last_seq
    assert reader.refresh() is False
    assert reader_keys(reader) == set(work.model.rows)

    assert store.take_snapshot() is None
    assert reader.refresh() is False


def test_a_settled_log_directory_spares_the_listing_until_it_changes(tmp_path, kit, monkeypatch):
    """Per query a refresh stats log/; once its mtime is over a second old (a change after that
    always moves it) an unchanged stat skips the listing, and a new segment is still picked up at
    once. While log/ is younger than that, every refresh lists it (the mtime's tick is coarse)."""
    store, work = populate(tmp_path, kit, inserts=50)
    store.append_segment(*work.batch(inserts=5))
    real_listing, real_now = commitlog.segment_listing, time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_now() - 10_000_000_000)  # log/ looks just changed
    reader = IndexReader(tmp_path)
    reader.refresh()
    listings = []
    monkeypatch.setattr(commitlog, "segment_listing", lambda root: listings.append(root) or real_listing(root))

    assert reader.refresh() is False and len(listings) == 1, "log/ changed within the second: listed"
    monkeypatch.setattr(time, "time_ns", lambda: real_now() + 2_000_000_000)  # log/'s mtime is now settled
    assert reader.refresh() is False and len(listings) == 2, "listed once more, and the stat is trusted from here"
    assert reader.refresh() is False and reader.refresh() is False and len(listings) == 2

    store.append_segment(*work.batch(inserts=7, deletes=3))
    assert reader.refresh() is True, "a renamed-in segment moves log/'s stat"
    assert reader_keys(reader) == set(work.model.rows)


def test_a_reader_never_writes(tmp_path, kit):
    store, work = populate(tmp_path, kit, inserts=50)
    store.append_segment(*work.batch(inserts=5, deletes=5))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in kit.files_under(tmp_path)}
    reader = IndexReader(tmp_path)
    reader.search(np.ones(16, np.float32), 10)
    reader.rows(reader.search(np.ones(16, np.float32), 10).keys)
    reader.refresh()
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in kit.files_under(tmp_path)} == before


def _clusters(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    centers = rng.normal(size=(count, dim))
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", METRICS)
def test_recall_at_10_against_exact_search(tmp_path, kit, metric):
    dim, k = 32, 10
    rng = np.random.default_rng(42)
    centers = _clusters(rng, 20, dim)
    store, work = populate(tmp_path, kit, seed=42, dim=dim, metric=metric, inserts=1600, centers=centers)
    store.append_segment(*work.batch(inserts=400, updates=150, deletes=150))  # the delta
    reader = IndexReader(tmp_path)
    keys, matrix = work.model.matrix()
    assert len(reader) == len(keys) == 1850
    found = 0
    queries = 100
    for _ in range(queries):
        query = centers[rng.integers(len(centers))] + 0.2 * rng.normal(size=dim)
        query = (query / np.linalg.norm(query)).astype(np.float32)
        truth = set(keys[np.argsort(exact_distances(metric, query, matrix), kind="stable")[:k]].tolist())
        hits = reader.search(query, k)
        assert len(hits.keys) == k
        found += len(truth & set(hits.keys.tolist()))
    recall = found / (queries * k)
    assert recall >= 0.95, recall


@pytest.mark.parametrize("metric", METRICS)
def test_scores_are_higher_is_better(tmp_path, kit, metric):
    store, work = populate(tmp_path, kit, metric=metric, inserts=300)
    store.append_segment(*work.batch(inserts=30, updates=30, deletes=10))
    reader = IndexReader(tmp_path)
    rng = np.random.default_rng(3)
    for _ in range(10):
        query = 1.7 * kit.random_unit(rng, 16)  # not unit length: inner product and l2 notice
        table = reader.search_rows(query, k=20)
        assert table.column_names == [kit.PK, "score", "distance", "name"]
        scores = np.array(table.column("score").to_pylist())
        distances = np.array(table.column("distance").to_pylist())
        assert np.all(np.diff(scores) <= 1e-12), "best (highest score) first"
        assert np.all(np.diff(distances) >= 0)
        vectors = np.stack([work.model.rows[kit.key_of(pk)].vector for pk in table.column(kit.PK).to_pylist()])
        q, v = query.astype(np.float64), vectors.astype(np.float64)
        if metric == "cosine":
            want = v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
        elif metric == "inner_product":
            want = v @ q
        else:
            want = 1.0 / (1.0 + ((v - q) ** 2).sum(axis=1))
        np.testing.assert_allclose(scores, want, atol=1e-4)
        _, matrix = work.model.matrix()
        best = np.min(exact_distances(metric, query, matrix))
        assert distances[0] >= best - 1e-4, "no hit is nearer than the true nearest"
        exact = reader.search(query, k=1, exact=True)  # HNSW may miss it; exact search may not
        assert float(exact.distances[0]) == pytest.approx(best, abs=1e-4), "exact search finds the true nearest"


def test_rows_come_back_in_hit_order(tmp_path, kit):
    store, work = populate(tmp_path, kit, inserts=200)
    store.append_segment(*work.batch(inserts=20, updates=60, deletes=20))  # rows in both halves
    reader = IndexReader(tmp_path)
    assert reader.served_columns == ["name"]
    rng = np.random.default_rng(5)
    for _ in range(10):
        hits = reader.search(kit.random_unit(rng, 16), 30)
        table = reader.rows(hits.keys)
        assert table.column_names == [kit.PK, "name"]
        want = [work.model.rows[key] for key in hits.keys.tolist()]
        assert table.column(kit.PK).to_pylist() == [row.pk for row in want]
        assert table.column("name").to_pylist() == [row.name for row in want]
        result = reader.search_rows(kit.random_unit(rng, 16), 30, columns=["name"])
        for pk, name in zip(result.column(kit.PK).to_pylist(), result.column("name").to_pylist()):
            assert work.model.rows[kit.key_of(pk)].name == name
    shuffled = np.array(sorted(work.model.rows, reverse=True), dtype=np.uint64)
    table = reader.rows(shuffled, columns=["name", "colour"])
    assert table.column(kit.PK).to_pylist() == [work.model.rows[int(key)].pk for key in shuffled]
    assert table.column("colour").null_count == len(shuffled), "a column no file has is nulls"
    assert reader.rows(np.empty(0, dtype=np.uint64)).num_rows == 0


def test_rows_refuses_keys_it_does_not_serve(tmp_path, kit):
    """A missing key would land on a neighbour's position by binary search: it is refused instead."""
    store, work = populate(tmp_path, kit, inserts=200)
    before = set(work.model.rows)
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=5, updates=5, deletes=10))
    reader = IndexReader(tmp_path)
    live = np.array(sorted(work.model.rows), dtype=np.uint64)
    deleted = sorted(before - set(work.model.rows))
    assert len(deleted) == 10
    between = next(key for key in range(int(live[0]), int(live[-1])) if key not in before | set(work.model.rows))
    for bad in (deleted[0], between, int(live[-1]) + 1):
        asked = np.array([live[0], bad, live[-1]], dtype=np.uint64)
        with pytest.raises(KeyError, match=rf"not served at seq {work.last_seq}.*{bad}"):
            reader.rows(asked)
        with pytest.raises(KeyError, match=rf"not served at seq {work.last_seq}.*{bad}"):
            reader.vectors(asked)
    assert reader.rows(live).num_rows == len(live)
    np.testing.assert_array_equal(reader.vectors(live), np.stack([work.model.rows[int(k)].vector for k in live]))


def test_search_rows_takes_its_rows_from_the_state_it_searched(tmp_path, kit):
    """A refresh between the search and the row lookup (another thread's query) must not mix
    states: the hits' rows come from the state that found them."""
    store, work = populate(tmp_path, kit, inserts=200)
    store.append_segment(*work.batch(inserts=20))  # the delta holds rows the snapshot lacks
    reader = IndexReader(tmp_path)
    delta_key = int(reader.state.delta_keys[0])
    target = work.model.rows[delta_key]
    search = reader._search

    def search_then_delete(state, *args):
        hits = search(state, *args)
        seq = work.last_seq + 1
        deletion = kit.changes_table([kit.Record(seq, "delete", delta_key, target.pk, None, None)], 16)
        store.append_segment(deletion, seq, seq)
        work.last_seq = seq
        assert reader.refresh(), "the refresh swapped the served state"
        return hits

    reader._search = search_then_delete
    table = reader.search_rows(target.vector, 3)
    assert table.column(kit.PK)[0].as_py() == target.pk
    assert table.column("name")[0].as_py() == target.name
    del reader._search
    assert target.pk not in reader.search_rows(target.vector, 3).column(kit.PK).to_pylist()


def test_refreshes_from_two_threads_never_move_the_reader_backwards(tmp_path, kit):
    """Thread A reads the directory, then thread B reads a newer one: B's state must end up served."""
    store, work = populate(tmp_path, kit, inserts=100)
    reader = IndexReader(tmp_path)
    store.append_segment(*work.batch(inserts=5))
    a_read, a_may_publish = threading.Event(), threading.Event()
    with_delta = reader._with_delta

    def slow_first(*args):
        state = with_delta(*args)
        if not a_read.is_set():
            a_read.set()
            a_may_publish.wait(10)
        return state

    reader._with_delta = slow_first
    a = threading.Thread(target=reader.refresh)
    a.start()
    assert a_read.wait(10)
    store.append_segment(*work.batch(inserts=5))
    b = threading.Thread(target=reader.refresh)
    b.start()
    b.join(0.5)  # without the lock B would publish the newer state now, and A overwrite it
    a_may_publish.set()
    a.join(10)
    b.join(10)
    assert reader.state.served_seq == work.last_seq
    assert reader_keys(reader) == set(work.model.rows)


def test_a_reader_keeps_answering_after_the_store_removes_its_files(tmp_path, kit):
    """I5: a reader that mapped snapshot S keeps serving S + its delta after S is deleted."""
    store, work = populate(tmp_path, kit, inserts=300)
    store.append_segment(*work.batch(inserts=20, updates=20, deletes=20))
    reader = IndexReader(tmp_path)
    rng = np.random.default_rng(6)
    queries = [kit.random_unit(rng, 16) for _ in range(10)]
    answers = [reader.search(q, 10) for q in queries]
    rows = [reader.rows(hits.keys) for hits in answers]
    old_dir = tmp_path / reader.manifest.snapshot.dir
    old_segments = commitlog.list_segments(tmp_path)
    old_keys = reader_keys(reader)

    for _ in range(2):  # the second snapshot drops the reader's one (only one previous is kept)
        store.append_segment(*work.batch(inserts=10, updates=10, deletes=10))
        store.take_snapshot()
    assert not old_dir.exists()
    assert not any(ref.path.exists() for ref in old_segments)

    for query, hits, table in zip(queries, answers, rows):
        again = reader.search(query, 10)
        np.testing.assert_array_equal(again.keys, hits.keys)
        np.testing.assert_array_equal(again.distances, hits.distances)
        assert reader.rows(again.keys).equals(table)
    assert reader_keys(reader) == old_keys

    assert reader.refresh() is True
    assert reader_keys(reader) == set(work.model.rows)


def test_an_empty_index_answers_nothing(tmp_path, kit):
    kit.new_store(tmp_path)
    reader = IndexReader(tmp_path)
    assert len(reader) == 0
    hits = reader.search(np.ones(8, np.float32), 10)
    assert len(hits.keys) == 0
    assert reader.search_rows(np.ones(8, np.float32), 10).num_rows == 0


def test_a_missing_index_is_not_built(tmp_path, kit):
    with pytest.raises(IndexNotBuiltError, match="materialize"):
        IndexReader(tmp_path / "nothing").refresh()
    populate(tmp_path, kit, inserts=5)
    reader = IndexReader(tmp_path)
    assert len(reader) == 5
    for path in sorted(tmp_path.rglob("*"), reverse=True):  # the directory is deleted to rebuild
        path.rmdir() if path.is_dir() else path.unlink()
    assert reader.refresh() is False, "a serving reader keeps its state while the directory is rebuilt"
    assert len(reader) == 5 and "MANIFEST.json is missing" in " ".join(reader.problems)


def test_a_damaged_segment_or_snapshot_is_not_served(tmp_path, kit):
    store, work = populate(tmp_path, kit, inserts=50)
    ref = store.append_segment(*work.batch(inserts=30))
    raw = ref.path.read_bytes()
    ref.path.write_bytes(raw[: len(raw) // 2])
    reader = IndexReader(tmp_path)
    assert len(reader) == 50 and reader.served_seq == 50, "served up to the damaged segment, not past it"
    assert str(ref.path) in " ".join(reader.problems)
    ref.path.write_bytes(raw)
    entry = IndexReader(tmp_path).manifest.snapshot
    with open(tmp_path / entry.dir / snapshot.INDEX_FILE, "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(CorruptFileError):
        IndexReader(tmp_path).refresh()
