"""The sensors and the schedule through Dagster's own contexts on a real ephemeral instance.

Index directories are written by the engine with synthetic vectors (conftest), sources are real
Parquet files: the sensors never need a model or DuckDB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from quiver.pipelines.definitions import build_definitions
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.snapshot_policy import AT_FOLD, INCREMENTAL, REBUILD, SnapshotPolicy, decide
from quiver.resources.spec import load_spec
from quiver.sensors.snapshot_sensor import BOOT
from tests.conftest import dataset_entry, write_spec

DS = "pkgs"


@pytest.fixture
def project(tmp_path, synthetic_index):
    source = tmp_path / "source"
    source.mkdir()
    write_rows(source / "part-0.parquet", range(50))
    home = tmp_path / "home"

    def make(**snapshots):
        entry = dataset_entry(DS, source, refresh_cron="*/5 * * * *", snapshots=snapshots)
        spec = load_spec(write_spec(tmp_path / "datasets.yaml", [entry]))
        return spec, build_definitions(spec, home)

    return type(
        "Project",
        (),
        {"source": source, "home": home, "make": staticmethod(make), "index": lambda: synthetic_index(home / DS, DS)},
    )


def write_rows(path: Path, ids, text: str = "a package") -> None:
    ids = list(ids)
    table = pa.table(
        {
            "pkg_id": pa.array(ids, pa.int64()),
            "package": [f"pkg-{i}" for i in ids],
            "section": ["utils"] * len(ids),
            "short_description": [f"{text} {i}" for i in ids],
        }
    )
    pq.write_table(table, path)


def tick(defs, name, instance, cursor=None):
    return defs.get_sensor_def(name)(build_sensor_context(instance=instance, cursor=cursor))


def requests_of(result) -> list[RunRequest]:
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def skip_message(result) -> str:
    skip = result if isinstance(result, SkipReason) else result.skip_reason
    return skip.skip_message


# -- snapshot sensor ---------------------------------------------------------------------------
def test_snapshot_sensor_waits_for_an_index(project):
    _, defs = project.make()
    result = tick(defs, f"{DS}_snapshot_sensor", DagsterInstance.ephemeral())
    assert "no index at" in skip_message(result) and not requests_of(result)


def test_on_startup_requests_once_then_the_thresholds_rule(project):
    index = project.index()
    index.add(100)  # a first build: segments and no snapshot yet
    _, defs = project.make(interval_seconds=3600, min_delta_commitlogs=2, min_delta_size_percent=5, on_startup=True)
    instance = DagsterInstance.ephemeral()
    first = tick(defs, f"{DS}_snapshot_sensor", instance)
    [request] = requests_of(first)
    assert request.run_key == f"{DS}:snapshot:100" and request.tags["quiver/snapshot_outlook"] == INCREMENTAL
    cursor = json.loads(first.cursor)
    assert cursor["boot"] == BOOT and cursor["due"] is True and cursor["last_seq"] == 100
    assert cursor["reason"].startswith("on startup: 1 segments")
    # The next tick of the same process applies the thresholds: 1 segment < 2.
    second = tick(defs, f"{DS}_snapshot_sensor", instance, first.cursor)
    assert not requests_of(second) and skip_message(second).endswith("not due: 1 segments < 2")
    assert json.loads(second.cursor)["due"] is False
    # A restart (another process wrote the cursor) is a startup again; same log, same run key,
    # so Dagster does not launch a second run for it.
    restarted = json.dumps({**cursor, "boot": "another-process"})
    [again] = requests_of(tick(defs, f"{DS}_snapshot_sensor", instance, restarted))
    assert again.run_key == request.run_key


def test_thresholds_crossing_gives_one_run_key_per_log_position(project):
    index = project.index()
    index.add(200)
    index.snapshot()
    _, defs = project.make(interval_seconds=0, min_delta_commitlogs=2, min_delta_size_percent=1, on_startup=False)
    instance = DagsterInstance.ephemeral()
    name = f"{DS}_snapshot_sensor"
    idle = tick(defs, name, instance)
    assert skip_message(idle) == "no segments after snapshot seq 200: nothing to fold"
    index.add(20)
    one = tick(defs, name, instance, idle.cursor)
    assert skip_message(one).endswith("not due: 1 segments < 2")
    index.add(20)
    due = tick(defs, name, instance, one.cursor)
    [request] = requests_of(due)
    assert request.run_key == f"{DS}:snapshot:240" and request.tags["quiver/log_seq"] == "240"
    assert [r.run_key for r in requests_of(tick(defs, name, instance, due.cursor))] == [request.run_key]
    index.snapshot()  # what the requested run does
    assert "nothing to fold" in skip_message(tick(defs, name, instance, due.cursor))
    assert sorted(p.name for p in project.home.iterdir()) == [DS]  # no DuckDB file was ever opened


def test_a_damaged_manifest_fails_the_tick(project):
    index = project.index()
    index.add(10)
    manifest_path(project.home / DS).write_text("{ not json")
    _, defs = project.make()
    with pytest.raises(Exception, match="manifest"):
        tick(defs, f"{DS}_snapshot_sensor", DagsterInstance.ephemeral())


def test_disabled_snapshots_stop_the_sensor(project):
    project.index().add(10)
    _, defs = project.make(enabled=False)
    sensor = defs.get_sensor_def(f"{DS}_snapshot_sensor")
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    result = sensor(build_sensor_context(instance=DagsterInstance.ephemeral()))
    assert "snapshots.enabled: false" in skip_message(result)


@pytest.mark.parametrize(("deleted", "bound"), [(5, 20.0), (30, 20.0), (15, 10.0), (60, 20.0)])
def test_the_outlook_agrees_with_what_the_snapshot_does(project, deleted, bound):
    index = project.index()
    index.add(100)
    index.snapshot()
    index.delete(range(deleted))
    spec, _ = project.make(rebuild_tombstone_percent=bound)
    from quiver.resources.index import read_stats

    outlook = decide(read_stats(project.home / DS), SnapshotPolicy.from_spec(spec.get(DS).snapshots)).outlook
    rebuilt = index.snapshot(bound).rebuilt
    assert outlook == AT_FOLD or outlook == (REBUILD if rebuilt else INCREMENTAL)
    assert rebuilt == (100.0 * deleted / (100 - deleted) > bound)
    if deleted == 5:
        assert outlook == INCREMENTAL


# -- source sensor -----------------------------------------------------------------------------
def test_source_sensor_requests_the_first_build_when_there_is_no_index(project):
    _, defs = project.make()
    result = tick(defs, f"{DS}_source_sensor", DagsterInstance.ephemeral())
    [request] = requests_of(result)
    assert request.run_key.startswith(f"{DS}:source:") and request.tags["dataset"] == DS
    assert set(json.loads(result.cursor)["files"]) == {str(project.source / "part-0.parquet")}
    assert defs.get_sensor_def(f"{DS}_source_sensor").job_name == f"{DS}_refresh"


def test_source_changes_each_request_exactly_one_refresh(project):
    project.index().add(5)
    _, defs = project.make()
    instance = DagsterInstance.ephemeral()
    name = f"{DS}_source_sensor"
    baseline = tick(defs, name, instance)
    assert "recorded 1 source files as the baseline" in skip_message(baseline) and not requests_of(baseline)
    quiet = tick(defs, name, instance, baseline.cursor)
    assert skip_message(quiet) == f"{DS}: no change in 1 source files"

    part0 = project.source / "part-0.parquet"
    stat = part0.stat()
    os.utime(part0, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = tick(defs, name, instance, quiet.cursor)
    assert not requests_of(touched) and "(1 touched, content unchanged)" in skip_message(touched)
    assert json.loads(touched.cursor)["files"][str(part0)][1] == stat.st_mtime_ns + 5_000_000_000

    keys, cursor = [], touched.cursor
    original = part0.read_bytes()
    for change in ("add", "rewrite", "restore", "remove"):
        if change == "add":
            write_rows(project.source / "part-1.parquet", range(50, 60))
        elif change == "rewrite":
            write_rows(part0, range(50), text="another description")
        elif change == "restore":  # back to the first content: still a change, with a new run key
            part0.write_bytes(original)
        else:
            (project.source / "part-1.parquet").unlink()
        result = tick(defs, name, instance, cursor)
        [request] = requests_of(result)
        keys.append(request.run_key)
        assert not requests_of(tick(defs, name, instance, result.cursor)), change
        cursor = result.cursor
    assert len(set(keys)) == 4
    assert sorted(p.name for p in project.home.iterdir()) == [DS]  # no DuckDB file was ever opened
    generations = [int(k.split(":")[2]) for k in keys]
    assert generations == sorted(generations) and generations[-1] - generations[0] == 3


def test_a_file_still_being_written_is_waited_for(project):
    project.index().add(5)
    _, defs = project.make()
    instance = DagsterInstance.ephemeral()
    name = f"{DS}_source_sensor"
    baseline = tick(defs, name, instance)
    partial = project.source / "part-1.parquet"
    write_rows(partial, range(50, 60))
    whole = partial.read_bytes()
    partial.write_bytes(whole[: len(whole) // 2])
    waiting = tick(defs, name, instance, baseline.cursor)
    assert isinstance(waiting, SkipReason)  # the cursor stays as it was
    assert "waiting for part-1.parquet: not a complete Parquet file yet" in waiting.skip_message
    partial.write_bytes(whole)
    assert len(requests_of(tick(defs, name, instance, baseline.cursor))) == 1


def test_a_source_that_vanished_is_reported_not_refreshed(project):
    project.index().add(5)
    _, defs = project.make()
    instance = DagsterInstance.ephemeral()
    baseline = tick(defs, f"{DS}_source_sensor", instance)
    (project.source / "part-0.parquet").unlink()
    result = tick(defs, f"{DS}_source_sensor", instance, baseline.cursor)
    assert isinstance(result, SkipReason) and "no Parquet file at" in result.skip_message


def test_the_cursor_survives_a_restart(project):
    project.index().add(5)
    _, defs = project.make()
    instance = DagsterInstance.ephemeral()
    baseline = tick(defs, f"{DS}_source_sensor", instance)
    _, reloaded = project.make()  # new definitions, as after a daemon restart
    assert not requests_of(tick(reloaded, f"{DS}_source_sensor", instance, baseline.cursor))


# -- schedule ----------------------------------------------------------------------------------
def test_refresh_cron_schedules_the_refresh_job(project):
    _, defs = project.make()
    schedule = defs.get_schedule_def(f"{DS}_refresh_schedule")
    assert schedule.cron_schedule == "*/5 * * * *" and schedule.job_name == f"{DS}_refresh"
    data = schedule.evaluate_tick(build_schedule_context(instance=DagsterInstance.ephemeral()))
    assert len(data.run_requests) == 1


def test_jobs_split_writers_from_the_snapshot(project):
    _, defs = project.make()
    refresh = defs.resolve_job_def(f"{DS}_refresh")
    snapshot = defs.resolve_job_def(f"{DS}_snapshot")
    refresh_assets = {key.path[-1] for key in refresh.asset_layer.selected_asset_keys}
    snapshot_assets = {key.path[-1] for key in snapshot.asset_layer.selected_asset_keys}
    assert (refresh_assets, snapshot_assets) == ({"rows", "embeddings", "index"}, {"snapshot"})
    pools = {name.split("__")[-1]: node.definition.pool for name, node in refresh.graph.node_dict.items()}
    assert all(pools[stage] == "quiver_duckdb_writer" for stage in refresh_assets)
    assert all(
        node.definition.pool is None
        for node in snapshot.graph.node_dict.values()
        if node.name.split("__")[-1] == "snapshot"
    )


def test_a_failed_recall_check_holds_snapshots_back(project):
    from dagster import AssetCheckEvaluation, AssetCheckKey, AssetCheckSeverity, AssetKey

    index = project.index()
    index.add(100)
    _, defs = project.make(interval_seconds=0, on_startup=False)
    instance = DagsterInstance.ephemeral()
    check = AssetCheckKey(AssetKey([DS, "index"]), "recall_at_10")

    def report(passed: bool, severity=AssetCheckSeverity.ERROR, recall=0.41):
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=check.asset_key,
                check_name=check.name,
                passed=passed,
                severity=severity,
                metadata={"recall_at_10": recall},
            )
        )

    report(passed=False)
    blocked = tick(defs, f"{DS}_snapshot_sensor", instance)
    assert not requests_of(blocked)
    assert "not snapshotting: the latest recall_at_10 check on pkgs/index failed (0.410)" in skip_message(blocked)
    report(passed=False, severity=AssetCheckSeverity.WARN, recall=0.96)  # a warning does not hold it back
    assert len(requests_of(tick(defs, f"{DS}_snapshot_sensor", instance))) == 1
    report(passed=False)
    report(passed=True, recall=0.99)  # the next refresh passes: snapshots go through again
    assert len(requests_of(tick(defs, f"{DS}_snapshot_sensor", instance))) == 1


def test_a_recall_check_still_to_come_makes_the_sensor_wait(project):
    """A refresh run evaluates recall_at_10 after it appends its segment: until then the check is
    only planned (no pass/fail yet). The sensor waits while that run goes on, and once the run has
    ended without evaluating it, the latest completed evaluation decides again."""
    from dagster import AssetCheckEvaluation, AssetCheckKey, AssetCheckSeverity, AssetKey
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    index = project.index()
    index.add(100)
    _, defs = project.make(interval_seconds=0, on_startup=False)
    instance = DagsterInstance.ephemeral()
    check = AssetCheckKey(AssetKey([DS, "index"]), "recall_at_10")
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=check.asset_key, check_name=check.name, passed=True, severity=AssetCheckSeverity.ERROR
        )
    )
    run = instance.add_run(DagsterRun(job_name=f"{DS}_refresh", status=DagsterRunStatus.STARTED))
    instance.report_dagster_event(
        DagsterEvent(
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
            job_name=run.job_name,
            event_specific_data=AssetCheckEvaluationPlanned(asset_key=check.asset_key, check_name=check.name),
        ),
        run_id=run.run_id,
    )
    waiting = tick(defs, f"{DS}_snapshot_sensor", instance)
    assert not requests_of(waiting)
    assert f"waiting for run {run.run_id[:8]}, whose recall_at_10 check on pkgs/index has not finished" in skip_message(
        waiting
    )
    instance.report_run_failed(run)  # the run ended before its check ran: the plan never completes
    assert len(requests_of(tick(defs, f"{DS}_snapshot_sensor", instance))) == 1


# -- intervals ---------------------------------------------------------------------------------
def test_the_source_sensor_ticks_on_every_pass_of_the_daemon_loop(project, monkeypatch):
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    from quiver.sensors.settings import DAEMON_SENSOR_LOOP_SECONDS, DEFAULTS, ENV

    monkeypatch.delenv(ENV, raising=False)
    _, defs = project.make()
    # The freshness figures assume Dagster's 5 s sensor loop: an interval under one pass ticks on
    # every pass, one of 5 s would skip a pass now and then.
    assert DAEMON_SENSOR_LOOP_SECONDS == MIN_INTERVAL_LOOP_TIME
    assert defs.get_sensor_def(f"{DS}_source_sensor").minimum_interval_seconds == DEFAULTS["source"]
    assert DEFAULTS["source"] < DAEMON_SENSOR_LOOP_SECONDS
    assert defs.get_sensor_def(f"{DS}_snapshot_sensor").minimum_interval_seconds == DEFAULTS["snapshot"]


def test_the_interval_variable_sets_both_sensors_and_rejects_nonsense(project, monkeypatch):
    from quiver.sensors.settings import ENV

    monkeypatch.setenv(ENV, "2")
    _, defs = project.make()
    intervals = {defs.get_sensor_def(f"{DS}_{kind}_sensor").minimum_interval_seconds for kind in ("source", "snapshot")}
    assert intervals == {2}
    monkeypatch.setenv(ENV, "0")
    with pytest.raises(ValueError, match=ENV):
        project.make()
