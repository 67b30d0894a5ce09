"""When to take a snapshot: Weaviate's conditions, all of which must hold. No Dagster.

Inputs are the log statistics read from the manifest, a directory listing and the segments'
Parquet footers (``read_stats``), never DuckDB and never a vector, so evaluating the policy is
cheap enough for every sensor tick. The sensor and ``python -m quiver status`` both call
``decide``, so what status prints is what the sensor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quiver.resources.index.store import LogStats
from quiver.resources.spec import SnapshotsSpec

# Outlook of the next snapshot: the tombstone bound (DESIGN §4) is checked exactly when folding;
# from the stats alone it is known only between bounds, so it can also be "decided when folding".
REBUILD, INCREMENTAL, AT_FOLD = "rebuild", "incremental", "decided when folding"


def _percent(value: float) -> str:
    """Rounded down, so a figure just under a bound never prints as the bound itself."""
    return f"{math.floor(value * 10) / 10:.1f}%"


@dataclass(frozen=True)
class SnapshotPolicy:
    enabled: bool = True
    interval_seconds: float = 21600
    min_delta_commitlogs: int = 1
    min_delta_size_percent: float = 5
    on_startup: bool = True
    rebuild_tombstone_percent: float = 20


    @classmethod
    def from_spec(cls, snapshots: SnapshotsSpec) -> SnapshotPolicy:
        """The policy a dataset's ``snapshots:`` block asks for."""
        s = snapshots
        return cls(
            s.enabled,
            s.interval_seconds,
            s.min_delta_commitlogs,
            s.min_delta_size_percent,
            s.on_startup,
            s.rebuild_tombstone_percent,
        )


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    outlook: str = INCREMENTAL  # what the next snapshot will do: REBUILD, INCREMENTAL or AT_FOLD


def rebuild_outlook(stats: LogStats, bound_percent: float) -> tuple[str, str]:
    """Whether folding the segments will pass the tombstone bound, with the figures in words.

    The snapshot holds ``v`` live vectors and ``t`` tombstones; each of the ``r`` change records
    after it adds at most one tombstone and moves the live count by at most one. So after folding
    the tombstone share lies in [t / (v + r), (t + r) / (v - r)]; ``take_snapshot`` decides exactly.
    """
    t, v = stats.snapshot_tombstones, stats.snapshot_vectors
    now = (
        f"{t} tombstones / {v} vectors ({100.0 * t / max(1, v):.1f}%) in the snapshot, rebuild above {bound_percent:g}%"
    )
    if stats.segment_records is None:
        return AT_FOLD, f"{now}; a segment footer is unreadable"
    r = stats.segment_records
    low = 100.0 * t / max(1, v + r)
    high = 100.0 * (t + r) / max(1, v - r)
    if v == 0 and t == 0:
        return INCREMENTAL, f"{now}; the first snapshot holds no tombstones"
    if low > bound_percent:
        return REBUILD, f"{now}: the snapshot will rebuild the graph"
    if high <= bound_percent:
        return INCREMENTAL, f"{now}: at most {high:.1f}% after folding {r} records"
    return AT_FOLD, f"{now}: {low:.1f}%..{high:.1f}% after folding {r} records"


def decide(stats: LogStats, policy: SnapshotPolicy, first_evaluation: bool = False) -> Decision:
    """Whether a snapshot is due now, with the reason in words (the unmet conditions when not).

    ``first_evaluation``: the sensor's first tick since its code location started (``on_startup``).
    """
    if not policy.enabled:
        return Decision(False, "snapshots are disabled (snapshots.enabled: false)")
    if stats.segments == 0:
        return Decision(False, f"no segments after snapshot seq {stats.snapshot_seq}: nothing to fold")
    outlook, tombstones = rebuild_outlook(stats, policy.rebuild_tombstone_percent)
    percent = "no snapshot yet" if stats.snapshot_bytes == 0 else f"{_percent(stats.delta_percent)} of snapshot size"
    summary = (
        f"{stats.segments} segments, {stats.segment_bytes} bytes ({percent}) after snapshot seq {stats.snapshot_seq}"
    )
    if first_evaluation and policy.on_startup:
        return Decision(True, f"on startup: {summary}; {tombstones}", outlook)
    unmet = []
    if stats.snapshot_age_seconds is not None and stats.snapshot_age_seconds < policy.interval_seconds:
        unmet.append(f"{stats.snapshot_age_seconds:.0f}s since the snapshot < {policy.interval_seconds:g}s")
    if stats.segments < policy.min_delta_commitlogs:
        unmet.append(f"{stats.segments} segments < {policy.min_delta_commitlogs}")
    if stats.delta_percent < policy.min_delta_size_percent:
        unmet.append(f"{_percent(stats.delta_percent)} of snapshot size < {policy.min_delta_size_percent:g}%")
    if unmet:
        return Decision(False, f"{summary}; not due: " + "; ".join(unmet), outlook)
    return Decision(True, f"{summary}; {tombstones}", outlook)
