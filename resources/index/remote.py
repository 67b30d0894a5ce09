"""An index directory published to object storage, ``s3://bucket/prefix/<dataset>``. No Dagster.

The engine reads and writes index directories on a local disk; this module keeps one in step with
the bucket. A writer works on a private local copy (``RemoteIndexStore``), a reader on a cache
(``RemoteMirror``); both are ordinary index directories, so the reader memory-maps its snapshot
from the cache, and every check of the local engine holds there.

Remote layout, under the dataset's URL:

    MANIFEST.json                  the local manifest's JSON plus ``"remote": {"publish_id": <uuid>,
                                   "segments": [{"name", "bytes"}, ...]}``: THE publish point. It names
                                   the snapshot (and its fallback) and every segment after it; a
                                   reader downloads exactly what it names and nothing else.
    snapshots/<seq>-<id>/<file>    the snapshot's files (and tantivy's empty lock files), under a
                                   directory name unique to the snapshot built (``IndexStore``'s
                                   ``unique_snapshot_dirs``), so no upload lands on a name another
                                   writer, or a killed one, used: plain PUTs, multipart when large
                                   (a single PUT stops at 5 GB)
    log/<first>-<last>.parquet     segments, created with ``If-None-Match: *`` (two writers may
                                   derive the same range)

A write (``push``): upload what the bucket lacks, then replace ``MANIFEST.json`` with a
conditional PUT: ``If-Match`` the ETag this writer read when it synced (``If-None-Match: *`` for the
first), so of two writers racing from one state exactly one publishes, and the other gets
``ConcurrentPublishError`` with nothing published. Until the manifest is replaced, readers see the
previous state whole; uploads never touch a file the manifest names. Then every object that the
listing taken before the publish holds and the new manifest does not name is deleted: the files of
the replaced state, and the orphans of writers killed before their publish (or beaten to it). No
writer can still publish those: it uploaded them before this publish, so it read an older ETag
(S3's listings are strongly consistent). A writer killed before its cleanup leaves orphans for the
next write to delete, so they never pile up. A reader that was still downloading a deleted file
reads the new manifest and tries again.

A sync (``sync_for_writer``, ``RemoteMirror.pull``): read the manifest; download the files it names
that the local directory lacks (each temp + fsync + rename); write the manifest last; remove local
files it no longer names. A writer's local segments that continue the published log are kept: they
were written by a run killed before its publish, and the next push publishes them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quiver.resources import object_store
from quiver.resources.faults import kill_point
from quiver.resources.files import atomic_write_bytes, fsync_dir, remove_path
from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.index.manifest import MANIFEST_NAME, Manifest, SnapshotEntry
from quiver.resources.index.store import LOCK_NAME, IndexStore, LogStats, Recovery, SnapshotResult, stats_of

log = logging.getLogger(__name__)

REMOTE_KEY = "remote"  # the manifest's extra field on the bucket (Manifest.from_json ignores it)
PROBE_GRACE_SECONDS = 3600.0
POLL_SECONDS = float(os.environ.get("QUIVER_REMOTE_POLL_SECONDS", "1.0"))
PULL_LOCK = ".pull.lock"
_STORES: dict[str, object_store.ObjectStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(url: str) -> object_store.ObjectStore:
    """One checked ``ObjectStore`` per URL per process (its conditional-write probe runs once)."""
    with _STORES_LOCK:
        if url not in _STORES:
            _STORES[url] = object_store.open_store(url)
        return _STORES[url]


def dataset_url(index_root: str, dataset: str) -> str:
    return f"{object_store.parse_url(index_root).url}/{dataset}"


def local_dir_for(cache_root: Path, url: str) -> Path:
    """``<cache_root>/<bucket>/<prefix>``: where a URL's local copy lives."""
    location = object_store.parse_url(url)
    return Path(cache_root) / location.bucket / location.prefix


def index_dir_for(home: Path, index_root: str | None, dataset: str) -> Path:
    """The local index directory the writers, the checks and the sensors of ``home`` use: under
    ``index_root`` (default ``home``), or for an ``s3://`` root the writer's working copy under
    ``<home>/remote/<bucket>/<prefix>/<dataset>``."""
    if index_root is not None and object_store.is_object_store_url(index_root):
        return local_dir_for(Path(home) / "remote", dataset_url(index_root, dataset))
    return Path(index_root or home) / dataset


