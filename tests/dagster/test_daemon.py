"""The automation as users run it: a real ``dagster-daemon run``, nothing else.

Two built datasets sharing the DuckDB file; the daemon starts with the project's workspace and
``dagster.yaml`` and a short sensor interval; a new Parquet file lands in each source at once.
Each source sensor must request one refresh, and both refreshes must succeed without their DuckDB
writers ever running at the same time (the shipped pool of one); each snapshot sensor must then
request one snapshot, which must succeed; and the search helper must find the new rows.
"""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest
from dagster import DagsterEventType
from dagster._core.scheduler.instigation import TickStatus  # not exported by dagster itself

from quiver.pipelines import query
from quiver.resources.index.manifest import read_manifest
from tests.conftest import dataset_entry, write_spec
from tests.dagster.daemon_harness import Daemon
from tests.dagster.helpers import materialize_all

DATASETS = ("pkgs", "more")  # two datasets share the DuckDB file: their writers must take turns
INTERVAL = 2  # seconds between sensor ticks
TIMEOUT = 300  # for each wait; the whole test takes one to two minutes


def _drop(table, path):
    """Write next to the source and rename in: the sensor never sees half a file."""
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp)
    temp.rename(path)


WRITER_STEPS = ("rows", "embeddings", "index")  # the assets that open DuckDB for writing


def _writer_steps(daemon, run_id) -> list[tuple[float, float, str]]:
    """(start, end, step) of each DuckDB-writing step of a run, from its event log."""
    starts, spans = {}, []
    for record in daemon.instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None or event.step_key.split("__")[-1] not in WRITER_STEPS:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            spans.append((starts[event.step_key], record.timestamp, event.step_key))
    return spans


def test_new_files_are_refreshed_snapshotted_and_found(tmp_path, sample_table, monkeypatch):
    entries, sources, parts = [], {}, {}
    for i, name in enumerate(DATASETS):
        sources[name] = tmp_path / f"source-{name}"
        sources[name].mkdir()
        pq.write_table(sample_table.slice(100 * i, 60), sources[name] / "part-0.parquet")
        parts[name] = sample_table.slice(100 * i + 60, 25)
        snapshots = {"interval_seconds": 0, "min_delta_commitlogs": 1, "min_delta_size_percent": 5, "on_startup": True}
        entries.append(dataset_entry(name, sources[name], snapshots=snapshots))
    spec_path = write_spec(tmp_path / "datasets.yaml", entries)
    home = tmp_path / "home"
    assert materialize_all(spec_path, home).success  # the datasets as a first `make demo` leaves them

    started = time.monotonic()
    with Daemon(tmp_path, spec_path, home, sensor_interval=INTERVAL) as daemon:
        # The source sensors' first ticks record the files as the baseline (the indexes exist).
        for name in DATASETS:
            daemon.wait_for(
                f"{name} source baseline", lambda n=name: daemon.sensor_cursor(f"{n}_source_sensor"), TIMEOUT
            )
        assert not daemon.instance.get_runs()

        for name in DATASETS:  # both at once: two refresh runs compete for the DuckDB file
            _drop(parts[name], sources[name] / "part-1.parquet")
        landed = time.time()
        refreshes, snapshots = {}, {}
        for name in DATASETS:
            [run] = daemon.wait_for(f"{name} refresh", lambda n=name: daemon.finished_runs(f"{n}_refresh"), TIMEOUT)
            assert run.is_success, daemon.log_tail()
            assert run.tags["dagster/sensor_name"] == f"{name}_source_sensor"
            refreshes[name] = run
        for name in DATASETS:
            [run] = daemon.wait_for(f"{name} snapshot", lambda n=name: daemon.finished_runs(f"{n}_snapshot"), TIMEOUT)
            assert run.is_success, daemon.log_tail()
            assert run.tags["dagster/sensor_name"] == f"{name}_snapshot_sensor"
            assert run.tags["quiver/log_seq"] == "85"  # 60 rows built, 25 added
            snapshots[name] = run

        # A few more ticks: the same state requests nothing more.
        sensor = f"{DATASETS[0]}_snapshot_sensor"
        ticks_before = len(daemon.ticks(sensor))
        daemon.wait_for("two more snapshot ticks", lambda: len(daemon.ticks(sensor)) >= ticks_before + 2, 60)
        assert len(daemon.instance.get_runs()) == 2 * len(DATASETS)
        decisions = [tick.skip_reason or f"requested {list(tick.run_keys)}" for tick in daemon.ticks(sensor)]
        failed = [
            (name, tick.error.to_string() if tick.error else "")
            for name in (f"{d}_{kind}_sensor" for d in DATASETS for kind in ("source", "snapshot"))
            for tick in daemon.ticks(name)
            if tick.status == TickStatus.FAILURE
        ]
        cursor = json.loads(daemon.sensor_cursor(sensor))
        times = {name: daemon.run_times(run.run_id) for name, run in refreshes.items()}
        steps = {name: _writer_steps(daemon, run.run_id) for name, run in refreshes.items()}
    took = time.monotonic() - started

    # The writer pool (dagster.yaml: one slot): no two DuckDB writers ever ran at the same time.
    (a, b) = steps.values()
    assert len(a) == len(b) == 3
    overlaps = [(x[2], y[2]) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert not overlaps, f"writer steps of the two refresh runs overlapped: {overlaps}"

    assert not failed, f"sensor ticks failed: {failed}"
    assert cursor["last_seq"] == 85 and cursor["due"] is False
    assert "requested ['pkgs:snapshot:85']" in decisions, decisions
    print(f"\ndaemon test: {took:.0f}s with the daemon up")
    for name, t in times.items():
        print(
            f"  {name}: refresh run queued {t['created'] - landed:.1f}s after the file landed, "
            f"started {t['start'] - landed:.1f}s, finished {t['end'] - landed:.1f}s"
        )
    print("snapshot sensor decisions (pkgs):\n  " + "\n  ".join(dict.fromkeys(decisions)))

    monkeypatch.setenv("QUIVER_DATASETS", str(spec_path))
    monkeypatch.setenv("QUIVER_HOME", str(home))
    for name in DATASETS:
        rows = parts[name].to_pylist()
        found = sum(
            row["pkg_id"]
            in query.search(name, f"{row['package']}: {row['short_description']}", k=3).column("pkg_id").to_pylist()
            for row in rows
        )
        assert found == len(rows), f"{name}: only {found} of {len(rows)} new rows are found by their own text"
        assert read_manifest(home / name).snapshot_seq == 85  # served from the new snapshot


@pytest.fixture(autouse=True)
def _fresh_searchers():
    query._SEARCHERS.clear()
    yield
    query._SEARCHERS.clear()
