"""One writer of a DuckDB file at a time, whatever runs it: ``<database>.writer.lock``, an advisory
``flock`` taken before any read-write connection and held by writer steps for their whole work.

The Dagster pool (``quiver_duckdb_writer``) orders runs of one instance; this lock also covers a
run of another instance, a script, a second ``python -m quiver refresh``. DuckDB's own file lock
fails a second read-write process at once ("Could not set lock on file"); this one makes it wait,
saying who holds the file, and fail after ``QUIVER_WRITER_WAIT_SECONDS`` (default 600) with one
line that names the holder and the fix. Re-entrant within a process: a step that holds it opens
as many connections as it likes. The file holds one line about the holder (for the message). No
Dagster.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from quiver.resources.warehouse.layout import ConcurrentWriteError

log = logging.getLogger(__name__)
ENV_WAIT = "QUIVER_WRITER_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 600.0
_POLL_SECONDS = 0.2
_held: dict[str, list] = {}  # lock path -> [open handle, depth] for this process
_guard = threading.Lock()


def lock_path(database: Path) -> Path:
    database = Path(database)
    return database.with_name(database.name + ".writer.lock")


def wait_seconds() -> float:
    return float(os.environ.get(ENV_WAIT) or DEFAULT_WAIT_SECONDS)


@contextmanager
def writer_lock(database: Path, holder: str, wait: float | None = None) -> Iterator[None]:
    """Hold the database's writer lock (``holder``: who, for the others' messages)."""
    path = lock_path(database)
    key = str(path.resolve()) if path.parent.exists() else str(path)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield
        finally:
            with _guard:
                entry[1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held across the yield, closed below
    try:
        _acquire(handle, Path(database), wait if wait is not None else wait_seconds())
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder}, pid {os.getpid()}, since {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        handle.flush()
        with _guard:
            _held[key] = [handle, 1]
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _acquire(handle, database: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder(handle)
            if time.monotonic() >= deadline:
                raise ConcurrentWriteError(
                    f"{database} is being written by another writer ({holder}) for over {wait:g} s; wait for it "
                    f"to finish, or stop it (one writer at a time; {ENV_WAIT} sets how long to wait)"
                ) from None
            if not told:
                log.warning("%s is being written by another writer (%s); waiting up to %g s", database, holder, wait)
                told = True
            time.sleep(_POLL_SECONDS)


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip() or "holder unknown"
