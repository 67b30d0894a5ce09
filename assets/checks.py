"""Asset checks per dataset: is the index healthy and good? (the measuring is in quiver.resources.health)

- ``<ds>/embeddings:embeddings_valid`` (blocking): the model's dimension, no null, NaN, infinite or
  zero vector; names the offending primary keys. Reads DuckDB (writer pool).
- ``<ds>/index:recall_at_10`` (blocking): recall@10 of the HNSW graphs against exact search over the
  same served vectors, on a seeded sample; below ``checks.recall_at_10_min`` it fails and the
  snapshot does not run, below ``checks.recall_at_10_warn`` it warns. Reads the index directory only.
- ``<ds>/index:parity``: the embedded table and the served index hold the same keys (count and an
  XXH3 fingerprint of the sorted keys; the missing and extra primary keys when not). DuckDB (pool).
- ``<ds>/snapshot:snapshot_integrity``: the snapshot files' sizes, checksums and usearch header
  agree with the manifest, and the segments after it read clean. Never opens DuckDB.
"""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from quiver.resources import health, warehouse
from quiver.resources.dagster_resources import WRITER_POOL, EmbedderResource, IndexResource, key, open_connection
from quiver.resources.index import IndexReader, read_stats
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
_LIST_LIMIT = 20


def dataset_checks(spec: DatasetSpec) -> list[dg.AssetChecksDefinition]:
    return [embeddings_valid_check(spec), recall_check(spec), parity_check(spec), snapshot_integrity_check(spec)]


def _problems_md(problems) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")


def _unchanged(context: dg.AssetCheckExecutionContext, state: dict) -> dg.AssetCheckResult | None:
    """The check's last completed result, passed again, if it passed on this very state (the seqs
    it measured; a seq names one state of the table or the index, since nothing is rewritten in
    place). A refresh that changed nothing then checks nothing: its run costs the plan, not the
    measurements (``make bench-refresh-cost``). None when anything moved, or the last run failed."""
    check = context.check_specs[0].key
    for record in context.instance.event_log_storage.get_asset_check_execution_history(check, limit=5):
        if record.run_id == context.run.run_id or record.event is None:
            continue  # this run's own planned evaluation
        evaluation = record.event.dagster_event.event_specific_data if record.event.dagster_event else None
        metadata = getattr(evaluation, "metadata", None)
        if not getattr(evaluation, "passed", False) or metadata is None or "state" not in metadata:
            return None
        if metadata["state"].value != state:
            return None
        return dg.AssetCheckResult(
            passed=True,
            description=f"unchanged since run {record.run_id[:8]}, which found: {evaluation.description}",
            metadata={**metadata, "reused_from_run": record.run_id},
        )
    return None


def _unreadable(error: Exception) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=ERROR, description=str(error), metadata={"error": str(error)})


def embeddings_valid_check(spec: DatasetSpec) -> dg.AssetChecksDefinition:
    table = layout_for(spec)

    @dg.asset_check(
        asset=key(spec, "embeddings"),
        name="embeddings_valid",
        blocking=True,
        pool=WRITER_POOL,
        description=f"Every vector of {spec.name}_embeddings has the model's dimension and is finite and non-zero "
        "(cosine cannot rank a zero vector); names the offending primary keys. Blocks the index.",
    )
    def embeddings_valid(
        context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource, embedder: EmbedderResource
    ) -> dg.AssetCheckResult:
        with open_connection(duckdb) as conn:
            state = {"seq": warehouse.last_seq(conn, table), "model": spec.embeddings.identity}
        if reused := _unchanged(context, state):
            return reused
        expected = embedder.get(spec.embeddings.model).dim
        with open_connection(duckdb) as conn:
            found = health.check_embeddings(conn, table, expected, limit=_LIST_LIMIT)
        problems = []
        if found.dim is not None and found.dim != expected:
            problems.append(
                f"vectors have {found.dim} dimensions, model {spec.embeddings.model!r} gives {expected}: "
                "run the embeddings asset with `full_rebuild: true`"
            )
        for kind, pks in found.examples.items():
            problems.append(
                f"{found.counts[kind]} {'row' if found.counts[kind] == 1 else 'rows'} with a {kind.replace('_', ' ')}: "
                f"{spec.primary_key} = "
                f"{', '.join(map(repr, pks))}{' ...' if found.counts[kind] > len(pks) else ''}"
            )
        return dg.AssetCheckResult(
            passed=found.ok,
            severity=ERROR,
            description="; ".join(problems)
            if problems
            else f"{found.rows:,} vectors of {expected} dimensions, all valid",
            metadata={
                "rows": found.rows,
                "dim": found.dim or 0,
                "model_dim": expected,
                **{f"{kind}_rows": n for kind, n in found.counts.items()},
                "bad_rows": found.bad_rows,
                "offending_keys": dg.MetadataValue.json(found.examples),
                "seconds": round(found.seconds, 3),
                "state": dg.MetadataValue.json(state),
            },
        )

    return embeddings_valid


