"""MANIFEST.json: the single publish point of an index directory (I4).

Format (JSON object, ``format_version`` 1):

    format            "quiver-index"
    format_version    1; a reader refuses a version it does not know
    dataset           dataset name
    identity          {dim, metric, dtype, model}: what the vectors are (I6)
    hnsw              {m, ef_construction, ef_search}
    primary_key       name of the primary-key column in segments and rows files
    snapshot          null, or the published snapshot:
                        {seq, dir, files: {name: {bytes, checksum}}, vectors, tombstones, created_at,
                         text}
                      (checksum: ``xxh3_128:<hex>``, files.checksum_file; ``text``: null, or the
                      ``text_index.TextConfig`` its ``text/`` index was written with; absent in
                      manifests written before full-text search, read as null)
                      it covers every change with seq <= snapshot.seq
    previous_snapshot null or the snapshot before it, kept for fallback (I7: at most one): the
                      segments after it are kept too, so previous + segments reproduce
                      the published state exactly when the current snapshot is damaged
    text              null, or the ``TextConfig`` of the served state's full-text index: set when the
                      directory is created and by each snapshot (the writer's config then), so a
                      change of the spec's ``full_text`` takes effect with the next snapshot; a
                      reader analyzes the segments after the snapshot with it (absent: null)
    created_at        when the index directory was created (ISO 8601, UTC)
    updated_at        when this manifest was published

The manifest is replaced whole by ``publish`` (temp, fsync, rename, fsync dir); no other file is
ever renamed over. Readers notice a new manifest by its stat (inode, size, mtime). A manifest with a
higher ``format_version`` was written by a newer quiver: it is refused (UnsupportedFormatError) and
never repaired or replaced, so an older quiver cannot destroy a newer index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from quiver.resources.files import atomic_write_bytes
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError, UnsupportedFormatError
from quiver.resources.index.identity import HnswParams, IndexIdentity

MANIFEST_NAME = "MANIFEST.json"
FORMAT = "quiver-index"
FORMAT_VERSION = 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    checksum: str  # files.checksum_file


@dataclass(frozen=True)
class SnapshotEntry:
    seq: int
    dir: str  # relative to the index root
    files: dict[str, FileEntry]
    vectors: int
    tombstones: int
    created_at: str
    text: dict | None = None  # text_index.TextConfig.to_dict() of its text/ index, if it has one

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files.values())

    @classmethod
    def from_dict(cls, data: dict) -> SnapshotEntry:
        files = {name: FileEntry(**entry) for name, entry in data["files"].items()}
        return cls(
            seq=int(data["seq"]),
            dir=data["dir"],
            files=files,
            vectors=int(data["vectors"]),
            tombstones=int(data["tombstones"]),
            created_at=data["created_at"],
            text=data.get("text"),
        )


@dataclass(frozen=True)
class Manifest:
    dataset: str
    identity: IndexIdentity
    hnsw: HnswParams
    primary_key: str
    snapshot: SnapshotEntry | None = None
    previous_snapshot: SnapshotEntry | None = None
    text: dict | None = None  # text_index.TextConfig.to_dict() of the served state, or None
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)

    @property
    def snapshot_seq(self) -> int:
        return self.snapshot.seq if self.snapshot else 0

    def with_snapshot(self, snapshot: SnapshotEntry, previous: SnapshotEntry | None) -> Manifest:
        """``snapshot`` published; its text config becomes the served state's."""
        return replace(self, snapshot=snapshot, previous_snapshot=previous, text=snapshot.text, updated_at=utc_now())

    def demoted(self) -> Manifest:
        """The previous snapshot made current again (the current one is damaged)."""
        return replace(self, snapshot=self.previous_snapshot, previous_snapshot=None, updated_at=utc_now())

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "identity": self.identity.to_dict(),
            "hnsw": self.hnsw.to_dict(),
            "primary_key": self.primary_key,
            "snapshot": asdict(self.snapshot) if self.snapshot else None,
            "previous_snapshot": asdict(self.previous_snapshot) if self.previous_snapshot else None,
            "text": self.text,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise CorruptFileError(f"{where} is not a quiver manifest (format={data.get('format')!r})")
            version = data.get("format_version")
            if isinstance(version, int) and version > FORMAT_VERSION:
                raise UnsupportedFormatError(
                    f"{where} has format_version {version}, written by a newer quiver; this one reads "
                    f"version {FORMAT_VERSION}. Upgrade quiver; the directory is left untouched."
                )
            if version != FORMAT_VERSION:
                raise CorruptFileError(
                    f"{where} has format_version {version!r}; this quiver reads version {FORMAT_VERSION}"
                )
            return cls(
                dataset=data["dataset"],
                identity=IndexIdentity.from_dict(data["identity"]),
                hnsw=HnswParams.from_dict(data["hnsw"]),
                primary_key=data["primary_key"],
                snapshot=SnapshotEntry.from_dict(data["snapshot"]) if data["snapshot"] else None,
                previous_snapshot=(
                    SnapshotEntry.from_dict(data["previous_snapshot"]) if data["previous_snapshot"] else None
                ),
                text=data.get("text"),
                created_at=data["created_at"],
                updated_at=data["updated_at"],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # AttributeError: JSON that is not an object
            if isinstance(error, (CorruptFileError, UnsupportedFormatError)):
                raise
            raise CorruptFileError(
                f"{where} is damaged ({error!r}); rebuild the index from DuckDB by materializing the dataset"
            ) from error


def manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def read_manifest(root: Path) -> Manifest:
    path = manifest_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexNotBuiltError(
            f"no index at {root} ({MANIFEST_NAME} is missing): materialize the dataset's assets first"
        ) from None
    return Manifest.from_json(raw, path)


def publish_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_bytes(manifest_path(root), manifest.to_json(), label="manifest")
