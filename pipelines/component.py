"""quiver as a Dagster Component, and the one assembly of its definitions.

``build_definitions(spec, home)`` turns a dataset spec into assets, checks, jobs, schedules,
sensors and resources; ``quiver.pipelines.definitions`` calls it for this project's own code
location, and :class:`QuiverComponent` calls it for a Dagster user's project, from a ``defs.yaml``::

    type: quiver.pipelines.component.QuiverComponent
    attributes:
      spec: datasets.yaml          # relative to this defs.yaml's folder
      home: .quiver                # the DuckDB file and one index directory per dataset (default)
      datasets: [products]         # optional: a subset of the spec's datasets
      schedules: true              # optional: the refresh_cron schedules (default true)
      sensors: true                # optional: the source and snapshot sensors (default true)
      executor: celery             # optional: in_process (default), multiprocess, celery or k8s

Importing this module reads no spec (``quiver.pipelines.definitions`` does: its ``defs``), so a
user's project can load the component without quiver's own ``datasets.yaml``. The component's
resources are keyed ``duckdb``, ``embedder``, ``index_store`` and ``search``, and its jobs and
sensors are named after the datasets: one QuiverComponent per code location.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import dagster as dg
from dagster_duckdb import DuckDBResource

from quiver.assets import dataset_assets, dataset_checks, evaluation_asset
from quiver.assets.neighbours import neighbours_asset
from quiver.pipelines.jobs import EXECUTOR_ENV, choose_executor, refresh_job, snapshot_job
from quiver.pipelines.schedules import refresh_schedule
from quiver.resources.dagster_resources import EmbedderResource, IndexResource, SearchResource
from quiver.resources.object_store import is_object_store_url
from quiver.resources.spec import QuiverSpec, SpecError, UnknownDatasetError, load_spec
from quiver.resources.spec_file import default_index_root
from quiver.sensors.snapshot_sensor import snapshot_sensor
from quiver.sensors.source_sensor import source_sensor

DUCKDB_FILE = "quiver.duckdb"


def build_definitions(
    spec: QuiverSpec, home: Path, *, schedules: bool = True, sensors: bool = True,
    executor: str | dg.ExecutorDefinition | None = None, index_root: str | None = None,
) -> dg.Definitions:
    """Every dataset of ``spec`` side by side, its state under ``home``; ``schedules``/``sensors``
    False leave those out (the jobs stay, to be run by hand or by the user's own automation).
    ``executor``: the jobs' executor, a definition or a name of quiver.pipelines.jobs.EXECUTORS;
    None reads ``$QUIVER_EXECUTOR`` (default: in_process). ``index_root``: where the index
    directories live, a directory or an ``s3://bucket/prefix`` URL; None reads ``$QUIVER_INDEX_ROOT``
    (default: ``home``)."""
    resources = build_resources(spec, home, index_root)
    if not isinstance(executor, dg.ExecutorDefinition):
        executor = choose_executor(executor, EXECUTOR_ENV if executor is None else "executor")
    assets, checks, jobs, schedule_defs, sensor_defs = [], [], [], [], []
    for dataset in spec.datasets:
        assets += [*dataset_assets(dataset), evaluation_asset(dataset)]  # evaluation: on demand, in no job
        assets.append(neighbours_asset(dataset))  # an example user of the search resource; on demand, in no job
        checks += dataset_checks(dataset)
        refresh, snapshot = refresh_job(dataset, executor), snapshot_job(dataset, executor)
        jobs += [refresh, snapshot]
        if sensors:
            sensor_defs += [
                source_sensor(dataset, resources["index_store"], refresh),
                snapshot_sensor(dataset, resources["index_store"], snapshot),
            ]
        if schedules and (schedule := refresh_schedule(dataset, refresh)):
            schedule_defs.append(schedule)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedule_defs,
        sensors=sensor_defs,
        resources=resources,
    )


def build_resources(spec: QuiverSpec, home: Path, index_root: str | None = None) -> dict:
    index_root = index_root if index_root is not None else default_index_root()
    return {
        "duckdb": DuckDBResource(database=str(Path(home) / DUCKDB_FILE)),
        "embedder": EmbedderResource(),
        "index_store": IndexResource(home=str(home), index_root=index_root),
        "search": SearchResource(
            home=str(home),
            index_root=index_root,
            datasets=list(spec.names),
            embedded_columns={d.name: list(d.embeddings.columns) for d in spec.datasets},
            separators={d.name: d.embeddings.separator for d in spec.datasets},
        ),
    }


class QuiverComponent(dg.Component, dg.Resolvable, dg.Model):
    """quiver's vector search over Parquet sources, kept beside DuckDB: per dataset of a spec the
    rows, embeddings, index and snapshot assets with their checks, the refresh and snapshot jobs,
    the source and snapshot sensors, a schedule where the spec sets ``refresh_cron``, and the
    ``duckdb``, ``embedder``, ``index_store`` and ``search`` resources."""

    spec: Annotated[str, dg.Resolver.default(
        description="The dataset spec (the datasets YAML of quiver's README), relative to this defs.yaml's folder.",
        examples=["datasets.yaml"],
    )]
    home: Annotated[str, dg.Resolver.default(
        description="The state directory (the DuckDB file, one index directory per dataset), "
        "relative to this defs.yaml's folder.",
        examples=[".quiver", "/var/lib/quiver"],
    )] = ".quiver"
    datasets: Annotated[list[str] | None, dg.Resolver.default(
        description="The spec's datasets to load; default: all of them.", examples=[["products"]],
    )] = None
    schedules: Annotated[bool, dg.Resolver.default(
        description="A refresh schedule for each dataset whose spec sets refresh_cron.",
    )] = True
    sensors: Annotated[bool, dg.Resolver.default(
        description="Each dataset's source sensor (refresh on new source files) and snapshot sensor.",
    )] = True
    executor: Annotated[str | None, dg.Resolver.default(
        description="The jobs' executor: in_process, multiprocess, celery (the quiver[celery] extra) or k8s "
        "(quiver[k8s]); default: $QUIVER_EXECUTOR, else in_process.",
        examples=["in_process", "celery"],
    )] = None
    index_root: Annotated[str | None, dg.Resolver.default(
        description="Where the index directories live: a directory (relative to this defs.yaml's folder) or an "
        "s3://bucket/prefix URL (the quiver[s3] extra); default: $QUIVER_INDEX_ROOT, else home.",
        examples=["s3://my-bucket/quiver"],
    )] = None

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(
            description="Vector search over Parquet sources, kept beside DuckDB (a usearch index per dataset).",
            tags=["vector-search", "duckdb"],
            produces=["asset", "asset_check", "job", "schedule", "sensor", "resource"],
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(
            self.load_datasets(context.path), self.home_path(context.path),
            schedules=self.schedules, sensors=self.sensors,
            executor=choose_executor(self.executor, f"QuiverComponent attribute `executor` in {context.path}")
            if self.executor is not None else None,
            index_root=self.index_root_at(context.path),
        )

    def index_root_at(self, folder: Path) -> str | None:
        if self.index_root is None or is_object_store_url(self.index_root):
            return self.index_root
        return str((Path(folder) / Path(self.index_root).expanduser()).resolve())

    def home_path(self, folder: Path) -> Path:
        return (Path(folder) / Path(self.home).expanduser()).resolve()

    def load_datasets(self, folder: Path) -> QuiverSpec:
        """The spec at ``spec`` (relative to ``folder``), narrowed to ``datasets``; a mistake in
        either attribute raises SpecError (UnknownDatasetError for a name) naming it and the fix."""
        path = (Path(folder) / Path(self.spec).expanduser()).resolve()
        if not path.is_file():
            raise SpecError(
                f"QuiverComponent attribute `spec` in {folder}: no dataset spec at {path}; "
                f"create it or set `spec` to its path, relative to that folder"
            )
        try:
            spec = load_spec(path)
        except SpecError as exc:
            raise SpecError(f"QuiverComponent attribute `spec` in {folder}: {exc}", exc.problems) from None
        if self.datasets is None:
            return spec
        unknown = [name for name in self.datasets if name not in spec.names]
        if unknown:
            raise UnknownDatasetError(
                f"QuiverComponent attribute `datasets` in {folder}: unknown dataset(s) "
                f"{', '.join(map(repr, unknown))}; {path} defines {', '.join(spec.names)}: "
                "use those names or leave `datasets` out to load them all"
            )
        if not self.datasets:
            raise SpecError(
                f"QuiverComponent attribute `datasets` in {folder}: the list is empty; "
                "name at least one of the spec's datasets or leave `datasets` out to load them all"
            )
        return spec.model_copy(update={"datasets": tuple(spec.get(name) for name in dict.fromkeys(self.datasets))})
