"""Damaged files: each is detected on open, reported with the file and what is wrong, recovered
where recovery is possible, and nothing committed is lost.

Every case starts from the same seeded history (scenario.prepare: a previous snapshot, a current
snapshot, a segment after it), damages one thing, then checks:
- detection: a reader opened afterwards names the damaged file in its problems (or refuses with
  an error naming it), and a reader that was already serving keeps serving the same answers;
- recovery: the next refresh (the index asset's sync) and snapshot, in a fresh process, repair the
  directory; the index then equals DuckDB, which equals the source (I1, I2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from quiver.resources.files import TEMP_MARKER, checksum_file
from quiver.resources.index import IndexReader, commitlog, snapshot
from quiver.resources.index.errors import CorruptFileError, UnsupportedFormatError
from quiver.resources.index.manifest import MANIFEST_NAME, manifest_path, read_manifest
from tests.crash import scenario
from tests.invariants import check_all_or_nothing, check_reader_serves, index_state, published_files


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def newest_segment(root: Path) -> commitlog.SegmentRef:
    return commitlog.list_segments(root)[-1]


def current_snapshot_dir(root: Path) -> Path:
    return root / read_manifest(root).snapshot.dir


# -- the damage, one function each: (root) -> the file a report must name ----------------------
def truncate_segment(root: Path) -> Path:
    ref = newest_segment(root)
    ref.path.write_bytes(ref.path.read_bytes()[: ref.bytes // 2])
    return ref.path


def flip_segment_byte(root: Path) -> Path:
    ref = newest_segment(root)
    flip_byte(ref.path, 0.3)
    return ref.path


def remove_middle_segment(root: Path) -> Path:
    """Two segments after the snapshot; the first of them disappears."""
    _append_one_more_segment(root)
    after = [ref for ref in commitlog.list_segments(root) if ref.first > read_manifest(root).snapshot_seq]
    after[0].path.unlink()
    return after[1].path  # the report names the segment that no longer continues the log


def flip_snapshot_index_byte(root: Path) -> Path:
    path = current_snapshot_dir(root) / snapshot.INDEX_FILE
    flip_byte(path, 0.6)
    return path


def flip_snapshot_rows_byte(root: Path) -> Path:
    path = current_snapshot_dir(root) / snapshot.ROWS_FILE
    flip_byte(path, 0.5)
    return path


def swap_snapshot_header(root: Path) -> Path:
    """The index file is replaced by the previous snapshot's (a valid usearch file), and the
    manifest's size and checksum are made to match it: only the header check can tell."""
    manifest = read_manifest(root)
    path = root / manifest.snapshot.dir / snapshot.INDEX_FILE
    path.write_bytes((root / manifest.previous_snapshot.dir / snapshot.INDEX_FILE).read_bytes())
    body = json.loads(manifest_path(root).read_bytes())
    body["snapshot"]["files"][snapshot.INDEX_FILE] = {"bytes": path.stat().st_size, "checksum": checksum_file(path)}
    manifest_path(root).write_text(json.dumps(body))
    return path


def remove_snapshot_file(root: Path) -> Path:
    path = current_snapshot_dir(root) / snapshot.ROWS_FILE
    path.unlink()
    return path


def garble_manifest(root: Path) -> Path:
    path = manifest_path(root)
    path.write_bytes(path.read_bytes()[:-40] + b"\x00garbage")
    return path


def damage_both_snapshots(root: Path) -> Path:
    manifest = read_manifest(root)
    flip_byte(root / manifest.previous_snapshot.dir / snapshot.INDEX_FILE)
    return flip_snapshot_index_byte(root)


def _append_one_more_segment(root: Path) -> None:
    work = root.parents[1]
    source = scenario.Source.load(work)
    source.step()
    source.write(work)
    scenario.refresh(work)


