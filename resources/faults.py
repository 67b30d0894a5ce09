"""Test-only crash points: ``QUIVER_KILL_AT=<point>`` makes the process SIGKILL itself there.

The crash matrix (tests/crash/) runs the real writers in a subprocess with this variable set, so
every kill lands at a named place in the write path instead of at a timing guess. ``<point>@<n>``
kills at the n-th time the point is reached (1-based), for points inside loops. Unset, a call
costs one dictionary lookup. The points, in write order:

    refresh.in_transaction      inside the DuckDB transaction, after its writes, before COMMIT
    refresh.between_batches     a batch of rows is committed, the next not yet embedded
    refresh.after_commit        after DuckDB's COMMIT, before any segment exists
    segment.mid_write           the segment's temp file holds a row group but no footer
    segment.before_rename       the segment's temp file is complete and fsynced, not renamed
    segment.before_dir_fsync    the segment is renamed into place, its directory not yet fsynced
    snapshot.mid_write          the snapshot's temp directory holds the index file but no rows file
    snapshot.before_text        ... the index and rows files, no text index yet (full-text datasets)
    snapshot.before_rename      the snapshot's temp directory is complete and fsynced, not renamed
    snapshot.before_dir_fsync   the snapshot directory is renamed, its parent not yet fsynced
    snapshot.before_manifest    the snapshot directory is published, the manifest does not name it
    manifest.before_rename      the new manifest's temp file is written and fsynced, not renamed
    manifest.before_dir_fsync   the new manifest is renamed into place, the directory not fsynced
    snapshot.before_cleanup     the manifest names the new snapshot; covered files not yet removed
    snapshot.mid_cleanup        the first covered file is removed, the rest not

The fan-out's points (``embed_fanout``; tests/crash/test_fanout_crash.py):

    fanout.plan_written         the plan's input parts are written, its plan.json not yet
    fanout.part_written         a worker's vectors file is published, the step not yet ended
    fanout.in_transaction       a part's changes and its ledger row are written, before COMMIT
    fanout.mid_commit           a part is committed (ledger row included), the next not yet
    fanout.before_cleanup       every part is committed, the staging directory not yet removed

An index on a bucket's (``index/remote.py``; tests/crash/test_remote_crash.py):

    remote.mid_upload           the first new file of a publish is uploaded, the rest not
    remote.before_publish       every new file is uploaded, the bucket's manifest not yet replaced
    remote.before_cleanup       the bucket's manifest is replaced, what it no longer names not yet deleted
"""

from __future__ import annotations

import os
import signal

ENV = "QUIVER_KILL_AT"
REFRESH_POINTS = (
    "refresh.in_transaction",
    "refresh.between_batches",
    "refresh.after_commit",
    "segment.mid_write",
    "segment.before_rename",
    "segment.before_dir_fsync",
)
SNAPSHOT_POINTS = (
    "snapshot.mid_write",
    "snapshot.before_text",
    "snapshot.before_rename",
    "snapshot.before_dir_fsync",
    "snapshot.before_manifest",
    "manifest.before_rename",
    "manifest.before_dir_fsync",
    "snapshot.before_cleanup",
    "snapshot.mid_cleanup",
)
POINTS = REFRESH_POINTS + SNAPSHOT_POINTS  # the crash matrix's (single-step refresh and snapshot)
FANOUT_POINTS = (
    "fanout.plan_written",
    "fanout.part_written",
    "fanout.in_transaction",
    "fanout.mid_commit",
    "fanout.before_cleanup",
)
REMOTE_POINTS = ("remote.mid_upload", "remote.before_publish", "remote.before_cleanup")
_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``QUIVER_KILL_AT`` names this point (and this is the n-th hit)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
