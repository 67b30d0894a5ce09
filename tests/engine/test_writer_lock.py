"""One writer of a DuckDB file at a time across processes (``warehouse.writer_lock``): a second
waits, saying who holds the file, and fails after its wait with one line naming the holder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from quiver.resources.warehouse.layout import ConcurrentWriteError
from quiver.resources.warehouse.writer_lock import lock_path, writer_lock
from tests.conftest import ROOT

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from quiver.resources.warehouse.writer_lock import writer_lock
    with writer_lock(Path(sys.argv[1]), "run abc step pkgs/rows"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold(database, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(database), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_after_its_wait_naming_the_holder(tmp_path):
    database = tmp_path / "quiver.duckdb"
    proc = hold(database, 30)
    try:
        started = time.monotonic()
        with pytest.raises(ConcurrentWriteError, match=r"being written by another writer \(run abc step pkgs/rows, pid \d+"):
            with writer_lock(database, "me", wait=0.6):
                pass
        assert time.monotonic() - started >= 0.6
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_waits_then_writes(tmp_path, caplog):
    database = tmp_path / "quiver.duckdb"
    proc = hold(database, 1.0)
    try:
        started = time.monotonic()
        with caplog.at_level("WARNING"), writer_lock(database, "me", wait=30):
            assert time.monotonic() - started > 0.7, "it got the lock only once the holder let go (1 s)"
            assert "me, pid" in lock_path(database).read_text()
        assert any("waiting up to" in r.getMessage() for r in caplog.records)
    finally:
        proc.kill()
        proc.wait()


def test_re_entrant_within_a_process(tmp_path):
    database = tmp_path / "quiver.duckdb"
    with writer_lock(database, "step", wait=0.1), writer_lock(database, "connection", wait=0.1):
        assert "step" in lock_path(database).read_text()
    with writer_lock(database, "again", wait=0.1):  # released: free again
        pass
