"""The writer side of one index directory.

    <root>/MANIFEST.json           manifest.py
    <root>/log/<first>-<last>.parquet   commitlog.py
    <root>/snapshots/<seq>/        snapshot.py
    <root>/.writer.lock            advisory lock: one writer at a time per directory

Opening removes temp leftovers of a crash and checks the caller's identity against the manifest
(I6). ``append_segment`` adds changes after the log's last seq; ``take_snapshot`` folds the
segments after the snapshot into a new one, publishes it through the manifest, and only then
removes what it covers, keeping one previous snapshot and the segments after it for fallback (I7;
with ``keep_previous=False``, only the snapshot and the segments after it).

Damage (a file that fails its checks, a missing segment) is found by ``recover``, which repairs
what the directory alone can repair: a damaged snapshot is replaced by the previous one plus the
segments after it (exact, no DuckDB needed); a damaged or missing segment ends the log there, and
the segments from it on are removed so that the next sync re-derives them from DuckDB's change
records (I1). What it cannot repair (a damaged manifest, a damaged snapshot without a usable
previous one) it reports as ``needs_rebuild``; ``reset`` then moves the directory aside (never
deleting the evidence) for a rebuild from DuckDB.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from quiver.resources.faults import kill_point
from quiver.resources.files import fsync_dir, remove_path, remove_temp_files
from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.errors import CorruptFileError, IndexBusyError, SequenceError, SnapshotUnrecoverableError
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.manifest import Manifest, SnapshotEntry, manifest_path, publish_manifest, read_manifest
from quiver.resources.index.text_index import TextConfig

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
TEXT_REWRITE_FRACTION = 0.5  # changes above this share of the rows: the text index is written whole
DAMAGED = "damaged"  # reset() reasons: kept for inspection ...
REPLACED = "replaced"  # ... or removed once the rebuilt log is published


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
    segment_records: int | None  # change records in them (Parquet footers); None if a footer is unreadable
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


@dataclass(frozen=True)
class Recovery:
    """What ``IndexStore.recover`` found and did."""

    problems: tuple[str, ...] = ()
    demoted_snapshot: int | None = None  # seq of a damaged snapshot replaced by the previous one
    truncated_from: int | None = None  # first seq of the log run removed to be re-derived from DuckDB
    segments_removed: int = 0
    needs_rebuild: bool = False  # only a rebuild from DuckDB can restore the directory


def read_stats(root: Path, now: float | None = None) -> LogStats:
    """Log and snapshot statistics from the manifest, a directory listing and the segments' footers."""
    for _ in range(3):
        manifest = read_manifest(root)
        after = [ref for ref in commitlog.list_segments(root) if ref.last > manifest.snapshot_seq]
        try:
            records = commitlog.count_records(after)
        except FileNotFoundError:  # a snapshot folded and removed them meanwhile: read the new manifest
            continue
        break
    else:
        raise CorruptFileError(f"the log at {root} kept changing under read_stats; try again")
    return stats_of(manifest, after, records, sum(len(names) for _, _, names in os.walk(root)), now)


def stats_of(
    manifest: Manifest, after: list[commitlog.SegmentRef], records: int | None, files: int, now: float | None = None
) -> LogStats:
    """``LogStats`` of a manifest and the segments after its snapshot (on a disk or on a bucket)."""
    entry = manifest.snapshot
    age = None
    if entry is not None:
        created = datetime.fromisoformat(entry.created_at).timestamp()
        age = max(0.0, (now if now is not None else time.time()) - created)
    return LogStats(
        snapshot_seq=manifest.snapshot_seq,
        snapshot_bytes=entry.total_bytes if entry else 0,
        snapshot_vectors=entry.vectors if entry else 0,
        snapshot_tombstones=entry.tombstones if entry else 0,
        snapshot_age_seconds=age,
        segments=len(after),
        segment_bytes=sum(ref.bytes for ref in after),
        segment_records=records,
        last_seq=max([manifest.snapshot_seq, *(ref.last for ref in after)]),
        files=files,
    )


