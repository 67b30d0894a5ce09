"""``<ds>/index``: the committed changes after the log's last seq, as a new commit-log segment."""

import time
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from quiver.resources import health, warehouse
from quiver.resources.dagster_resources import (
    WRITER_POOL,
    IndexResource,
    holds_writer_lock,
    key,
    mark_run,
    open_connection,
    tags,
    user_errors,
)
from quiver.resources.index import CorruptFileError, read_stats
from quiver.resources.log_sync import sync_log
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for


class IndexConfig(dg.Config):
    """Run config of the index asset (the launchpad shows it)."""

    full_rebuild: bool = Field(
        default=False,
        description="Move the index directory aside and write it afresh from DuckDB (after a change of "
        "metric, dtype or model, or to start clean). A rebuild of the embeddings is followed automatically.",
    )


def index_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout_for(spec)

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
    @user_errors
    @holds_writer_lock
    def index(
        context: dg.AssetExecutionContext, config: IndexConfig, duckdb: DuckDBResource, index_store: IndexResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        mark_run(context)  # a writer: if its process is killed, the slot it holds can be freed
        with open_connection(duckdb) as conn:
            dim = warehouse.vector_dim(conn, table)
            rebuilt_from = warehouse.last_rebuild_seq(conn, table)
            rows = warehouse.embedded_count(conn, table)  # what the index holds once caught up (parity checks it)
        if dim is None:
            raise warehouse.WarehouseError(
                f"dataset {spec.name!r}: nothing embedded yet; materialize {spec.name}/embeddings first"
            )

        read_seconds = []

        def read_changes(after: int):
            read_started = time.perf_counter()
            with open_connection(duckdb) as conn:
                changes = warehouse.changes_after(conn, table, after)
            read_seconds.append(time.perf_counter() - read_started)
            return changes

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
        metadata |= _observed(index_store.root(spec.name), synced, rows, dim, Path(duckdb.database))
        seconds = time.perf_counter() - started
        metadata |= {
            "duckdb_read_seconds": round(sum(read_seconds), 3),
            "log_write_seconds": round(seconds - sum(read_seconds), 3),
            "seconds": round(seconds, 3),
        }
        return dg.MaterializeResult(metadata=metadata)

    return index


def _observed(root: Path, synced, rows: int, dim: int, database: Path) -> dict:
    """Row count, the segment written (seq range, ops, a preview), the log since the snapshot, and
    bytes on disk against the raw vectors. A snapshot running meanwhile may fold and remove the
    segment: what cannot be read then is left out, never failing the materialization."""
    segment = synced.segment
    index_bytes, raw = health.path_bytes(root), health.raw_vector_bytes(rows, dim)
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "segment_seq_first": dg.MetadataValue.int(segment.first if segment else 0),
        "segment_seq_last": dg.MetadataValue.int(segment.last if segment else 0),
        "index_dir_bytes": dg.MetadataValue.int(index_bytes),
        "duckdb_file_bytes": dg.MetadataValue.int(health.duckdb_bytes(database)),
        "raw_vector_bytes": dg.MetadataValue.int(raw),
        "index_to_raw_ratio": dg.MetadataValue.float(round(index_bytes / raw, 3) if raw else 0.0),
        "preview": dg.MetadataValue.md("_no change_"),
    }
    try:
        if segment:
            summary = health.segment_summary(segment.path)
            metadata |= {
                "upserts": dg.MetadataValue.int(summary.upserts),
                "deletes": dg.MetadataValue.int(summary.deletes),
                "preview": dg.MetadataValue.md(health.preview_md(summary.preview, total=summary.records)),
            }
        stats = read_stats(root)
        metadata |= {
            "snapshot_seq": dg.MetadataValue.int(stats.snapshot_seq),
            "segments_since_snapshot": dg.MetadataValue.int(stats.segments),
            "bytes_since_snapshot": dg.MetadataValue.int(stats.segment_bytes),
            "index_files": dg.MetadataValue.int(stats.files),
        }
    except (OSError, CorruptFileError):
        pass
    return metadata
