"""``<ds>/index``: the committed changes after the log's last seq, as a new commit-log segment."""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from assets.naming import key, layout, tags
from pipelines.spec import DatasetSpec
from resources import warehouse
from resources.dagster_resources import WRITER_POOL, IndexResource, open_connection
from resources.log_sync import sync_log


class IndexConfig(dg.Config):
    """Run config of the index asset (the launchpad shows it)."""

    full_rebuild: bool = Field(
        default=False,
        description="Move the index directory aside and write it afresh from DuckDB (after a change of "
        "metric, dtype or model, or to start clean). A rebuild of the embeddings is followed automatically.",
    )


def index_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout(spec)

    @dg.asset(
        key=key(spec, "index"),
        deps=[key(spec, "embeddings")],
        group_name="index",
        kinds={"parquet", "usearch"},
        tags=tags(spec),
        pool=WRITER_POOL,
        description=f"Commit log of {spec.name!r}'s HNSW index: immutable Parquet segments of the changes "
        "since the log's last seq. Idempotent: a rerun after any crash catches up.",
    )
    def index(
        context: dg.AssetExecutionContext, config: IndexConfig, duckdb: DuckDBResource, index_store: IndexResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        with open_connection(duckdb) as conn:
            dim = warehouse.vector_dim(conn, table)
            rebuilt_from = warehouse.last_rebuild_seq(conn, table)
        if dim is None:
            raise warehouse.WarehouseError(
                f"dataset {spec.name!r}: nothing embedded yet; materialize {spec.name}/embeddings first"
            )

        def read_changes(after: int):
            with open_connection(duckdb) as conn:
                return warehouse.changes_after(conn, table, after)

        synced = sync_log(index_store.store(spec, dim), read_changes, rebuilt_from, config.full_rebuild)
        for problem in synced.recovery.problems:
            context.log.error("%s: %s", spec.name, problem)
        if synced.moved_aside:
            context.log.error(
                "%s: rebuilt the index from DuckDB; the damaged directory is at %s", spec.name, synced.moved_aside
            )
        metadata = {
            "log_seq_before": synced.seq_before,
            "log_seq_after": synced.seq_after,
            "records": synced.records,
            "segment_bytes": synced.segment.bytes if synced.segment else 0,
            "repaired_problems": len(synced.recovery.problems),
            "rebuilt_from_duckdb": synced.rebuilt,
        }
        if synced.segment:
            metadata["segment"] = dg.MetadataValue.path(str(synced.segment.path))
        if synced.recovery.problems:
            metadata["repairs"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in synced.recovery.problems))
        return dg.MaterializeResult(metadata={**metadata, "seconds": round(time.perf_counter() - started, 3)})

    return index