def recall_check(spec: DatasetSpec) -> dg.AssetChecksDefinition:
    bounds = spec.checks

    @dg.asset_check(
        asset=key(spec, "index"),
        name="recall_at_10",
        blocking=True,
        description=f"Recall@10 of {spec.name!r}'s HNSW graphs against exact search over the same served vectors, "
        f"{bounds.sample} sampled rows as queries (seeded; each leaves itself out). Fails below "
        f"{bounds.recall_at_10_min} (the snapshot then does not run), warns below {bounds.recall_at_10_warn}.",
    )
    def recall_at_10(context: dg.AssetCheckExecutionContext, index_store: IndexResource) -> dg.AssetCheckResult:
        started = time.perf_counter()
        try:
            stats = read_stats(index_store.root(spec.name))
        except (CorruptFileError, IndexNotBuiltError, FileNotFoundError) as error:
            return _unreadable(error)
        state = {"snapshot_seq": stats.snapshot_seq, "last_seq": stats.last_seq, "sample": bounds.sample,
                 "ef_search": spec.vectors.ef_search}
        if reused := _unchanged(context, state):
            return reused
        try:
            result = health.measure_recall(IndexReader(index_store.root(spec.name)), sample=bounds.sample, k=10)
        except (CorruptFileError, IndexNotBuiltError) as error:
            return _unreadable(error)
        if result.recall < bounds.recall_at_10_min:
            passed, severity, verdict = False, ERROR, f"below the bound {bounds.recall_at_10_min}"
        elif result.recall < bounds.recall_at_10_warn:
            passed, severity, verdict = False, WARN, f"below the warning bound {bounds.recall_at_10_warn}"
        else:
            passed, severity, verdict = True, ERROR, f"at least {bounds.recall_at_10_warn}"
        fix = (
            "; raise vectors.ef_search (or m / ef_construction, which rebuild the graph at the next snapshot)"
            if not passed
            else ""
        )
        return dg.AssetCheckResult(
            passed=passed,
            severity=severity,
            description=f"recall@{result.k} {result.recall:.4f} at ef_search={result.ef_search} over "
            f"{result.queries} queries: {verdict}{fix}"
            + (
                ""
                if result.delta_graph
                else f" ({result.delta_vectors:,} vectors after the snapshot were searched exactly, as served: "
                "the graph the next snapshot builds is measured by the next refresh's check)"
            ),
            metadata={
                "recall_at_10": result.recall,
                "sample_size": result.queries,
                "k": result.k,
                "ef_search": result.ef_search,
                "recall_min": bounds.recall_at_10_min,
                "recall_warn": bounds.recall_at_10_warn,
                "live_vectors": result.live_vectors,
                "snapshot_graph_vectors": result.graph_vectors,
                "delta_vectors": result.delta_vectors,
                "delta_searched_through_a_graph": result.delta_graph,
                "served_seq": result.served_seq,
                "latency_ms_p50": round(result.latency_ms_p50, 4),
                "latency_ms_p95": round(result.latency_ms_p95, 4),
                "search_seconds": round(result.seconds, 3),
                "seconds": round(time.perf_counter() - started, 3),
                "worst_queries": dg.MetadataValue.json([{"key": k, "recall": r} for k, r in result.worst]),
                "reader_problems": _problems_md(result.problems),
                "state": dg.MetadataValue.json(state),
            },
        )

    return recall_at_10


