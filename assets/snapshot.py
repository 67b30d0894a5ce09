"""``<ds>/snapshot``: the log folded into a new published snapshot; covered segments removed."""

import time

import dagster as dg

from assets.naming import key, tags
from pipelines.spec import DatasetSpec
from resources.dagster_resources import IndexResource
from resources.index.manifest import read_manifest


def snapshot_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "snapshot"),
        deps=[key(spec, "index")],
        group_name="snapshot",
        kinds={"usearch"},
        tags=tags(spec),
        description=f"Published HNSW snapshot of {spec.name!r} (usearch file + rows file + manifest), "
        "what queries are served from together with the segments after it.",
    )
    def snapshot(context: dg.AssetExecutionContext, index_store: IndexResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        dim = read_manifest(index_store.root(spec.name)).identity.dim
        result = index_store.store(spec, dim).take_snapshot(spec.snapshots.rebuild_tombstone_percent)
        if result is None:
            context.log.info("%s: no segments after the snapshot; nothing to fold", spec.name)
            return dg.MaterializeResult(metadata={"folded_segments": 0, "seconds": round(time.perf_counter() - started, 3)})
        entry = result.entry
        return dg.MaterializeResult(
            metadata={
                "snapshot_seq": entry.seq,
                "vectors": entry.vectors,
                "tombstones": entry.tombstones,
                "snapshot_bytes": entry.total_bytes,
                "index_checksum": entry.files["index.usearch"].checksum,
                "folded_segments": result.segments_folded,
                "folded_segment_bytes": result.segment_bytes_folded,
                "changes_applied": result.changes_applied,
                "rebuilt": result.rebuilt,
                "removed_files": result.removed_files,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    return snapshot
