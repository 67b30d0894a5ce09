"""When to take a snapshot: Weaviate's conditions, all of which must hold. No Dagster.

Inputs are the log statistics read from the manifest and a directory listing (``read_stats``),
never DuckDB and never a vector, so evaluating the policy is cheap enough for every sensor tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from resources.index.store import LogStats


@dataclass(frozen=True)
class SnapshotPolicy:
    enabled: bool = True
    interval_seconds: float = 21600
    min_delta_commitlogs: int = 1
    min_delta_size_percent: float = 5
    on_startup: bool = True


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str


def decide(stats: LogStats, policy: SnapshotPolicy, first_evaluation: bool = False) -> Decision:
    """Whether a snapshot is due now, with the reason in words (the unmet condition when not)."""
    if not policy.enabled:
        return Decision(False, "snapshots are disabled (snapshots.enabled: false)")
    if stats.segments == 0:
        return Decision(False, "no segments after the snapshot: nothing to fold")
    summary = (
        f"{stats.segments} segments, {stats.segment_bytes} bytes "
        f"({stats.delta_percent:.1f}% of snapshot size) after snapshot seq {stats.snapshot_seq}"
    )
    if first_evaluation and policy.on_startup:
        return Decision(True, f"on startup: {summary}")
    unmet = []
    if stats.snapshot_age_seconds is not None and stats.snapshot_age_seconds < policy.interval_seconds:
        unmet.append(f"{stats.snapshot_age_seconds:.0f}s since the snapshot < {policy.interval_seconds:g}s")
    if stats.segments < policy.min_delta_commitlogs:
        unmet.append(f"{stats.segments} segments < {policy.min_delta_commitlogs}")
    if stats.delta_percent < policy.min_delta_size_percent:
        unmet.append(f"{stats.delta_percent:.1f}% of snapshot size < {policy.min_delta_size_percent:g}%")
    if unmet:
        return Decision(False, f"{summary}; not due: " + "; ".join(unmet))
    return Decision(True, summary)
