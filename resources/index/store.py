"""The writer side of one index directory.

    <root>/MANIFEST.json           manifest.py
    <root>/log/<first>-<last>.parquet   commitlog.py
    <root>/snapshots/<seq>/        snapshot.py
    <root>/.writer.lock            advisory lock: one writer at a time per directory

Opening removes temp leftovers of a crash and checks the caller's identity against the manifest
(I6). ``append_segment`` adds changes after the log's last seq; ``take_snapshot`` folds the
segments after the snapshot into a new one, publishes it through the manifest, and only then
removes what it covers, keeping one previous snapshot for fallback (I7).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from resources.index import commitlog, snapshot
from resources.index.errors import IndexBusyError, SequenceError
from resources.index.files import fsync_dir, remove_path, remove_temp_files
from resources.index.identity import HnswParams, IndexIdentity
from resources.index.manifest import Manifest, SnapshotEntry, manifest_path, publish_manifest, read_manifest

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"


@dataclass(frozen=True)
class LogStats:
    """What the snapshot policy and ``status`` need, read without touching any vector."""

    snapshot_seq: int
    snapshot_bytes: int
    snapshot_vectors: int
    snapshot_tombstones: int
    snapshot_age_seconds: float | None  # None when there is no snapshot yet
    segments: int  # published segments after the snapshot
    segment_bytes: int
    last_seq: int  # the log's last seq (the snapshot's when no segment follows it)
    files: int  # every file under the index directory

    @property
    def delta_percent(self) -> float:
        """Bytes of the segments after the snapshot as a percentage of the snapshot's bytes."""
        if self.snapshot_bytes == 0:
            return float("inf") if self.segment_bytes else 0.0
        return 100.0 * self.segment_bytes / self.snapshot_bytes


@dataclass(frozen=True)
class SnapshotResult:
    entry: SnapshotEntry
    segments_folded: int
    segment_bytes_folded: int
    changes_applied: int
    rebuilt: bool
    removed_files: int


def read_stats(root: Path, now: float | None = None) -> LogStats:
    """Log and snapshot statistics from the manifest and a directory listing only."""
    manifest = read_manifest(root)
    entry = manifest.snapshot
    after = [ref for ref in commitlog.list_segments(root) if ref.last > manifest.snapshot_seq]
    age = None
    if entry is not None:
        created = datetime.fromisoformat(entry.created_at).timestamp()
        age = max(0.0, (now if now is not None else time.time()) - created)
    files = sum(len(names) for _, _, names in os.walk(root))
    return LogStats(
        snapshot_seq=manifest.snapshot_seq,
        snapshot_bytes=entry.total_bytes if entry else 0,
        snapshot_vectors=entry.vectors if entry else 0,
        snapshot_tombstones=entry.tombstones if entry else 0,
        snapshot_age_seconds=age,
        segments=len(after),
        segment_bytes=sum(ref.bytes for ref in after),
        last_seq=max([manifest.snapshot_seq, *(ref.last for ref in after)]),
        files=files,
    )