class IndexStore:
    """Writes one index directory. Cheap to construct; every write takes the directory lock."""

    def __init__(
        self,
        root: Path,
        dataset: str,
        identity: IndexIdentity,
        params: HnswParams,
        primary_key: str,
        keep_previous: bool = True,
        text: TextConfig | None = None,
        unique_snapshot_dirs: bool = False,
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.identity = identity
        self.params = params
        self.primary_key = primary_key
        # Keep the previous snapshot and the segments after it, so that a damaged snapshot is
        # served around with no DuckDB (a second copy of the vectors). Without it, the directory
        # holds one snapshot and the segments after it, and a damaged snapshot is rebuilt from DuckDB.
        self.keep_previous = keep_previous
        # The full-text index each snapshot writes (None: no text search). A change takes effect
        # with the next snapshot; until then readers keep the manifest's.
        self.text = text
        # Name each snapshot directory ``<seq>-<uuid>``: on object storage two writers may build the
        # same seq, and an upload never lands on a name another writer (or a killed one) used.
        self.unique_snapshot_dirs = unique_snapshot_dirs

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
            manifest = Manifest(
                self.dataset, self.identity, self.params, self.primary_key, text=self.text.to_dict() if self.text else None
            )
            publish_manifest(self.root, manifest)
            fsync_dir(self.root.parent)
            return manifest
        manifest = read_manifest(self.root)
        manifest.identity.require_same(self.identity, f"dataset {self.dataset!r} index at {self.root}")
        removed = self._remove_covered(manifest)  # finishes a cleanup a crash interrupted
        if removed:
            log.warning(
                "%s: removed %d files the manifest no longer needs (an interrupted cleanup)", self.dataset, removed
            )
        if manifest.hnsw != self.params:
            # HNSW knobs shape the graph, not the vectors: the next snapshot rebuilds with them.
            log.info("%s: HNSW parameters changed %s -> %s", self.dataset, manifest.hnsw, self.params)
        if manifest.text != (self.text.to_dict() if self.text else None):
            log.info("%s: full-text settings changed; the next snapshot writes the text index with them", self.dataset)
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

    # -- damage ------------------------------------------------------------------------------
    def recover(self) -> Recovery:
        """Find damaged files and repair what the directory alone can (see the module docstring).

        Checks the manifest, the published snapshot (sizes, checksums, usearch header) and every
        segment after it. Cost: one read of the snapshot and of the log after it.
        """
        with self._locked():
            try:
                manifest = self._open_locked()
            except CorruptFileError as error:
                return Recovery(problems=(str(error),), needs_rebuild=True)
            problems: list[str] = []
            demoted = None
            if manifest.snapshot is not None:
                try:
                    snapshot.check_snapshot(self.root, manifest.snapshot, self.identity)
                except CorruptFileError as error:
                    problems.append(str(error))
                    try:
                        demoted = manifest.snapshot_seq
                        manifest = self._demote_damaged_snapshot(manifest, error)
                        problems.append(
                            f"the previous snapshot (seq {manifest.snapshot_seq}) and the segments after it are current again"
                        )
                    except SnapshotUnrecoverableError as unrecoverable:
                        problems.append(str(unrecoverable))
                        return Recovery(problems=tuple(problems), needs_rebuild=True)
            refs = commitlog.list_segments(self.root)
            _, chain = commitlog.read_chain(refs, manifest.snapshot_seq, self.identity)
            truncated_from, removed = None, 0
            if chain.problem is not None:
                truncated_from = chain.broken_at
                doomed = [ref for ref in refs if ref.last >= truncated_from]
                for ref in doomed:
                    remove_path(ref.path)
                fsync_dir(self.root / commitlog.LOG_DIR)
                removed = len(doomed)
                problems += [
                    chain.problem,
                    f"removed {removed} segments from seq {truncated_from} on; the next sync re-derives them from DuckDB",
                ]
            for problem in problems:
                log.error("%s: %s", self.dataset, problem)
            return Recovery(tuple(problems), demoted, truncated_from, removed)

    def _demote_damaged_snapshot(self, manifest: Manifest, error: CorruptFileError) -> Manifest:
        """Publish the previous snapshot as current when it and the segments after it are sound."""
        previous = manifest.previous_snapshot
        if previous is None:
            raise SnapshotUnrecoverableError(
                f"dataset {self.dataset!r}: the snapshot at seq {manifest.snapshot_seq} is damaged ({error}) and "
                "there is no previous snapshot to fall back on; rebuild the index from DuckDB"
            ) from error
        try:
            snapshot.check_snapshot(self.root, previous, self.identity)
            _, chain = commitlog.read_chain(commitlog.list_segments(self.root), previous.seq, self.identity)
        except CorruptFileError as second:
            raise SnapshotUnrecoverableError(
                f"dataset {self.dataset!r}: both the snapshot at seq {manifest.snapshot_seq} and the previous one "
                f"are damaged ({second}); rebuild the index from DuckDB"
            ) from error
        if (chain.last or previous.seq) < manifest.snapshot_seq:
            raise SnapshotUnrecoverableError(
                f"dataset {self.dataset!r}: the snapshot at seq {manifest.snapshot_seq} is damaged and the segments "
                f"after the previous snapshot do not reach it ({chain.problem}); rebuild the index from DuckDB"
            ) from error
        demoted = manifest.demoted()
        publish_manifest(self.root, demoted)
        remove_path(self.root / manifest.snapshot.dir)
        log.error(
            "%s: snapshot %s is damaged; the previous snapshot is current again", self.dataset, manifest.snapshot.dir
        )
        return demoted

    def reset(self, reason: str = DAMAGED) -> Path:
        """Move the whole directory aside (``<root>.<reason>-<time>-<pid>``, one rename under the
        writer lock) and start an empty one, for a rebuild from DuckDB. Readers that mapped its
        files keep serving them until they reopen (I5)."""
        with self._locked():
            aside = self.root.with_name(f"{self.root.name}.{reason}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            os.replace(self.root, aside)
            fsync_dir(self.root.parent)
        log.warning("%s: moved the index directory to %s; rebuilding it from DuckDB", self.dataset, aside)
        self.open()
        return aside

    def set_aside(self, reason: str) -> list[Path]:
        """Directories ``reset`` moved aside for ``reason``."""
        return sorted(self.root.parent.glob(f"{self.root.name}.{reason}-*"))

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
            data = None
            if manifest.snapshot is not None:
                try:
                    data = snapshot.open_snapshot(self.root, manifest.snapshot, self.identity, view=False)
                except CorruptFileError as error:
                    manifest = self._demote_damaged_snapshot(manifest, error)
                    if manifest.snapshot is not None:
                        data = snapshot.open_snapshot(self.root, manifest.snapshot, self.identity, view=False)
            base_seq = manifest.snapshot_seq
            records, chain = commitlog.read_chain(commitlog.list_segments(self.root), base_seq, self.identity)
            if chain.problem is not None:
                raise CorruptFileError(
                    f"dataset {self.dataset!r}: {chain.problem}; materialize {self.dataset}/index first, "
                    "which re-derives the log from DuckDB"
                )
            refs = chain.refs
            if not refs:
                return None
            folded = commitlog.fold(records, ordered=False)  # apply_changes orders the rows itself
            del records  # the log as read: as large as the vectors it holds, and folded now
            if data is None:
                data = snapshot.empty_snapshot(self.identity, self.params)
            data = snapshot.apply_changes(data, folded, self.identity)
            folded = folded.select([commitlog.KEY])  # its keys are all that is used from here on
            tombstone_percent = 100.0 * data.tombstones / max(1, data.vectors)
            rebuilt = tombstone_percent > rebuild_tombstone_percent or manifest.hnsw != self.params
            if rebuilt:
                log.info("%s: rebuilding the graph (%.1f%% tombstones)", self.dataset, tombstone_percent)
                data = snapshot.rebuild(data, self.identity, self.params)
            seq = refs[-1].last
            # A directory for ``seq`` that the manifest does not name (its seq is above the
            # manifest's) is left by a crash before the manifest's publish: never served, replace it.
            dirname = snapshot.snapshot_dirname(seq, uuid.uuid4().hex[:12] if self.unique_snapshot_dirs else None)
            remove_path(self.root / dirname)
            entry = snapshot.write_snapshot(
                self.root, seq, data, self.text, self._text_base(manifest, folded, rebuilt, data), dirname
            )
            kill_point("snapshot.before_manifest")
            new_manifest = manifest.with_snapshot(entry, previous=manifest.snapshot if self.keep_previous else None)
            if manifest.hnsw != self.params:
                new_manifest = replace(new_manifest, hnsw=self.params)
            publish_manifest(self.root, new_manifest)
            kill_point("snapshot.before_cleanup")
            removed = self._remove_covered(new_manifest)
            return SnapshotResult(
                entry=entry,
                segments_folded=len(refs),
                segment_bytes_folded=sum(ref.bytes for ref in refs),
                changes_applied=folded.num_rows,
                rebuilt=rebuilt,
                removed_files=removed,
            )

    def _text_base(self, manifest: Manifest, folded: pa.Table, rebuilt: bool, data) -> snapshot.TextBase | None:
        """Update the current snapshot's text index (the cost of the change) when it was written with
        the same settings; write it whole when there is none, when the graph is rebuilt (that also
        drops the deleted documents tantivy keeps until it merges), or when most rows changed."""
        base = manifest.snapshot
        if self.text is None or base is None or base.text != self.text.to_dict() or rebuilt:
            return None
        if folded.num_rows > TEXT_REWRITE_FRACTION * max(1, data.vectors):
            return None
        return snapshot.TextBase(self.root / base.dir / snapshot.TEXT_DIR, folded.column(commitlog.KEY).to_numpy())

    def _remove_covered(self, manifest: Manifest) -> int:
        """After publishing: drop what neither the snapshot nor its fallback needs (I7).

        Kept: the two named snapshots, and the run of segments after the previous one (the
        fallback replays them; for a first snapshot, the log from its start). Without
        ``keep_previous``: the snapshot and the segments after it. Readers that mapped a removed
        file keep their mapping; they switch at their next refresh.
        """
        refs = commitlog.list_segments(self.root)
        if manifest.previous_snapshot is not None:
            fallback_from = manifest.previous_snapshot.seq
        else:
            fallback_from = 0 if self.keep_previous else manifest.snapshot_seq
        keep_segments = {ref.name for ref in commitlog.chain_after(refs, fallback_from).refs}
        keep_segments |= {ref.name for ref in refs if ref.last > manifest.snapshot_seq}
        keep_dirs = {entry.dir for entry in (manifest.snapshot, manifest.previous_snapshot) if entry}
        snapshots_dir = self.root / snapshot.SNAPSHOTS_DIR
        doomed = [ref.path for ref in refs if ref.name not in keep_segments]
        doomed += [
            path
            for path in (snapshots_dir.iterdir() if snapshots_dir.exists() else ())
            if f"{snapshot.SNAPSHOTS_DIR}/{path.name}" not in keep_dirs
        ]
        for removed, path in enumerate(doomed, start=1):
            remove_path(path)
            if removed == 1:
                kill_point("snapshot.mid_cleanup")
        removed = len(doomed)
        for directory in (self.root / commitlog.LOG_DIR, snapshots_dir):
            if directory.exists():
                fsync_dir(directory)
        return removed
