"""The warehouse: DuckDB statements for the system of record (rows, embeddings, change records). No Dagster.

``layout`` names the tables and columns, ``source`` loads the source Parquet, ``changes`` plans the
embedding diff and commits it with its change records, ``source_listing`` watches the source files
for the sensor. The names below are the ones the Dagster layer and the tests use.
"""

from quiver.resources.warehouse.changes import (
    REBUILD_FIX,
    ROWID,
    ChangePlan,
    CommitResult,
    changes_after,
    commit_changes,
    describe_plan,
    describe_refresh,
    embedded_count,
    embedded_rows,
    embedded_state,
    last_rebuild_seq,
    last_seq,
    plan_changes,
    read_rows,
    require_dimension,
    vector_dim,
)
from quiver.resources.warehouse.layout import (
    CONTENT_HASH,
    INTERNAL,
    KEY,
    OP,
    SEQ,
    SERVED_HASH,
    TEXT,
    VECTOR,
    ConcurrentWriteError,
    DimensionMismatchError,
    SourceNotFoundError,
    TableLayout,
    WarehouseError,
    layout_for,
    q,
    table_exists,
    writer_settings,
)
from quiver.resources.warehouse.source import LoadResult, load_source, resolve_source_files, schema_problems

__all__ = [
    "CONTENT_HASH", "INTERNAL", "KEY", "OP", "REBUILD_FIX", "ROWID", "SEQ", "SERVED_HASH", "TEXT", "VECTOR",
    "ChangePlan", "CommitResult", "ConcurrentWriteError", "DimensionMismatchError", "LoadResult",
    "SourceNotFoundError", "TableLayout", "WarehouseError", "changes_after", "commit_changes",
    "describe_plan", "describe_refresh", "embedded_count", "embedded_rows", "embedded_state", "last_rebuild_seq", "last_seq", "layout_for",
    "load_source", "plan_changes", "q", "read_rows", "require_dimension", "resolve_source_files", "schema_problems", "table_exists",
    "vector_dim", "writer_settings",
]