@dataclass(frozen=True)
class Published:
    """The bucket's manifest as read: its bytes, ETag, parsed manifest and the segments it names."""

    raw: bytes
    etag: str
    manifest: Manifest
    segments: dict[str, int]  # name -> bytes

    @property
    def log_last(self) -> int:
        """The last seq it publishes: of its last segment, else of its snapshot."""
        lasts = [commitlog.segment_range(name)[1] for name in self.segments]
        return max([self.manifest.snapshot_seq, *lasts])


def read_published(store: object_store.ObjectStore) -> Published | None:
    """The bucket's manifest (one GET); None when there is none."""
    try:
        raw, etag = store.get(MANIFEST_NAME)
    except object_store.ObjectNotFoundError:
        return None
    manifest = Manifest.from_json(raw, Path(store.where(MANIFEST_NAME)))
    remote = json.loads(raw).get(REMOTE_KEY) or {}
    segments = {entry["name"]: int(entry["bytes"]) for entry in remote.get("segments", [])}
    return Published(raw, etag, manifest, segments)


def published_stats(url: str, now: float | None = None) -> LogStats | None:
    """``store.read_stats`` of the published state, from the bucket's manifest alone (one GET, no
    download): what the snapshot sensor decides on, wherever it runs. None when there is no index."""
    published = read_published(store_for(url))
    if published is None:
        return None
    manifest = published.manifest
    refs = [commitlog.SegmentRef(Path(name), *commitlog.segment_range(name), size) for name, size in published.segments.items()]
    after = sorted((ref for ref in refs if ref.last > manifest.snapshot_seq), key=lambda ref: ref.first)
    records = sum(ref.last - ref.first + 1 for ref in after)  # a segment holds every seq of its range
    named = 1 + len(refs) + sum(len(snapshot_files(e)) for e in (manifest.snapshot, manifest.previous_snapshot) if e)
    return stats_of(manifest, after, records, named, now)