# (damage, a fresh reader serves anyway, what the fresh reader's report or error says)
SERVED_CASES = {
    "truncated segment": (truncate_segment, "is unreadable"),
    "segment with a flipped byte": (flip_segment_byte, "segment"),
    "missing segment in the middle": (remove_middle_segment, "is missing"),
    "snapshot index with a flipped byte": (flip_snapshot_index_byte, "fails its checksum"),
    "snapshot rows with a flipped byte": (flip_snapshot_rows_byte, "fails its checksum"),
    "snapshot header disagrees with the manifest": (swap_snapshot_header, "disagrees with the manifest"),
    "manifest names a missing file": (remove_snapshot_file, "is missing"),
}
REFUSED_CASES = {
    "damaged manifest": (garble_manifest, "is damaged"),
    "both snapshots damaged": (damage_both_snapshots, "fails its checksum"),
}


@pytest.fixture
def world(tmp_path):
    source = scenario.prepare(tmp_path, seed=7)
    root = scenario.index_root(tmp_path)
    return tmp_path, root, source


def recover_in_fresh_processes(work: Path) -> None:
    for step in ("refresh", "snapshot"):
        done = scenario.run_writer(step, work)
        assert done.returncode == 0, f"{step} did not recover: {done.stderr[-3000:]}"


@pytest.mark.parametrize("case", SERVED_CASES)
def test_damage_is_reported_served_around_and_repaired(world, case):
    work, root, source = world
    damage, report = SERVED_CASES[case]
    serving = IndexReader(root)
    probe = scenario.embed(["probe one", "probe two"])
    before = [serving.search(v, 10).keys.tolist() for v in probe]
    served_seq = serving.served_seq

    damaged = damage(root)
    source = scenario.Source.load(work)  # remove_middle_segment moves the source on

    fresh = IndexReader(root)
    problems = " ".join(fresh.problems)
    assert str(damaged) in problems and report in problems, problems
    assert fresh.served_seq >= read_manifest(root).snapshot_seq, "never older than the published snapshot"
    serving.refresh()
    assert serving.served_seq >= served_seq, "the served state only moves forward"
    if serving.served_seq == served_seq:
        assert [serving.search(v, 10).keys.tolist() for v in probe] == before

    recover_in_fresh_processes(work)
    scenario.assert_index_equals_source(work, source)
    healed = IndexReader(root)
    assert healed.problems == ()
    check_reader_serves(healed, scenario.duckdb_state(work))


@pytest.mark.parametrize("case", REFUSED_CASES)
def test_unservable_damage_is_refused_then_rebuilt_from_duckdb(world, case):
    work, root, source = world
    damage, report = REFUSED_CASES[case]
    serving = IndexReader(root)
    probe = scenario.embed(["probe"])[0]
    before = serving.search(probe, 10).keys.tolist()

    damaged = damage(root)

    with pytest.raises(CorruptFileError) as refused:
        IndexReader(root).refresh()
    assert str(damaged) in str(refused.value) and report in str(refused.value)
    assert serving.refresh() is False and serving.search(probe, 10).keys.tolist() == before
    if damaged.name == MANIFEST_NAME:  # damage to a file it already mapped shows only on its next open
        assert str(damaged) in " ".join(serving.problems), "a serving reader keeps serving and says why"

    recover_in_fresh_processes(work)
    aside = [p for p in root.parent.iterdir() if p.name.startswith(f"{root.name}.damaged-")]
    assert len(aside) == 1 and (aside[0] / MANIFEST_NAME).exists(), "the damaged directory is kept for inspection"
    scenario.assert_index_equals_source(work, source)
    serving.refresh()
    assert serving.problems == ()
    check_reader_serves(serving, scenario.duckdb_state(work))