def parity_check(spec: DatasetSpec) -> dg.AssetChecksDefinition:
    table = layout_for(spec)

    @dg.asset_check(
        asset=key(spec, "index"),
        name="parity",
        pool=WRITER_POOL,
        description=f"{spec.name}_embeddings and the served index hold the same keys: count and an XXH3 "
        "fingerprint of the sorted keys; the missing and extra primary keys when they differ.",
    )
    def parity(
        context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource, index_store: IndexResource
    ) -> dg.AssetCheckResult:
        started = time.perf_counter()
        with open_connection(duckdb) as conn:
            table_seq = warehouse.last_seq(conn, table)
            try:
                stats = read_stats(index_store.root(spec.name))
            except (CorruptFileError, IndexNotBuiltError, FileNotFoundError) as error:
                return _unreadable(error)
            state = {"table_seq": table_seq, "snapshot_seq": stats.snapshot_seq, "log_seq": stats.last_seq}
            if reused := _unchanged(context, state):
                return reused
            keys = health.table_keys(conn, table)
        try:
            result = health.measure_parity(keys, IndexReader(index_store.root(spec.name)), table_seq, _LIST_LIMIT)
        except (CorruptFileError, IndexNotBuiltError) as error:
            return _unreadable(error)
        if result.ok:
            description = f"{result.table_count:,} keys in both, fingerprint {result.table_fingerprint}"
        else:
            description = (
                f"{result.missing_count} keys missing from the index ({spec.primary_key} = {result.missing}), "
                f"{result.extra_count} extra in it ({spec.primary_key} = {result.extra}); index serves seq "
                f"{result.served_seq}, DuckDB is at {result.table_seq}: materialize {spec.name}/index with "
                "`full_rebuild: true` to rebuild it from DuckDB"
            )
        return dg.AssetCheckResult(
            passed=result.ok,
            severity=ERROR,
            description=description,
            metadata={
                "table_rows": result.table_count,
                "index_vectors": result.index_count,
                "table_fingerprint": result.table_fingerprint,
                "index_fingerprint": result.index_fingerprint,
                "table_seq": result.table_seq,
                "served_seq": result.served_seq,
                "missing_count": result.missing_count,
                "extra_count": result.extra_count,
                "missing_keys": dg.MetadataValue.json(result.missing),
                "extra_keys": dg.MetadataValue.json(result.extra),
                "reader_problems": _problems_md(result.problems),
                "seconds": round(time.perf_counter() - started, 3),
                "state": dg.MetadataValue.json(state),
            },
        )

    return parity


def snapshot_integrity_check(spec: DatasetSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key(spec, "snapshot"),
        name="snapshot_integrity",
        description=f"{spec.name!r}'s published snapshot (and its fallback): file sizes, XXH3-128 checksums and the "
        "usearch header agree with the manifest; the segments after it read clean. Never opens DuckDB.",
    )
    def snapshot_integrity(index_store: IndexResource) -> dg.AssetCheckResult:
        result = health.check_snapshots(index_store.root(spec.name))
        current = result.current
        metadata = {
            "snapshot_seq": current.seq if current else 0,
            "vectors": current.vectors if current else 0,
            "tombstones": current.tombstones if current else 0,
            "snapshot_bytes": current.bytes if current else 0,
            "index_checksum": current.checksums.get("index.usearch", "") if current else "",
            "rows_checksum": current.checksums.get("rows.parquet", "") if current else "",
            "snapshots_checked": len(result.snapshots),
            "segments_after": result.segments_after,
            "segment_bytes_after": result.segment_bytes_after,
            "problems": _problems_md(result.problems),
            "seconds": round(result.seconds, 3),
        }
        if not result.ok:
            return dg.AssetCheckResult(
                passed=False, severity=ERROR, description="; ".join(result.problems), metadata=metadata
            )
        if result.problems:  # only the fallback snapshot is damaged
            return dg.AssetCheckResult(
                passed=False, severity=WARN, description="; ".join(result.problems), metadata=metadata
            )
        described = (
            f"snapshot seq {current.seq}: {current.vectors:,} vectors, checksums and header match the manifest"
            if current
            else "no snapshot published yet"
        )
        return dg.AssetCheckResult(passed=True, description=described, metadata=metadata)

    return snapshot_integrity
