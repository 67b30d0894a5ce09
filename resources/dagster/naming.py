"""Asset keys and tags of a dataset: one place so assets, checks, sensors and jobs agree.

The Dagster layer below assets and sensors, so both import it without reaching up or sideways.
(The dataset's DuckDB tables are named by the engine: ``warehouse.layout_for``.)
"""

from __future__ import annotations

import dagster as dg

from quiver.resources.spec import DatasetSpec

STAGES = ("source", "rows", "embeddings", "index", "snapshot")


def key(spec: DatasetSpec, stage: str) -> dg.AssetKey:
    assert stage in STAGES, stage
    return dg.AssetKey([spec.name, stage])


def tags(spec: DatasetSpec) -> dict[str, str]:
    return {"dataset": spec.name}


def source_spec(spec: DatasetSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key(spec, "source"),
        description=f"Source Parquet of dataset {spec.name!r}: {spec.source_path}",
        group_name="sources",
        kinds={"parquet"},
        tags=tags(spec),
        metadata={"path": dg.MetadataValue.path(str(spec.source_path))},
    )
