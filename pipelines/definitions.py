"""The one place a ``Definitions`` is built: every dataset of the spec, side by side.

``QUIVER_DATASETS`` names the spec and ``QUIVER_HOME`` the state directory (see quiver.resources.spec).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from quiver.assets import dataset_assets, dataset_checks, evaluation_asset
from quiver.assets.neighbours import neighbours_asset
from quiver.pipelines.jobs import refresh_job, snapshot_job
from quiver.pipelines.schedules import refresh_schedule
from quiver.resources.dagster_resources import EmbedderResource, IndexResource, SearchResource
from quiver.resources.spec import QuiverSpec, default_home, load_spec
from quiver.sensors.snapshot_sensor import snapshot_sensor
from quiver.sensors.source_sensor import source_sensor

DUCKDB_FILE = "quiver.duckdb"


def build_definitions(spec: QuiverSpec, home: Path) -> dg.Definitions:
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    for dataset in spec.datasets:
        assets += [*dataset_assets(dataset), evaluation_asset(dataset)]  # evaluation: on demand, in no job
        assets.append(neighbours_asset(dataset))  # an example user of the search resource; on demand, in no job
        checks += dataset_checks(dataset)
        refresh, snapshot = refresh_job(dataset), snapshot_job(dataset)
        jobs += [refresh, snapshot]
        sensors += [source_sensor(dataset, home, refresh), snapshot_sensor(dataset, home, snapshot)]
        if schedule := refresh_schedule(dataset, refresh):
            schedules.append(schedule)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
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
        "search": SearchResource(
            home=str(home),
            datasets=list(spec.names),
            embedded_columns={d.name: list(d.embeddings.columns) for d in spec.datasets},
            separators={d.name: d.embeddings.separator for d in spec.datasets},
        ),
    }


defs = build_definitions(load_spec(), default_home())