def _same_bytes(there: object_store.ObjectInfo, local: Path) -> bool:
    """Whether an object holds the local file's bytes: the size, and the MD5 where the ETag is one
    (a single-part PUT's; a multipart ETag has a ``-<parts>`` suffix and only the size is compared)."""
    if there.size != local.stat().st_size:
        return False
    etag = (there.etag or "").strip('"')
    if not etag or "-" in etag:
        return True
    with open(local, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest() == etag


def snapshot_files(entry: SnapshotEntry) -> list[str]:
    """The paths (relative to the index root) of a snapshot's files, tantivy's lock files included."""
    names = list(entry.files)
    if entry.text is not None:
        names += [f"{snapshot.TEXT_DIR}/{lock}" for lock in snapshot.TANTIVY_LOCKS]
    return [f"{entry.dir}/{name}" for name in names]


class RemoteIndex:
    """One dataset's index on the bucket and its local copy at ``local``."""

    def __init__(self, url: str, local: Path, store: object_store.ObjectStore | None = None):
        self.url = url
        self.local = Path(local)
        self.store = store or store_for(url)
        self.etag: str | None = None  # of the manifest this copy last synced to or published

    def read_published(self) -> Published | None:
        return read_published(self.store)

    # -- bringing the local copy to the published state -------------------------------------------
    def materialize(self, published: Published, keep_unpublished: bool) -> list[str]:
        """Make the local directory serve ``published`` (see the module doc). The order keeps what a
        local reader sees a published state, or one of its prefixes: the snapshot's files, then the
        manifest, then its segments in seq order (a reader serves the snapshot plus the contiguous
        run of segments present), then the removal of what it no longer names. Returns the local
        segments kept unpublished (``keep_unpublished``)."""
        manifest = published.manifest
        files: dict[str, int] = {}
        for entry in (manifest.snapshot, manifest.previous_snapshot):
            for path in snapshot_files(entry) if entry is not None else ():
                file = entry.files.get(path.removeprefix(entry.dir + "/"))
                files[path] = file.bytes if file is not None else 0  # tantivy's lock files are empty
        self._download_missing(files)
        manifest_file = self.local / MANIFEST_NAME
        if not manifest_file.exists() or manifest_file.read_bytes() != published.raw:
            atomic_write_bytes(manifest_file, published.raw, label="remote.manifest")
        self._download_missing({f"{commitlog.LOG_DIR}/{name}": size for name, size in published.segments.items()})
        kept = self._remove_unnamed(published, keep_unpublished)
        self.etag = published.etag
        return kept

    def _download_missing(self, files: dict[str, int]) -> None:
        """Download each file (path -> size) the local copy lacks or holds at another size, in name order."""
        for path, size in sorted(files.items()):
            local = self.local / path
            if local.exists() and local.stat().st_size == size:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            self.store.download(path, local)

    def _remove_unnamed(self, published: Published, keep_unpublished: bool) -> list[str]:
        manifest = published.manifest
        named_dirs = {entry.dir for entry in (manifest.snapshot, manifest.previous_snapshot) if entry}
        snapshots_dir = self.local / snapshot.SNAPSHOTS_DIR
        for path in sorted(snapshots_dir.iterdir()) if snapshots_dir.exists() else ():
            if f"{snapshot.SNAPSHOTS_DIR}/{path.name}" not in named_dirs:
                remove_path(path)
        last, kept = published.log_last, []
        for ref in commitlog.list_segments(self.local):
            if ref.name in published.segments:
                continue
            if keep_unpublished and ref.first == last + 1:  # a run's segment its publish did not reach
                last = ref.last
                kept.append(ref.name)
                continue
            remove_path(ref.path)
        for directory in (self.local / commitlog.LOG_DIR, snapshots_dir):
            if directory.exists():
                fsync_dir(directory)
        return kept

    def clear_local(self) -> None:
        """Empty the local copy (not the writer's lock file): the bucket holds no index."""
        for path in self.local.iterdir() if self.local.exists() else ():
            if path.name not in (LOCK_NAME, PULL_LOCK):
                remove_path(path)

    # -- publishing the local copy ---------------------------------------------------------------
    def push(self) -> str:
        """Publish the local directory's state (see the module doc); the new manifest's ETag."""
        raw = (self.local / MANIFEST_NAME).read_bytes()
        manifest = Manifest.from_json(raw, self.local / MANIFEST_NAME)
        segments = commitlog.list_segments(self.local)
        listing = {info.path: info for info in self.store.list()}
        files = self._named_files(manifest, segments)
        uploaded = 0
        for path in files:
            local = self.local / path
            there = listing.get(path)
            if there is not None and _same_bytes(there, local):
                continue  # uploaded before (by a run killed before its publish, or published already)
            if there is None and path.startswith(snapshot.SNAPSHOTS_DIR + "/"):
                self.store.put(path, local)  # a name unique to this snapshot: a plain PUT, multipart when large
            elif there is None:
                if self.store.put_if_absent(path, local) is None:
                    raise object_store.ConcurrentPublishError(
                        f"{self.store.where(path)} was created by another writer while this one uploaded; nothing "
                        "was published: one writer at a time may change an index (the Dagster pool of 1)"
                    )
            else:  # same name, other bytes: a damaged copy (recover re-derived it), or a killed run's
                log.warning("%s: replacing %s (%d bytes) with the local copy (%d bytes)", self.url, path, there.size,
                            local.stat().st_size)
                self.store.put(path, local)
            uploaded += 1
            if uploaded == 1:
                kill_point("remote.mid_upload")
        kill_point("remote.before_publish")
        body = json.loads(raw)
        body[REMOTE_KEY] = {
            "publish_id": uuid.uuid4().hex,  # the ETag must change even if nothing else did (object_store's ABA note)
            "segments": [{"name": ref.name, "bytes": ref.bytes} for ref in segments],
        }
        published_raw = json.dumps(body, indent=2, sort_keys=True).encode()
        if self.etag is None:
            etag = self.store.put_if_absent(MANIFEST_NAME, published_raw)
            if etag is None:
                raise object_store.ConcurrentPublishError(
                    f"{self.store.where(MANIFEST_NAME)} was created by another writer since this one found the "
                    "index empty; nothing was published: run again to write on top of its state"
                )
        else:
            etag = self.store.put_if_match(MANIFEST_NAME, published_raw, self.etag)
        self.etag = etag
        atomic_write_bytes(self.local / MANIFEST_NAME, published_raw, label="remote.manifest")
        kill_point("remote.before_cleanup")
        self.remove_orphans(listing, set(files))
        return etag

    @staticmethod
    def _named_files(manifest: Manifest, segments: list[commitlog.SegmentRef]) -> list[str]:
        files = [path for entry in (manifest.snapshot, manifest.previous_snapshot) if entry for path in snapshot_files(entry)]
        return files + [f"{commitlog.LOG_DIR}/{ref.name}" for ref in segments]

    def tidy(self) -> bool:
        """Publish the local state again when the bucket holds objects it does not name (a writer
        killed before its cleanup, and no write since): only a publish makes deleting them safe.
        True when it published."""
        manifest = Manifest.from_json((self.local / MANIFEST_NAME).read_bytes(), self.local / MANIFEST_NAME)
        named = set(self._named_files(manifest, commitlog.list_segments(self.local)))
        stray = [
            info.path for info in self.store.list()
            if info.path.split("/", 1)[0] in (commitlog.LOG_DIR, snapshot.SNAPSHOTS_DIR) and info.path not in named
        ]
        if stray:
            log.info("%s: %d objects no published state names; publishing again to delete them", self.url, len(stray))
            self.push()
        return bool(stray)

    def remove_orphans(self, listing: dict[str, object_store.ObjectInfo], named: set[str]) -> int:
        """Delete the objects of ``listing`` (taken before this writer's publish) that the manifest
        it just published does not name: each was uploaded before that publish by a writer whose
        own publish, from an older ETag, can no longer succeed, or is named only by a replaced
        manifest. Probe objects (``object_store.PROBE_FOLDER``) are their own writer's to delete;
        those older than ``PROBE_GRACE_SECONDS`` were left by a killed one."""
        now = datetime.now(UTC)
        doomed = []
        for path, info in listing.items():
            top = path.split("/", 1)[0]
            if path in named or path == MANIFEST_NAME:
                continue
            if top in (commitlog.LOG_DIR, snapshot.SNAPSHOTS_DIR) or (
                top == object_store.PROBE_FOLDER and (now - info.last_modified).total_seconds() > PROBE_GRACE_SECONDS
            ):
                doomed.append(path)
        for path in doomed:
            self.store.delete(path)
        if doomed:
            log.info("%s: deleted %d objects no published state names", self.url, len(doomed))
        return len(doomed)


class RemoteIndexStore(IndexStore):
    """``IndexStore`` over a local copy of an index on the bucket: every write syncs the copy to
    the published state first, and publishes after (see the module doc). One writer at a time per
    local copy (its lock); across machines, the conditional publish refuses the second."""

    def __init__(self, url: str, local: Path, **kwargs):
        super().__init__(Path(local), unique_snapshot_dirs=True, **kwargs)
        self.remote = RemoteIndex(url, Path(local))
        self._held = threading.local()  # this thread holds the directory lock already

    @property
    def url(self) -> str:
        return self.remote.url

    def _open_locked(self) -> Manifest:
        published = self.remote.read_published()
        if published is None:
            if self.remote.etag is not None or (self.root / MANIFEST_NAME).exists():
                log.warning("%s: the bucket holds no index; the local copy at %s is dropped", self.url, self.root)
                self.remote.clear_local()
            self.remote.etag = None
            unpublished = []
        else:
            unpublished = self.remote.materialize(published, keep_unpublished=True)
        manifest = super()._open_locked()
        if published is None or unpublished:
            # the empty index, created with If-None-Match: *; or segments a killed (or beaten) run
            # wrote from DuckDB's change records and did not publish: they continue the log, publish them
            if unpublished:
                log.warning("%s: publishing %s, written by a run that did not publish them", self.url, unpublished)
            self.remote.push()
        return manifest

    def last_seq(self) -> int:
        """The published log's last seq (the local copy synced first, unless this thread is mid-write)."""
        if not getattr(self._held, "yes", False):
            with self._locked():
                self._open_locked()
        return super().last_seq()

    def append_segment(self, changes, first: int, last: int) -> commitlog.SegmentRef:
        with self._locked():
            ref = super().append_segment(changes, first, last)
            self.remote.push()
            return ref

    def take_snapshot(self, rebuild_tombstone_percent: float = 20.0) -> SnapshotResult | None:
        with self._locked():
            result = super().take_snapshot(rebuild_tombstone_percent)
            if result is not None:
                self.remote.push()
            else:
                self.remote.tidy()
            return result

    def recover(self) -> Recovery:
        with self._locked():
            recovery = super().recover()
            if recovery.problems and not recovery.needs_rebuild:
                self.remote.push()  # the repaired state (a demoted snapshot, a truncated log)
            return recovery

    def reset(self, reason: str = "damaged") -> Path:
        """Drop the published index and the local copy, for a rebuild from DuckDB: the bucket's
        manifest first (readers keep serving their cached copy until the rebuild publishes), then
        every file it named. ``reason`` is for the log: nothing is set aside on a bucket."""
        with self._locked():
            self.remote.store.delete(MANIFEST_NAME)
            for info in self.remote.store.list():
                if info.path.split("/", 1)[0] in (commitlog.LOG_DIR, snapshot.SNAPSHOTS_DIR):
                    self.remote.store.delete(info.path)
            self.remote.clear_local()
            self.remote.etag = None
        log.warning("%s: the published index is dropped (%s); rebuilding it from DuckDB", self.url, reason)
        self.open()
        return self.root

    def set_aside(self, reason: str) -> list[Path]:
        return []

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Reentrant within one store: the write methods above hold the lock around the base class's,
        # which take it again (flock on a second descriptor of the same file would deadlock).
        if getattr(self._held, "yes", False):
            yield
            return
        with super()._locked():
            self._held.yes = True
            try:
                yield
            finally:
                self._held.yes = False


class RemoteMirror:
    """A reader's cache of one dataset's index on the bucket: ``pull`` brings it to the published
    state, at most once per ``poll_seconds`` unless forced. Processes may share a cache directory
    (pulls take its lock in turn)."""

    def __init__(self, url: str, local: Path, poll_seconds: float = POLL_SECONDS, store=None):
        self.remote = RemoteIndex(url, Path(local), store)
        self.local = Path(local)
        self.poll_seconds = poll_seconds
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def pull(self, force: bool = False) -> bool:
        """True when the local copy changed. With a copy already served, an unreachable bucket is
        logged and the copy keeps serving; without one, it is raised."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < self.poll_seconds:
                return False
            self._checked = now
            try:
                return self._pull()
            except object_store.ObjectStoreError as error:
                if not (self.local / MANIFEST_NAME).exists():
                    raise
                log.warning("%s: cannot refresh the cached index (%s); serving the cached state", self.remote.url, error)
                return False

    def _pull(self) -> bool:
        try:
            etag = self.remote.store.head(MANIFEST_NAME).etag
        except object_store.ObjectNotFoundError:
            if (self.local / MANIFEST_NAME).exists():  # dropped for a rebuild: serve the copy until it is back
                log.warning("%s: no published index (being rebuilt?); serving the cached copy", self.remote.url)
                return False
            raise IndexNotBuiltError(
                f"no index at {self.remote.url} ({MANIFEST_NAME} is missing): materialize the dataset's assets "
                "with this index root first"
            ) from None
        if etag == self.remote.etag and (self.local / MANIFEST_NAME).exists():
            return False
        self.local.mkdir(parents=True, exist_ok=True)
        with open(self.local / PULL_LOCK, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                published = self.remote.read_published()
                if published is None:
                    return False  # dropped between the HEAD and the GET: the next pull sees what follows
                try:
                    self.remote.materialize(published, keep_unpublished=False)
                except object_store.ObjectNotFoundError:
                    # a writer published again and deleted what the manifest just read names: read the new one
                    published = self.remote.read_published()
                    self.remote.materialize(published, keep_unpublished=False)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return True
