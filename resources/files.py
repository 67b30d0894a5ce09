"""Durable file writes for the index directory (invariant I3).

Every published file is written to a temp name in its final directory, fsynced, renamed into
place, and the directory is fsynced, so after a crash a file is either there whole or not at all.
Temp names carry ``TEMP_MARKER`` so that opening a store can remove leftovers of a crash.

Checksums are XXH3-128 (``xxh3_128:<hex>``): integrity, not authentication, at memory speed, so a
reader can verify a multi-GB snapshot before mapping it and still start in well under a second.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import xxhash

from quiver.resources.faults import kill_point

TEMP_MARKER = ".tmp-"
_HASH_CHUNK = 4 << 20


def temp_path_for(final: Path) -> Path:
    """A unique temp name beside ``final``; ``remove_temp_files`` recognises it."""
    return final.with_name(f"{TEMP_MARKER}{uuid.uuid4().hex}-{final.name}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (bottom-up), then ``path`` itself."""
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def atomic_write(final: Path, write: Callable[[Path], None], label: str = "file") -> Path:
    """Publish ``final`` atomically: ``write(temp)`` then fsync, rename, fsync the directory.

    ``write`` may produce a file or a directory at the temp path. Refuses to replace an existing
    directory (I4: a published snapshot directory is never rewritten); a file is replaced, which is
    how the manifest is published. ``label`` names the crash points (``<label>.before_rename``,
    ``<label>.before_dir_fsync``; see resources/faults.py).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(final)
    try:
        write(temp)
        if temp.is_dir():
            if final.exists():
                raise FileExistsError(f"{final} is already published; published files are never rewritten")
            fsync_tree(temp)
        else:
            fsync_file(temp)
        kill_point(f"{label}.before_rename")
        os.replace(temp, final)
    except BaseException:
        remove_path(temp)
        raise
    kill_point(f"{label}.before_dir_fsync")
    fsync_dir(final.parent)
    return final


def atomic_write_bytes(final: Path, data: bytes, label: str = "file") -> Path:
    return atomic_write(final, lambda temp: temp.write_bytes(data), label)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temp_files(root: Path) -> list[Path]:
    """Remove crash leftovers (temp names) anywhere under ``root``; returns what was removed."""
    removed: list[Path] = []
    if not root.exists():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if name.startswith(TEMP_MARKER):
                path = Path(dirpath) / name
                remove_path(path)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_MARKER)]
    return removed


CHECKSUM_ALGORITHM = "xxh3_128"


def checksum_file(path: Path, length: int | None = None) -> str:
    """``xxh3_128:<hex>`` of the file's bytes (its first ``length`` bytes when given)."""
    digest = xxhash.xxh3_128()
    buffer = memoryview(bytearray(_HASH_CHUNK))
    left = length
    with open(path, "rb", buffering=0) as handle:
        while left is None or left > 0:
            read = handle.readinto(buffer if left is None else buffer[: min(left, _HASH_CHUNK)])
            if not read:
                break
            digest.update(buffer[:read])
            left = None if left is None else left - read
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


class HashingWriter:
    """A write-only file object that checksums what passes through it (``checksum()``, ``written``),
    for formats whose checksum must be computed while they are written."""

    def __init__(self, handle):
        self._handle = handle
        self._digest = xxhash.xxh3_128()
        self.written = 0
        self.closed = False

    def write(self, data) -> int:
        self._digest.update(data)
        self.written += len(data)
        return self._handle.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:  # the caller owns the handle
        self.closed = True

    def checksum(self) -> str:
        return f"{CHECKSUM_ALGORITHM}:{self._digest.hexdigest()}"
