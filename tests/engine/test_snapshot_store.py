"""store.py and snapshot.py: the writer side of an index directory, checked against the model.

I2 (snapshot + later segments == the model), I3 (temp leftovers go on open), I4 (published files
are checksummed and never rewritten), I6 (identity) and I7 (bounded files).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from quiver.resources.files import TEMP_MARKER
from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.errors import CorruptFileError, IdentityMismatchError, SequenceError
from quiver.resources.index.identity import HnswParams
from quiver.resources.index.manifest import manifest_path, read_manifest
from quiver.resources.index.store import IndexStore, read_stats

# MANIFEST.json, .writer.lock, and two snapshot directories of two files each
STEADY_STATE_FILES = 6


def test_open_creates_the_manifest(tmp_path, kit):
    root = tmp_path / "home" / "products"
    identity = kit.make_identity(dim=12, metric="l2", dtype="f16")
    store = IndexStore(root, "products", identity, kit.FAST_PARAMS, kit.PK)

    manifest = store.open()

    on_disk = read_manifest(root)
    assert on_disk == manifest
    assert (on_disk.dataset, on_disk.identity, on_disk.hnsw, on_disk.primary_key) == (
        "products",
        identity,
        kit.FAST_PARAMS,
        kit.PK,
    )
    assert on_disk.snapshot is None and on_disk.previous_snapshot is None
    assert store.last_seq() == 0
    raw = manifest_path(root).read_bytes()
    assert store.open() == manifest, "a second open reads, it does not recreate"
    assert manifest_path(root).read_bytes() == raw


def test_append_segment_starts_at_one_and_follows_the_log(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(0, store.identity.dim)
    table, first, last = work.batch(inserts=10)
    with pytest.raises(SequenceError, match="starts at seq 2"):
        store.append_segment(table.slice(1), 2, last)
    ref = store.append_segment(table, first, last)
    assert (ref.first, ref.last) == (1, 10)
    assert store.last_seq() == 10


@pytest.mark.parametrize(("first", "last"), [(1, 10), (10, 12), (5, 20), (12, 15), (100, 120)])
def test_append_segment_refuses_a_gap_or_an_overlap(tmp_path, kit, first, last):
    store = kit.new_store(tmp_path)
    work = kit.Workload(1, store.identity.dim)
    store.append_segment(*work.batch(inserts=10))
    before = commitlog.list_segments(tmp_path)
    table = kit.changes_table(
        [
            kit.Record(seq, "upsert", kit.key_of(seq), seq, np.ones(8, np.float32), "x")
            for seq in range(first, last + 1)
        ],
        8,
    )

    with pytest.raises(SequenceError, match="the log ends at 10"):
        store.append_segment(table, first, last)

    assert commitlog.list_segments(tmp_path) == before
    assert store.last_seq() == 10


def test_append_after_a_snapshot_follows_the_snapshot_seq(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(2, store.identity.dim)
    store.append_segment(*work.batch(inserts=10))
    store.take_snapshot()
    kept = commitlog.list_segments(tmp_path)
    assert [(ref.first, ref.last) for ref in kept] == [(1, 10)], "kept for the fallback until the next snapshot"
    assert store.last_seq() == 10 and read_stats(tmp_path).segments == 0
    with pytest.raises(SequenceError):
        store.append_segment(*work.batch(inserts=0, updates=1)[:1], 10, 11)
    work.last_seq = 10
    store.append_segment(*work.batch(updates=2))
    assert store.last_seq() == 12


def test_take_snapshot_without_segments_returns_none(tmp_path, kit):
    store = kit.new_store(tmp_path)
    assert store.take_snapshot() is None
    assert read_manifest(tmp_path).snapshot is None
    work = kit.Workload(3, store.identity.dim)
    store.append_segment(*work.batch(inserts=5))
    assert store.take_snapshot() is not None
    files = kit.files_under(tmp_path)
    manifest = manifest_path(tmp_path).read_bytes()
    assert store.take_snapshot() is None
    assert kit.files_under(tmp_path) == files and manifest_path(tmp_path).read_bytes() == manifest


@pytest.mark.parametrize("seed", [0, 1])
def test_files_stay_bounded_over_many_cycles(tmp_path, kit, seed):
    """I7: one snapshot, at most one previous, the segments after each, nothing else."""
    store = kit.new_store(tmp_path)
    work = kit.Workload(seed, store.identity.dim)
    rng = np.random.default_rng(seed)
    previous_entry = None
    kept_segments = 0
    for cycle in range(10):
        segments = int(rng.integers(1, 4))
        for _ in range(segments):
            live = len(work.model.rows)
            store.append_segment(*work.batch(inserts=15, updates=min(5, live), deletes=min(4, max(0, live - 5))))
        assert read_stats(tmp_path).files <= STEADY_STATE_FILES + kept_segments + segments

        result = store.take_snapshot()

        manifest = read_manifest(tmp_path)
        assert result.entry == manifest.snapshot and result.entry.seq == work.last_seq
        assert manifest.previous_snapshot == previous_entry
        assert result.segments_folded == segments
        fallback_from = previous_entry.seq if previous_entry else 0
        assert all(ref.first > fallback_from for ref in commitlog.list_segments(tmp_path)), (
            "segments the previous snapshot covers are removed"
        )
        assert len(commitlog.list_segments(tmp_path)) == segments, "the run after the previous snapshot is kept"
        kept = sorted(p.name for p in (tmp_path / snapshot.SNAPSHOTS_DIR).iterdir())
        expected = [entry.dir.split("/")[1] for entry in (previous_entry, result.entry) if entry]
        assert kept == expected
        files = kit.files_under(tmp_path)
        assert len(files) <= STEADY_STATE_FILES + segments, files
        kept_segments = segments
        assert read_stats(tmp_path).files == len(files)
        if cycle % 3 == 0:
            kit.assert_state_matches(kit.read_state(tmp_path), work.model)
        previous_entry = result.entry


def test_without_keep_previous_one_snapshot_and_the_segments_after_it_remain(tmp_path, kit):
    """keep_previous=False: no fallback copy; the directory is the snapshot plus the log after it,
    and a damaged snapshot can only be rebuilt from DuckDB (recover says so)."""
    store = IndexStore(tmp_path, "products", kit.make_identity(), kit.FAST_PARAMS, kit.PK, keep_previous=False)
    store.open()
    work = kit.Workload(3, store.identity.dim)
    for cycle in range(4):
        for _ in range(2):
            live = len(work.model.rows)
            store.append_segment(*work.batch(inserts=15, updates=min(5, live), deletes=min(4, max(0, live - 5))))
        result = store.take_snapshot()
        manifest = read_manifest(tmp_path)
        assert manifest.previous_snapshot is None
        assert [p.name for p in (tmp_path / snapshot.SNAPSHOTS_DIR).iterdir()] == [result.entry.dir.split("/")[1]]
        assert commitlog.list_segments(tmp_path) == [], "every segment is covered by the one snapshot"
        kit.assert_state_matches(kit.read_state(tmp_path), work.model)
    store.append_segment(*work.batch(inserts=3, updates=0, deletes=0))
    assert len(commitlog.list_segments(tmp_path)) == 1  # the log after the snapshot stays

    path = tmp_path / read_manifest(tmp_path).snapshot.dir / snapshot.INDEX_FILE
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    recovery = store.recover()
    assert recovery.needs_rebuild and "no previous snapshot" in " ".join(recovery.problems)


@pytest.mark.parametrize(
    ("metric", "dtype", "atol"),
    [
        ("cosine", "f32", 0.0),
        ("l2", "f32", 0.0),
        ("inner_product", "f32", 0.0),
        ("cosine", "f16", 1e-3),
        ("l2", "bf16", 1e-2),
        ("cosine", "i8", 1e-2),
    ],
)
def test_snapshot_plus_segments_reproduce_the_model(tmp_path, kit, metric, dtype, atol):
    """I2 after inserts, updates, deletes, re-inserts, with and without segments after the snapshot."""
    identity = kit.make_identity(dim=16, metric=metric, dtype=dtype)
    work = kit.Workload(11, identity.dim)
    store = kit.new_store(tmp_path, identity)
    plan = [
        ("segment", 120, 0, 0),
        ("segment", 30, 20, 10),
        ("check",),
        ("snapshot",),
        ("check",),
        ("segment", 10, 40, 30),
        ("check",),
        ("segment", 0, 10, 60),
        ("reopen",),
        ("check",),
        ("snapshot",),
        ("check",),
        ("segment", 50, 5, 5),
        ("snapshot",),
        ("segment", 1, 1, 1),
        ("check",),
    ]
    for step in plan:
        if step[0] == "segment":
            store.append_segment(*work.batch(*step[1:]))
        elif step[0] == "snapshot":
            result = store.take_snapshot()
            assert result.entry.vectors == len(work.model.rows)
            snapshot.verify_snapshot(tmp_path, result.entry)
        elif step[0] == "reopen":
            store = kit.new_store(tmp_path, identity)
        else:
            kit.assert_state_matches(kit.read_state(tmp_path), work.model, atol=atol)


def test_a_snapshot_of_a_fully_deleted_index(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(12, store.identity.dim)
    store.append_segment(*work.batch(inserts=20))
    store.take_snapshot()
    store.append_segment(*work.batch(deletes=20))
    result = store.take_snapshot()
    assert result.entry.vectors == 0 and work.model.rows == {}
    assert kit.read_state(tmp_path) == {}
    store.append_segment(*work.batch(inserts=3))
    store.take_snapshot()
    kit.assert_state_matches(kit.read_state(tmp_path), work.model)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dim", 16),
        ("metric", "l2"),
        ("metric", "inner_product"),
        ("dtype", "f16"),
        ("dtype", "i8"),
        ("model", "bge-small"),
    ],
)
def test_reopening_with_another_identity_is_refused(tmp_path, kit, field, value):
    """I6: the error names both sides and the fix; nothing on disk changes."""
    identity = kit.make_identity()
    store = kit.new_store(tmp_path, identity)
    work = kit.Workload(4, identity.dim)
    store.append_segment(*work.batch(inserts=5))
    files = {path: path.read_bytes() for path in kit.files_under(tmp_path)}
    other = kit.make_identity(**{**identity.to_dict(), field: value})
    stranger = IndexStore(tmp_path, "products", other, kit.FAST_PARAMS, kit.PK)

    for attempt in (stranger.open, stranger.take_snapshot, lambda: stranger.append_segment(*work.batch(inserts=1))):
        with pytest.raises(IdentityMismatchError) as caught:
            attempt()
        message = str(caught.value)
        assert f"{field}: index has {getattr(identity, field)!r}, got {value!r}" in message
        assert "rebuild" in message and str(tmp_path) in message

    assert {path: path.read_bytes() for path in kit.files_under(tmp_path)} == files


def test_changed_hnsw_params_rebuild_at_the_next_snapshot(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(5, store.identity.dim)
    store.append_segment(*work.batch(inserts=50))
    assert store.take_snapshot().rebuilt is False
    params = HnswParams(m=8, ef_construction=32, ef_search=100)
    store = kit.new_store(tmp_path, params=params)
    store.append_segment(*work.batch(updates=1))
    result = store.take_snapshot()
    assert result.rebuilt is True
    assert read_manifest(tmp_path).hnsw == params
    kit.assert_state_matches(kit.read_state(tmp_path), work.model)


def test_open_removes_temp_leftovers(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(6, store.identity.dim)
    store.append_segment(*work.batch(inserts=30))
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=5, updates=5))
    published = kit.files_under(tmp_path)
    leftovers = [
        tmp_path / "log" / f"{TEMP_MARKER}abc-{commitlog.segment_name(36, 40)}",
        tmp_path / "snapshots" / f"{TEMP_MARKER}def-{40:020d}" / snapshot.INDEX_FILE,
        tmp_path / "snapshots" / f"{TEMP_MARKER}ghi-{40:020d}" / snapshot.ROWS_FILE,
        tmp_path / f"{TEMP_MARKER}jkl-MANIFEST.json",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")

    kit.new_store(tmp_path)

    assert kit.files_under(tmp_path) == published
    assert not any(TEMP_MARKER in str(path) for path in tmp_path.rglob("*"))
    kit.assert_state_matches(kit.read_state(tmp_path), work.model)


def test_an_unpublished_snapshot_directory_does_not_block_the_next_snapshot(tmp_path, kit):
    """A crash after the snapshot directory's rename but before the manifest's leaves a directory
    no manifest names; the next snapshot at that seq must replace it, not fail forever."""
    store = kit.new_store(tmp_path)
    work = kit.Workload(7, store.identity.dim)
    store.append_segment(*work.batch(inserts=30))
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=5, deletes=3))
    orphan = tmp_path / snapshot.snapshot_dirname(work.last_seq)
    orphan.mkdir(parents=True)
    (orphan / snapshot.INDEX_FILE).write_bytes(b"not what the manifest will name")

    result = kit.new_store(tmp_path).take_snapshot()

    assert result.entry.seq == work.last_seq
    snapshot.verify_snapshot(tmp_path, result.entry)
    kit.assert_state_matches(kit.read_state(tmp_path), work.model)


@pytest.mark.parametrize(
    ("deletes", "threshold", "rebuilt"),
    [(10, 20.0, False), (60, 20.0, True), (10, 5.0, True), (0, 0.0, False)],
)
def test_tombstones_above_the_bound_trigger_a_rebuild(tmp_path, kit, deletes, threshold, rebuilt):
    store = kit.new_store(tmp_path)
    work = kit.Workload(8, store.identity.dim)
    store.append_segment(*work.batch(inserts=200))
    first = store.take_snapshot(rebuild_tombstone_percent=threshold)
    assert first.rebuilt is False and first.entry.tombstones == 0
    store.append_segment(*work.batch(inserts=0 if deletes else 1, deletes=deletes))

    result = store.take_snapshot(rebuild_tombstone_percent=threshold)

    assert result.rebuilt is rebuilt
    assert result.entry.tombstones == (0 if rebuilt else deletes)
    assert result.entry.vectors == 200 - deletes + (0 if deletes else 1)
    meta = snapshot.open_snapshot(tmp_path, result.entry, store.identity, view=True)
    assert meta.tombstones == result.entry.tombstones
    kit.assert_state_matches(kit.read_state(tmp_path), work.model)


@pytest.fixture
def snapshotted(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(9, store.identity.dim)
    store.append_segment(*work.batch(inserts=300))
    return tmp_path, store.take_snapshot().entry, store


def test_snapshot_checksums_match_the_manifest(snapshotted):
    root, entry, _ = snapshotted
    assert set(entry.files) == {snapshot.INDEX_FILE, snapshot.ROWS_FILE}
    for name, file in entry.files.items():
        assert (root / entry.dir / name).stat().st_size == file.bytes
    snapshot.verify_snapshot(root, entry)
    assert json.loads(manifest_path(root).read_bytes())["snapshot"]["files"][snapshot.INDEX_FILE]["checksum"] == (
        entry.files[snapshot.INDEX_FILE].checksum
    )


@pytest.mark.parametrize("name", [snapshot.INDEX_FILE, snapshot.ROWS_FILE])
@pytest.mark.parametrize("where", [0.02, 0.5, 0.98])
def test_a_flipped_byte_fails_the_checksum(snapshotted, name, where):
    root, entry, _ = snapshotted
    path = root / entry.dir / name
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="fails its checksum"):
        snapshot.verify_snapshot(root, entry)


def test_a_missing_snapshot_file_fails_verification(snapshotted):
    root, entry, _ = snapshotted
    (root / entry.dir / snapshot.ROWS_FILE).unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        snapshot.verify_snapshot(root, entry)


@pytest.mark.parametrize("name", [snapshot.INDEX_FILE, snapshot.ROWS_FILE])
def test_a_snapshot_file_of_the_wrong_size_is_not_opened(snapshotted, name):
    root, entry, store = snapshotted
    with open(root / entry.dir / name, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CorruptFileError, match="not served"):
        snapshot.open_snapshot(root, entry, store.identity)


def test_a_header_that_disagrees_with_the_manifest_is_not_opened(snapshotted, kit):
    root, entry, store = snapshotted
    with pytest.raises(CorruptFileError, match="disagrees"):
        snapshot.open_snapshot(root, entry, kit.make_identity(dim=9))
    from dataclasses import replace

    with pytest.raises(CorruptFileError, match="vectors"):
        snapshot.open_snapshot(root, replace(entry, vectors=entry.vectors + 1), store.identity)


def test_read_stats_numbers(tmp_path, kit):
    store = kit.new_store(tmp_path)
    work = kit.Workload(10, store.identity.dim)

    empty = read_stats(tmp_path)
    assert (empty.segments, empty.segment_bytes, empty.last_seq, empty.snapshot_seq) == (0, 0, 0, 0)
    assert empty.delta_percent == 0.0 and empty.snapshot_age_seconds is None
    assert empty.files == len(kit.files_under(tmp_path))

    refs = [store.append_segment(*work.batch(inserts=n)) for n in (40, 25, 10)]
    before = read_stats(tmp_path)
    assert before.segments == 3
    assert before.segment_bytes == sum(ref.path.stat().st_size for ref in refs)
    assert before.last_seq == 75 and before.snapshot_seq == 0
    assert before.delta_percent == float("inf")
    assert before.files == len(kit.files_under(tmp_path))

    entry = store.take_snapshot().entry
    from datetime import datetime

    created = datetime.fromisoformat(entry.created_at).timestamp()
    after = read_stats(tmp_path, now=created + 12.5)
    assert (after.segments, after.segment_bytes, after.last_seq, after.snapshot_seq) == (0, 0, 75, 75)
    assert after.snapshot_bytes == sum(p.stat().st_size for p in (tmp_path / entry.dir).iterdir())
    assert (after.snapshot_vectors, after.snapshot_tombstones) == (75, 0)
    assert after.delta_percent == 0.0
    assert after.snapshot_age_seconds == pytest.approx(12.5, abs=1e-3)
    assert read_stats(tmp_path, now=created - 100).snapshot_age_seconds == 0.0

    more = [store.append_segment(*work.batch(inserts=5, updates=5, deletes=2)) for _ in range(2)]
    later = read_stats(tmp_path)
    assert later.segments == 2 and later.last_seq == 75 + 24
    assert later.segment_bytes == sum(ref.bytes for ref in more)
    assert later.delta_percent == pytest.approx(100.0 * later.segment_bytes / after.snapshot_bytes)
    assert later.files == len(kit.files_under(tmp_path))
