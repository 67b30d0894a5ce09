"""Per-dataset sensor that requests a refresh when the source Parquet files change.

Cursor (JSON): ``{"generation", "digest", "files": {path: [size, mtime_ns, fingerprint]}}`` (see
``source_listing``). ``generation`` counts content changes; it starts at the time the cursor was
first written, so run keys never repeat, even when the content returns to an earlier state or the
cursor is reset. Run key: ``<ds>:source:<generation>:<digest>``: one change gives one run, across
ticks and daemon restarts. A file whose time changed but whose content did not updates the cursor
and requests nothing.

First tick (no cursor): if the dataset has no index yet it requests the first build; otherwise it
records the source as the baseline and waits for changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg

from quiver.resources.dagster_resources import IndexResource, reap_dead_runs
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import SourceNotFoundError
from quiver.resources.warehouse.source_listing import FileState, compare, content_digest, scan
from quiver.sensors.settings import sensor_interval_seconds


def _read_cursor(cursor: str | None) -> tuple[int | None, dict[str, FileState]]:
    if not cursor:
        return None, {}
    data = json.loads(cursor)
    return int(data["generation"]), {path: FileState.from_list(v) for path, v in data["files"].items()}


def _cursor(generation: int, files: dict[str, FileState]) -> str:
    return json.dumps(
        {
            "generation": generation,
            "digest": content_digest(files),
            "files": {p: s.as_list() for p, s in sorted(files.items())},
        }
    )


def source_sensor(spec: DatasetSpec, index: IndexResource, job) -> dg.SensorDefinition:
    """``index``: where the dataset's index is published (whether one exists decides the first tick)."""

    @dg.sensor(
        name=f"{spec.name}_source_sensor",
        job=job,
        minimum_interval_seconds=sensor_interval_seconds("source"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests a refresh of {spec.name!r} when its source Parquet files ({spec.source}) are "
        "added, changed or removed. Reads file sizes and times, and hashes only files that changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        if context.instance_ref is not None:  # (a test's bare context has no instance)
            for run_id in reap_dead_runs(context.instance):  # else the refresh it requests waits forever
                context.log.warning("run %s: its process is gone (killed?); marked it failed, freed its writer slot", run_id)
        generation, before = _read_cursor(context.cursor)
        try:
            now = scan(spec.name, spec.source_path, before)
        except SourceNotFoundError as error:  # nothing to refresh from; the cursor keeps the last state
            return dg.SkipReason(str(error))
        if now.incomplete:
            names = ", ".join(Path(p).name for p in now.incomplete)
            return dg.SkipReason(f"{spec.name}: waiting for {names}: not a complete Parquet file yet (no footer)")
        if generation is None:
            generation = time.time_ns() // 1_000_000
            if index.built(spec.name):
                return dg.SensorResult(
                    skip_reason=f"{spec.name}: recorded {len(now.files)} source files as the baseline; "
                    "changes from now on request a refresh",
                    cursor=_cursor(generation, now.files),
                )
            reason = f"{spec.name}: no index yet; {len(now.files)} source files"
        else:
            changes = compare(before, now.files)
            if not changes.any_content:
                touched = f" ({len(changes.touched)} touched, content unchanged)" if changes.touched else ""
                return dg.SensorResult(
                    skip_reason=f"{spec.name}: no change in {len(now.files)} source files{touched}",
                    cursor=_cursor(generation, now.files),
                )
            generation += 1
            reason = f"{spec.name}: {changes.describe()}"
        digest = content_digest(now.files)
        context.log.info("%s: refresh requested: %s", spec.name, reason)
        request = dg.RunRequest(
            run_key=f"{spec.name}:source:{generation}:{digest}",
            tags={"dataset": spec.name, "quiver/source_digest": digest},
        )
        return dg.SensorResult(run_requests=[request], cursor=_cursor(generation, now.files))

    return _sensor
