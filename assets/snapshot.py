"""``<ds>/snapshot``: the log folded into a new published snapshot; covered segments removed."""

import time

import dagster as dg

from quiver.resources import health
from quiver.resources.dagster_resources import IndexResource, key, tags, user_errors
from quiver.resources.index import CorruptFileError, LogStats, read_stats
from quiver.resources.index.manifest import read_manifest
from quiver.resources.index.snapshot import TEXT_DIR
from quiver.resources.spec import DatasetSpec


def snapshot_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "snapshot"),
        deps=[key(spec, "index")],
        group_name="snapshot",
        kinds={"usearch", "tantivy"},
        tags=tags(spec),
        description=f"Published HNSW snapshot of {spec.name!r} (usearch file + rows file + the full-text "
        "index + manifest), what queries are served from together with the segments after it.",
    )
    @user_errors
    def snapshot(context: dg.AssetExecutionContext, index_store: IndexResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        root = index_store.root(spec.name)
        dim = read_manifest(root).identity.dim
        before, dir_before = _stats(root), health.path_bytes(root)
        result = index_store.store(spec, dim).take_snapshot(spec.snapshots.rebuild_tombstone_percent)
        if result is None:
            context.log.info("%s: no segments after the snapshot; nothing to fold", spec.name)
            return dg.MaterializeResult(
                metadata={
                    "dagster/row_count": dg.MetadataValue.int(_published_vectors(root)),
                    "snapshot_seq": dg.MetadataValue.int(read_manifest(root).snapshot_seq),
                    "folded_segments": 0,
                    "seconds": round(time.perf_counter() - started, 3),
                }
            )
        entry = result.entry
        after, dir_after = _stats(root), health.path_bytes(root)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(entry.vectors),
                "snapshot_seq": entry.seq,
                "vectors": entry.vectors,
                "tombstones": entry.tombstones,
                "tombstone_percent": round(100.0 * entry.tombstones / max(1, entry.vectors), 2),
                "snapshot_bytes": entry.total_bytes,
                "text_index_bytes": dg.MetadataValue.int(
                    sum(f.bytes for name, f in entry.files.items() if name.startswith(f"{TEXT_DIR}/"))
                ),
                "index_checksum": entry.files["index.usearch"].checksum,
                "rows_checksum": entry.files["rows.parquet"].checksum,
                "folded_segments": result.segments_folded,
                "folded_segment_bytes": result.segment_bytes_folded,
                "changes_applied": result.changes_applied,
                "rebuilt": result.rebuilt,
                "removed_files": result.removed_files,
                "index_dir_bytes_before": dg.MetadataValue.int(dir_before),
                "index_dir_bytes": dg.MetadataValue.int(dir_after),
                "raw_vector_bytes": dg.MetadataValue.int(health.raw_vector_bytes(entry.vectors, dim)),
                "summary": dg.MetadataValue.md(_summary(before, after, dir_before, dir_after, result)),
                "snapshot_dir": dg.MetadataValue.path(str(root / entry.dir)),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    return snapshot


def _stats(root) -> LogStats | None:
    """The log's stats for the summary; None if a concurrent writer kept changing it (never fails the asset)."""
    try:
        return read_stats(root)
    except (OSError, CorruptFileError):
        return None


def _published_vectors(root) -> int:
    entry = read_manifest(root).snapshot
    return entry.vectors if entry else 0


def _summary(before: LogStats | None, after: LogStats | None, dir_before: int, dir_after: int, result) -> str:
    """Before and after this snapshot, side by side (the UI renders the markdown table)."""
    if before is None or after is None:
        return f"Folded {result.segments_folded} segments; index directory {dir_before:,} -> {dir_after:,} bytes."
    rows = [
        ["snapshot seq", before.snapshot_seq, after.snapshot_seq],
        ["vectors", before.snapshot_vectors, after.snapshot_vectors],
        ["tombstones", before.snapshot_tombstones, after.snapshot_tombstones],
        ["snapshot bytes", before.snapshot_bytes, after.snapshot_bytes],
        ["segments after the snapshot", before.segments, after.segments],
        ["segment bytes after the snapshot", before.segment_bytes, after.segment_bytes],
        ["files in the index directory", before.files, after.files],
        ["index directory bytes", dir_before, dir_after],
    ]
    note = (
        f"\n\nFolded {result.segments_folded} segments ({result.changes_applied:,} changes)"
        f"{'; rebuilt the graph (tombstones dropped)' if result.rebuilt else ''}; removed {result.removed_files} files."
    )
    return health.md_table(["", "before", "after"], rows) + note
