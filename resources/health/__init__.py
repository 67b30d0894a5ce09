"""Health of a dataset's index and embedded table, measured for the asset checks. No Dagster.

``recall`` (the graphs against exact search), ``parity`` (table and index key sets),
``integrity`` (files against the manifest, vectors in the table), ``reports`` (bytes and previews
for materialization metadata). The names below are the ones the Dagster layer and the tests use.
"""

from quiver.resources.health.integrity import (
    PROBLEM_KINDS,
    EmbeddingsCheck,
    IntegrityResult,
    SnapshotCheck,
    check_embeddings,
    check_snapshots,
)
from quiver.resources.health.parity import ParityResult, fingerprint, measure_parity, table_keys
from quiver.resources.health.recall import (
    DEFAULT_SWEEP,
    MAX_DELTA_GRAPH,
    SEED,
    Queries,
    RecallResult,
    ef_search_sweep,
    measure_recall,
    render_sweep_chart,
    sample_queries,
)
from quiver.resources.health.reports import (
    SegmentSummary,
    change_preview,
    change_preview_md,
    duckdb_bytes,
    path_bytes,
    preview_md,
    raw_vector_bytes,
    segment_summary,
)
from quiver.resources.values import md_table

__all__ = [
    "DEFAULT_SWEEP", "MAX_DELTA_GRAPH", "PROBLEM_KINDS", "SEED", "EmbeddingsCheck", "IntegrityResult",
    "ParityResult", "Queries", "RecallResult", "SegmentSummary", "SnapshotCheck", "change_preview",
    "change_preview_md", "check_embeddings", "check_snapshots", "duckdb_bytes", "ef_search_sweep",
    "fingerprint", "md_table", "measure_parity", "measure_recall", "path_bytes", "preview_md",
    "raw_vector_bytes", "render_sweep_chart", "sample_queries", "segment_summary", "table_keys",
]
