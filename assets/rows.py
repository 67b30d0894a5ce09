"""``<ds>/rows``: the source Parquet read into DuckDB, validated."""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from quiver.resources import health, warehouse
from quiver.resources.dagster_resources import (
    WRITER_POOL,
    check_before_work,
    holds_writer_lock,
    key,
    mark_run,
    open_connection,
    tags,
    user_errors,
)
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for


def rows_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout_for(spec)

    @dg.asset(
        key=key(spec, "rows"),
        deps=[key(spec, "source")],
        group_name="ingest",
        kinds={"duckdb", "parquet"},
        tags=tags(spec),
        pool=WRITER_POOL,
        description=f"Table {spec.name}_rows: the source rows of {spec.name!r} (primary key "
        f"{spec.primary_key!r}, served and embedded columns), checked for a unique non-null key.",
    )
    @user_errors
    @holds_writer_lock
    def rows(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        mark_run(context)  # a writer: if its process is killed, the slot it holds can be freed
        check_before_work(spec)
        files = warehouse.resolve_source_files(spec.name, spec.source_path)
        with open_connection(duckdb) as conn:
            loaded = warehouse.load_source(conn, table, files, time_column=spec.time_column)
        context.log.info("%s: read %d rows from %d files", spec.name, loaded.rows_read, len(files))
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(loaded.rows_in_table),
            "rows_read": dg.MetadataValue.int(loaded.rows_read),
            "source_files": dg.MetadataValue.int(len(files)),
            "source_bytes": dg.MetadataValue.int(sum(health.path_bytes(f) for f in files)),
            "duckdb_file_bytes": dg.MetadataValue.int(health.duckdb_bytes(duckdb.database)),
            "duckdb_file": dg.MetadataValue.path(duckdb.database),
            "columns": ", ".join(loaded.columns),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
        if spec.time_column:  # append mode: the next refresh reads only rows above this
            metadata["time_watermark"] = _number_or_text(loaded.watermark)
        return dg.MaterializeResult(metadata=metadata)

    return rows


def _number_or_text(value):
    return value if isinstance(value, (int, float)) or value is None else str(value)
