"""Per-dataset sensor that requests a snapshot run when ``snapshot_policy.decide`` says so."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from pipelines.spec import DatasetSpec
from resources.index import read_stats
from resources.index.manifest import manifest_path
from sensors.snapshot_policy import SnapshotPolicy, decide


def policy_for(spec: DatasetSpec) -> SnapshotPolicy:
    s = spec.snapshots
    return SnapshotPolicy(s.enabled, s.interval_seconds, s.min_delta_commitlogs, s.min_delta_size_percent, s.on_startup)


def snapshot_sensor(spec: DatasetSpec, home: Path, job: dg.JobDefinition) -> dg.SensorDefinition:
    root = Path(home) / spec.name
    policy = policy_for(spec)

    @dg.sensor(
        name=f"{spec.name}_snapshot_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING if spec.snapshots.enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Requests a snapshot of {spec.name!r} when the commit log crosses the spec's thresholds. "
        "Reads only the manifest and the log directory listing.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        if not manifest_path(root).exists():
            return dg.SkipReason(f"{spec.name}: no index at {root} yet")
        stats = read_stats(root)
        decision = decide(stats, policy, first_evaluation=context.cursor is None)
        cursor = json.dumps({"last_seq": stats.last_seq, "due": decision.due, "reason": decision.reason})
        if not decision.due:
            return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{spec.name}:snapshot:{stats.last_seq}", tags={"dataset": spec.name})],
            cursor=cursor,
        )

    return _sensor
