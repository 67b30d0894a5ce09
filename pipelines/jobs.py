"""Jobs per dataset: a refresh (source -> rows -> embeddings -> commit log) and a snapshot.

The refresh leaves folding the log to the snapshot job, which the snapshot sensor requests when
the spec's thresholds are crossed; the snapshot job never opens DuckDB, so it does not wait for
the writer pool. Both run their steps in the run's own process: the steps follow one another
anyway (one writer at a time), and a process per step would pay Dagster's start-up and the
model's load again for each.
"""

from __future__ import annotations

import dagster as dg

from quiver.resources.dagster_resources import key
from quiver.resources.spec import DatasetSpec


def refresh_job(spec: DatasetSpec) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_refresh",
        selection=dg.AssetSelection.assets(*(key(spec, s) for s in ("rows", "embeddings", "index"))),
        description=f"Read {spec.name!r}'s source, embed what changed, append the changes to the commit log.",
        tags={"dataset": spec.name},
        executor_def=dg.in_process_executor,
    )


def snapshot_job(spec: DatasetSpec) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_snapshot",
        selection=dg.AssetSelection.assets(key(spec, "snapshot")),
        description=f"Fold {spec.name!r}'s commit log into a new published snapshot.",
        tags={"dataset": spec.name},
        executor_def=dg.in_process_executor,
    )
