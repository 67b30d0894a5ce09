"""Per-dataset sensor that requests a snapshot run when ``snapshot_policy.decide`` says so.

Cursor (JSON): ``{"boot", "last_seq", "due", "outlook", "reason"}``: what the last tick saw and
decided. ``boot`` names the code-location process that wrote it; a tick that finds another (or no)
boot is the first since a (re)start, which is when ``on_startup`` applies. The run key is the log's
last seq, so one threshold crossing gives one run, across ticks and daemon restarts alike.

A snapshot publishes the graph that ``<ds>/index:recall_at_10`` measured, so while that check's
latest evaluation failed with ERROR the sensor requests nothing and says why; the next refresh that
passes it lets snapshots through again. While a refresh run's check is still to come, it waits.
"""

from __future__ import annotations

import json
import uuid

import dagster as dg

from quiver.resources.dagster_resources import IndexResource, key
from quiver.resources.index.snapshot_policy import SnapshotPolicy, decide
from quiver.resources.spec import DatasetSpec
from quiver.sensors.settings import sensor_interval_seconds

BOOT = uuid.uuid4().hex  # one per process that evaluates sensors


def first_since_start(cursor: str | None) -> bool:
    if not cursor:
        return True
    try:
        return json.loads(cursor).get("boot") != BOOT
    except (ValueError, AttributeError):  # a cursor someone set by hand: treat as a fresh start
        return True


def failed_recall(instance: dg.DagsterInstance, spec: DatasetSpec) -> str | None:
    """Why ``recall_at_10`` holds snapshots back now, or None when it does not.

    While a run that will evaluate the check is still going (its evaluation is only planned), the
    log it appends to has not been measured yet: wait for it. Otherwise the latest completed
    evaluation decides (a run that ended before its check ran leaves a plan that never completes).
    """
    check = dg.AssetCheckKey(key(spec, "index"), "recall_at_10")
    records = instance.event_log_storage.get_asset_check_execution_history(check, limit=20)  # newest first
    done = [r for r in records if isinstance(r.evaluation, dg.AssetCheckEvaluation)]  # the rest are only planned
    if records and not isinstance(records[0].evaluation, dg.AssetCheckEvaluation):
        run = instance.get_run_by_id(records[0].run_id)
        if run is not None and not run.is_finished:
            return (
                f"{spec.name}: waiting for run {records[0].run_id[:8]}, whose recall_at_10 check on {spec.name}/index "
                "has not finished; a snapshot publishes only a measured graph"
            )
    record = done[0] if done else None
    evaluation = record.evaluation if record is not None else None
    if evaluation is None or evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
        return None
    recall = evaluation.metadata.get("recall_at_10")
    figure = f" ({recall.value:.3f})" if recall is not None and isinstance(recall.value, float) else ""
    return (
        f"{spec.name}: not snapshotting: the latest recall_at_10 check on {spec.name}/index failed{figure} in run "
        f"{record.run_id[:8]}; a refresh whose check passes lets snapshots through again"
    )


def snapshot_sensor(spec: DatasetSpec, index: IndexResource, job) -> dg.SensorDefinition:
    """``index``: where the dataset's index is published (a directory, or a bucket whose manifest
    alone gives the statistics)."""
    policy = SnapshotPolicy.from_spec(spec.snapshots)

    @dg.sensor(
        name=f"{spec.name}_snapshot_sensor",
        job=job,
        minimum_interval_seconds=sensor_interval_seconds("snapshot"),
        default_status=dg.DefaultSensorStatus.RUNNING if spec.snapshots.enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Requests a snapshot of {spec.name!r} when the commit log crosses the spec's thresholds "
        "(snapshots block). Reads only the manifest, the log listing and segment footers; never DuckDB.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        stats = index.log_stats(spec.name)  # damage or I/O errors fail the tick: they are real errors
        if stats is None:
            return dg.SkipReason(f"{spec.name}: no index at {index.where(spec.name)} yet; the refresh job builds it")
        if blocked := failed_recall(context.instance, spec):
            return dg.SkipReason(blocked)
        decision = decide(stats, policy, first_evaluation=first_since_start(context.cursor))
        cursor = json.dumps(
            {
                "boot": BOOT,
                "last_seq": stats.last_seq,
                "due": decision.due,
                "outlook": decision.outlook,
                "reason": decision.reason,
            }
        )
        if not decision.due:
            return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
        context.log.info("%s: snapshot due: %s", spec.name, decision.reason)
        request = dg.RunRequest(
            run_key=f"{spec.name}:snapshot:{stats.last_seq}",
            tags={
                "dataset": spec.name,
                "quiver/snapshot_outlook": decision.outlook,
                "quiver/log_seq": str(stats.last_seq),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return _sensor
