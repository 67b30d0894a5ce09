"""The one place a ``Definitions`` is built: every dataset of the spec, side by side.

``QUIVER_DATASETS`` names the spec and ``QUIVER_HOME`` the state directory (see pipelines.spec).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets import dataset_assets
from pipelines.jobs import refresh_job, snapshot_job
from pipelines.schedules import refresh_schedule
from pipelines.spec import QuiverSpec, default_home, load_spec
from resources.dagster_resources import EmbedderResource, IndexResource, SearchResource
from sensors.snapshot_sensor import snapshot_sensor

DUCKDB_FILE = "quiver.duckdb"


def build_definitions(spec: QuiverSpec, home: Path) -> dg.Definitions:
    assets, jobs, schedules, sensors = [], [], [], []
    for dataset in spec.datasets:
        assets += dataset_assets(dataset)
        refresh, snapshot = refresh_job(dataset), snapshot_job(dataset)
        jobs += [refresh, snapshot]
        sensors.append(snapshot_sensor(dataset, home, snapshot))
        if schedule := refresh_schedule(dataset, refresh):
            schedules.append(schedule)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(spec, home),
    )


def build_resources(spec: QuiverSpec, home: Path) -> dict:
    return {
        "duckdb": DuckDBResource(database=str(Path(home) / DUCKDB_FILE)),
        "embedder": EmbedderResource(),
        "index_store": IndexResource(home=str(home)),
        "search": SearchResource(home=str(home), datasets=list(spec.names)),
    }


defs = build_definitions(load_spec(), default_home())