class IndexStore:
    """Writes one index directory. Cheap to construct; every write takes the directory lock."""

    def __init__(self, root: Path, dataset: str, identity: IndexIdentity, params: HnswParams, primary_key: str):
        self.root = Path(root)
        self.dataset = dataset
        self.identity = identity
        self.params = params
        self.primary_key = primary_key

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> Manifest:
        """Create the directory on first use, clean crash leftovers, check identity (I6)."""
        with self._locked():
            return self._open_locked()

    def _open_locked(self) -> Manifest:
        self.root.mkdir(parents=True, exist_ok=True)
        for path in remove_temp_files(self.root):
            log.warning("%s: removed temp file left by an interrupted write: %s", self.dataset, path)
        if not manifest_path(self.root).exists():
            manifest = Manifest(self.dataset, self.identity, self.params, self.primary_key)
            publish_manifest(self.root, manifest)
            fsync_dir(self.root.parent)
            return manifest
        manifest = read_manifest(self.root)
        manifest.identity.require_same(self.identity, f"dataset {self.dataset!r} index at {self.root}")
        if manifest.hnsw != self.params:
            # HNSW knobs shape the graph, not the vectors: the next snapshot rebuilds with them.
            log.info("%s: HNSW parameters changed %s -> %s", self.dataset, manifest.hnsw, self.params)
        return manifest

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_NAME, "a+") as handle:
            deadline = time.monotonic() + 60
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise IndexBusyError(
                            f"{self.root} is locked by another writer for over 60 s; "
                            "wait for that run to finish (only one writer may change an index)"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- the log -----------------------------------------------------------------------------
    def last_seq(self) -> int:
        """The highest seq the index directory holds (segments or snapshot)."""
        manifest = read_manifest(self.root)
        return max([manifest.snapshot_seq, *(ref.last for ref in commitlog.list_segments(self.root))])

    def append_segment(self, changes: pa.Table, first: int, last: int) -> commitlog.SegmentRef:
        """Publish changes [first, last]; ``first`` must follow the log's last seq."""
        with self._locked():
            self._open_locked()
            expected = self.last_seq() + 1
            if first != expected:
                raise SequenceError(
                    f"dataset {self.dataset!r}: segment starts at seq {first} but the log ends at "
                    f"{expected - 1}; read the changes after {expected - 1} again"
                )
            return commitlog.write_segment(self.root, changes, first, last, self.identity)

    # -- snapshots ---------------------------------------------------------------------------
    def take_snapshot(self, rebuild_tombstone_percent: float = 20.0) -> SnapshotResult | None:
        """Fold the segments after the snapshot into a new published snapshot; None if none."""
        with self._locked():
            manifest = self._open_locked()
            base_seq = manifest.snapshot_seq
            refs = [ref for ref in commitlog.list_segments(self.root) if ref.last > base_seq]
            if not refs:
                return None
            folded = commitlog.fold(commitlog.read_segments(refs, self.identity))
            if manifest.snapshot is not None:
                data = snapshot.open_snapshot(self.root, manifest.snapshot, self.identity, view=False)
            else:
                data = snapshot.empty_snapshot(self.identity, self.params)
            data = snapshot.apply_changes(data, folded, self.identity)
            tombstone_percent = 100.0 * data.tombstones / max(1, data.vectors)
            rebuilt = tombstone_percent > rebuild_tombstone_percent or manifest.hnsw != self.params
            if rebuilt:
                log.info("%s: rebuilding the graph (%.1f%% tombstones)", self.dataset, tombstone_percent)
                data = snapshot.rebuild(data, self.identity, self.params)
            seq = refs[-1].last
            # A directory for ``seq`` that the manifest does not name (its seq is above the
            # manifest's) is left by a crash before the manifest's publish: never served, replace it.
            remove_path(self.root / snapshot.snapshot_dirname(seq))
            entry = snapshot.write_snapshot(self.root, seq, data)
            new_manifest = manifest.with_snapshot(entry)
            if manifest.hnsw != self.params:
                new_manifest = replace(new_manifest, hnsw=self.params)
            publish_manifest(self.root, new_manifest)
            removed = self._remove_covered(new_manifest)
            return SnapshotResult(
                entry=entry,
                segments_folded=len(refs),
                segment_bytes_folded=sum(ref.bytes for ref in refs),
                changes_applied=folded.num_rows,
                rebuilt=rebuilt,
                removed_files=removed,
            )

    def _remove_covered(self, manifest: Manifest) -> int:
        """After publishing: drop segments the snapshot covers and snapshots no longer named (I7).

        Readers that mapped a removed file keep their mapping; they switch at their next refresh.
        """
        removed = 0
        for ref in commitlog.list_segments(self.root):
            if ref.last <= manifest.snapshot_seq:
                remove_path(ref.path)
                removed += 1
        keep = {entry.dir for entry in (manifest.snapshot, manifest.previous_snapshot) if entry}
        snapshots_dir = self.root / snapshot.SNAPSHOTS_DIR
        for path in snapshots_dir.iterdir() if snapshots_dir.exists() else ():
            if f"{snapshot.SNAPSHOTS_DIR}/{path.name}" not in keep:
                remove_path(path)
                removed += 1
        for directory in (self.root / commitlog.LOG_DIR, snapshots_dir):
            if directory.exists():
                fsync_dir(directory)
        return removed
