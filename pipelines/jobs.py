"""Jobs per dataset: the whole refresh chain, and a snapshot alone (what the sensor runs)."""

from __future__ import annotations

import dagster as dg

from assets.naming import key
from pipelines.spec import DatasetSpec


def refresh_job(spec: DatasetSpec) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_refresh",
        selection=dg.AssetSelection.assets(*(key(spec, s) for s in ("rows", "embeddings", "index", "snapshot"))),
        description=f"Read {spec.name!r}'s source, embed what changed, append the commit log, snapshot.",
        tags={"dataset": spec.name},
    )


def snapshot_job(spec: DatasetSpec) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_snapshot",
        selection=dg.AssetSelection.assets(key(spec, "snapshot")),
        description=f"Fold {spec.name!r}'s commit log into a new published snapshot.",
        tags={"dataset": spec.name},
    )