def test_without_a_fallback_a_damaged_snapshot_is_refused_then_rebuilt_from_duckdb(tmp_path):
    """snapshots.keep_previous: false (the default) keeps no second copy: a damaged snapshot cannot
    be served around, so a new reader refuses it by name, a serving one keeps its mapped copy, and
    the next refresh rebuilds the directory from DuckDB with nothing committed lost."""
    source = scenario.prepare(tmp_path, seed=7, keep_previous=False)
    root = scenario.index_root(tmp_path)
    manifest = read_manifest(root)
    assert manifest.previous_snapshot is None
    assert [p.name for p in (root / snapshot.SNAPSHOTS_DIR).iterdir()] == [Path(manifest.snapshot.dir).name]
    serving = IndexReader(root)
    probe = scenario.embed(["probe"])[0]
    before = serving.search(probe, 10).keys.tolist()

    damaged = flip_snapshot_index_byte(root)

    with pytest.raises(CorruptFileError) as refused:
        IndexReader(root).refresh()
    assert str(damaged) in str(refused.value) and "no previous snapshot" in str(refused.value)
    assert serving.refresh() is False and serving.search(probe, 10).keys.tolist() == before

    recover_in_fresh_processes(tmp_path)
    scenario.assert_index_equals_source(tmp_path, source)
    serving.refresh()
    assert serving.problems == ()
    check_reader_serves(serving, scenario.duckdb_state(tmp_path))
    assert read_manifest(root).previous_snapshot is None


def test_leftover_temp_files_are_ignored_by_readers_and_removed_by_the_writer(world):
    work, root, source = world
    leftovers = [
        root / f"{TEMP_MARKER}0123-{MANIFEST_NAME}",  # a half-written manifest
        root / commitlog.LOG_DIR / f"{TEMP_MARKER}4567-{commitlog.segment_name(999, 1000)}",
        root / snapshot.SNAPSHOTS_DIR / f"{TEMP_MARKER}89ab-{999:020d}" / snapshot.INDEX_FILE,
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'{"format": "quiver-index", "format_ver')
    before = index_state(root)
    reader = IndexReader(root)
    assert reader.problems == () and len(reader) == len(before)

    recover_in_fresh_processes(work)
    check_all_or_nothing(root)
    scenario.assert_index_equals_source(work, source)


def test_a_directory_from_a_newer_format_is_refused_and_left_untouched(world):
    work, root, _source = world
    body = json.loads(manifest_path(root).read_bytes())
    body["format_version"] = 99
    manifest_path(root).write_text(json.dumps(body))
    files = published_files(root)

    with pytest.raises(UnsupportedFormatError, match="newer quiver"):
        IndexReader(root).refresh()
    done = scenario.run_writer("refresh", work)
    assert done.returncode != 0 and "UnsupportedFormatError" in done.stderr and "newer quiver" in done.stderr
    assert published_files(root) == files, "nothing was repaired, moved or removed"
    assert not any(p.name.startswith(f"{root.name}.damaged-") for p in root.parent.iterdir())


def test_a_checksum_failure_never_reaches_the_usearch_loader(world, monkeypatch):
    """usearch maps whatever it is given; a damaged file must be stopped before that."""
    from usearch.index import Index

    _work, root, _source = world
    damaged = flip_snapshot_index_byte(root)
    opened: list[str] = []
    real_restore = Index.restore

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_restore(path, *args, **kwargs)

    monkeypatch.setattr(Index, "restore", staticmethod(spy))
    reader = IndexReader(root)
    assert len(reader) > 0 and reader.problems
    assert str(damaged) not in opened and opened == [
        str(root / read_manifest(root).previous_snapshot.dir / snapshot.INDEX_FILE)
    ]


def test_a_fallback_serves_exactly_the_published_state(world):
    """previous snapshot + the segments after it == current snapshot + the segments after it."""
    _work, root, _source = world
    published = index_state(root)
    flip_snapshot_index_byte(root)
    reader = IndexReader(root)
    assert reader.served_seq == commitlog.list_segments(root)[-1].last
    check_reader_serves(reader, published)
    keys = np.array(sorted(published), dtype=np.uint64)
    assert reader.rows(keys, ["name"]).column("name").to_pylist() == [published[int(k)].columns["name"] for k in keys]


def test_reports_are_logged_by_the_writer_with_the_file(world, caplog):
    work, root, _source = world
    damaged = flip_segment_byte(root)
    with caplog.at_level("ERROR"):
        scenario.refresh(work)
    assert any(str(damaged) in record.getMessage() for record in caplog.records)
    assert os.path.exists(root / commitlog.LOG_DIR)
