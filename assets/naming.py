"""Asset keys, tags and the warehouse layout of a dataset: one place so every stage agrees."""

from __future__ import annotations

import dagster as dg

from pipelines.spec import DatasetSpec
from resources.warehouse import TableLayout

STAGES = ("source", "rows", "embeddings", "index", "snapshot")


def key(spec: DatasetSpec, stage: str) -> dg.AssetKey:
    assert stage in STAGES, stage
    return dg.AssetKey([spec.name, stage])


def tags(spec: DatasetSpec) -> dict[str, str]:
    return {"dataset": spec.name}


def layout(spec: DatasetSpec) -> TableLayout:
    return TableLayout(
        dataset=spec.name,
        primary_key=spec.primary_key,
        text_columns=tuple(spec.embeddings.columns),
        separator=spec.embeddings.separator,
        served_columns=tuple(spec.columns) if spec.columns is not None else None,
        refresh_mode=spec.refresh_mode,
    )


def source_spec(spec: DatasetSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key(spec, "source"),
        description=f"Source Parquet of dataset {spec.name!r}: {spec.source_path}",
        group_name="sources",
        kinds={"parquet"},
        tags=tags(spec),
        metadata={"path": dg.MetadataValue.path(str(spec.source_path))},
    )
