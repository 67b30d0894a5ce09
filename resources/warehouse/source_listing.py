"""What a dataset's source looks like now: its Parquet files, their sizes, times and fingerprints.

No Dagster and no DuckDB: the source sensor compares a new ``scan`` with the one its cursor holds.

Per file: ``size``, ``mtime_ns`` and ``fingerprint`` = ``xxh3_64`` of the whole file when it is at
most ``FULL_HASH_BYTES`` (about 7 ms at this size from the page cache), else of the size plus the
whole Parquet footer (schema, row-group offsets, sizes and statistics; its length is in the last 8
bytes, before the magic). A file is
hashed again only when its size or time changed, so a tick over an unchanged source costs one
``stat`` per file. Files that do not end in Parquet's magic bytes are still being written: the
scan reports them as incomplete and the sensor waits for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from quiver.resources.warehouse.source import resolve_source_files

FULL_HASH_BYTES = 64 << 20
MAGIC = b"PAR1"


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    fingerprint: str

    def as_list(self) -> list:
        return [self.size, self.mtime_ns, self.fingerprint]

    @classmethod
    def from_list(cls, value: list) -> FileState:
        size, mtime_ns, fingerprint = value
        return cls(int(size), int(mtime_ns), str(fingerprint))


@dataclass(frozen=True)
class Scan:
    files: dict[str, FileState]
    incomplete: tuple[str, ...] = ()  # files without Parquet's closing magic: still being written


@dataclass(frozen=True)
class SourceChanges:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # content differs
    removed: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)  # new time, same content: no refresh needed

    @property
    def any_content(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def describe(self, limit: int = 3) -> str:
        parts = []
        for label, names in (("new", self.added), ("changed", self.changed), ("removed", self.removed)):
            if names:
                shown = ", ".join(Path(n).name for n in names[:limit])
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{len(names)} {label} ({shown}{more})")
        return "; ".join(parts) or "no change"


def fingerprint(path: str, size: int) -> str | None:
    """The file's content fingerprint, or None when it does not end in Parquet's magic bytes."""
    with open(path, "rb") as f:
        if size < 2 * len(MAGIC) + 4:
            return None
        f.seek(size - 8)
        tail = f.read(8)
        footer_bytes = int.from_bytes(tail[:4], "little")
        if tail[4:] != MAGIC or footer_bytes + 8 > size:
            return None
        digest = xxhash.xxh3_64()
        if size <= FULL_HASH_BYTES:
            f.seek(0)
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            return f"full:{digest.hexdigest()}"
        digest.update(size.to_bytes(8, "little"))
        f.seek(size - 8 - footer_bytes)
        digest.update(f.read(footer_bytes))
        return f"footer:{digest.hexdigest()}"


def scan(dataset: str, source: Path, previous: dict[str, FileState] | None = None) -> Scan:
    """The source's files now; fingerprints reused from ``previous`` where size and time agree.

    Raises ``warehouse.SourceNotFoundError`` when the source holds no Parquet file.
    """
    previous = previous or {}
    files, incomplete = {}, []
    for path in resolve_source_files(dataset, source):
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed between the listing and the stat
            continue
        known = previous.get(path)
        if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
            files[path] = known
            continue
        try:
            content = fingerprint(path, st.st_size)
        except FileNotFoundError:
            continue
        if content is None:
            incomplete.append(path)
        else:
            files[path] = FileState(st.st_size, st.st_mtime_ns, content)
    return Scan(files, tuple(incomplete))


def compare(before: dict[str, FileState], after: dict[str, FileState]) -> SourceChanges:
    changes = SourceChanges()
    for path in sorted(after):
        old, new = before.get(path), after[path]
        if old is None:
            changes.added.append(path)
        elif old.fingerprint != new.fingerprint or old.size != new.size:
            changes.changed.append(path)
        elif old.mtime_ns != new.mtime_ns:
            changes.touched.append(path)
    changes.removed.extend(sorted(set(before) - set(after)))
    return changes


def content_digest(files: dict[str, FileState]) -> str:
    """One fingerprint of the whole source: file names and contents (times left out)."""
    digest = xxhash.xxh3_64()
    for path in sorted(files):
        digest.update(f"{path}\0{files[path].size}\0{files[path].fingerprint}\n".encode())
    return digest.hexdigest()
