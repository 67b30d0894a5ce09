"""``<ds>/index``: the committed changes after the log's last seq, as a new commit-log segment."""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.naming import key, layout, tags
from pipelines.spec import DatasetSpec
from resources import warehouse
from resources.dagster_resources import WRITER_POOL, IndexResource, open_connection
from resources.index import SequenceError


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
    def index(context: dg.AssetExecutionContext, duckdb: DuckDBResource, index_store: IndexResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        with open_connection(duckdb) as conn:
            dim = warehouse.vector_dim(conn, table)
            if dim is None:
                raise warehouse.WarehouseError(f"dataset {spec.name!r}: nothing embedded yet; materialize {spec.name}/embeddings first")
            store = index_store.store(spec, dim)
            store.open()
            after = store.last_seq()
            changes, last = warehouse.changes_after(conn, table, after)
        if last < after:
            raise SequenceError(
                f"dataset {spec.name!r}: the index at {store.root} is ahead of DuckDB (log seq {after}, "
                f"DuckDB seq {last}); it belongs to another database: delete {store.root} and materialize again"
            )
        metadata = {"log_seq_before": after, "log_seq_after": last, "records": 0, "segment_bytes": 0}
        if changes is not None:
            ref = store.append_segment(changes, after + 1, last)
            context.log.info("%s: wrote segment %s (%d records)", spec.name, ref.name, changes.num_rows)
            metadata |= {"records": changes.num_rows, "segment_bytes": ref.bytes, "segment": dg.MetadataValue.path(str(ref.path))}
        else:
            context.log.info("%s: the log is up to date at seq %d", spec.name, after)
        return dg.MaterializeResult(metadata={**metadata, "seconds": round(time.perf_counter() - started, 3)})

    return index
