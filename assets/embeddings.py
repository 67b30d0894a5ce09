"""``<ds>/embeddings``: new and changed rows embedded, with change records (I1)."""

import json
import time

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from quiver.resources import embedding, health, warehouse
from quiver.resources.dagster_resources import (
    WRITER_POOL,
    EmbedderResource,
    holds_writer_lock,
    key,
    mark_run,
    open_connection,
    tags,
    user_errors,
)
from quiver.resources.embed_refresh import BATCH_ROWS, RefreshResult, refresh_embeddings
from quiver.resources.embedding.chunking import ChunkSettings
from quiver.resources.embedding.progress import ProgressLog
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for


class EmbeddingsConfig(dg.Config):
    """Run config of the embeddings asset (the launchpad shows it)."""

    full_rebuild: bool = Field(
        default=False,
        description="Embed every row again and replace the embedded table and its change records whole; "
        "the index asset then rebuilds the index directory. Needed when the model's dimension changes.",
    )


def rebuild_fix(spec: DatasetSpec) -> str:
    """How to ask for a full rebuild, copy-pastable: the run config and the command that passes it."""
    asset = key(spec, "embeddings")
    config = {"ops": {asset.to_python_identifier(): {"config": {"full_rebuild": True}}}}
    return (
        f"ask for a full rebuild (it embeds every row again and rebuilds the index): set `full_rebuild: true` "
        f"in the run config of {asset.to_user_string()} (Dagster launchpad), or run\n"
        f"  dg launch -m quiver.pipelines.definitions --assets 'key:{spec.name}/rows+' "
        f"--config-json '{json.dumps(config)}'"
    )


def _runtime_kind(spec: DatasetSpec) -> str:
    """What runs the model by default here: ONNX Runtime on a CPU, torch where a CUDA GPU is
    (``$QUIVER_EMBED_BACKEND`` may choose; the embedder resource may too, at run time)."""
    try:
        backend, _ = embedding.choose_backend(None, None, spec.embeddings.quantize)
    except ValueError:
        return "onnx"
    return "pytorch" if backend == "torch" else "onnx"


def embeddings_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout_for(spec)
    model_name = spec.embeddings.identity  # "+int8" when quantized: another model, other vectors
    content = spec.embeddings.content_identity  # the model, and the chunking when not the default

    @dg.asset(
        key=key(spec, "embeddings"),
        deps=[key(spec, "rows")],
        group_name="embed",
        kinds={"duckdb", _runtime_kind(spec)},
        tags=tags(spec),
        pool=WRITER_POOL,
        description=f"Table {spec.name}_embeddings: one {model_name} vector per chunk of each row of {spec.name!r} "
        "with non-empty text (one chunk when the text fits the model's window), its offsets, the row's content "
        "hash and the seq of its last change; plus the change records.",
    )
    @user_errors
    @holds_writer_lock
    def embeddings(
        context: dg.AssetExecutionContext, config: EmbeddingsConfig, duckdb: DuckDBResource, embedder: EmbedderResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        mark_run(context)  # a writer: if its process is killed, the slot it holds can be freed
        log_line = ProgressLog(lambda line: context.log.info("%s: %s", spec.name, line), every=2.0)  # about a line a batch

        def load_model():
            model = embedder.get(model_name)
            context.log.info("%s: embedding with %s (%s, %d threads)", spec.name, model.model, model.backend, model.threads)
            return model

        def planned(plan: warehouse.ChangePlan) -> None:
            context.log.info("%s: %s", spec.name, warehouse.describe_plan(plan, BATCH_ROWS))

        result = refresh_embeddings(
            lambda: open_connection(duckdb),
            table,
            content,
            load_model,
            ChunkSettings.from_spec(spec.embeddings.chunking),
            full_rebuild=config.full_rebuild,
            progress=log_line,
            rebuild_fix=rebuild_fix(spec),
            planned=planned,
        )
        plan = result.plan
        if plan.skipped_empty:
            context.log.warning(
                "%s: skipped %d rows whose embedded text is empty or null (e.g. %s=%s); they are not indexed",
                spec.name, plan.skipped_empty, spec.primary_key, plan.skipped_examples,
            )
        if result.rows_cut:
            context.log.warning(
                "%s: %d rows are longer than %s reads and chunking is off: only their beginning is searchable; "
                "remove `chunking: {enabled: false}` to embed them whole, in chunks",
                spec.name, result.rows_cut, model_name,
            )
        with open_connection(duckdb) as conn:
            counts = (warehouse.embedded_rows(conn, table), warehouse.embedded_count(conn, table))
            dim = warehouse.vector_dim(conn, table) or 0
        summary = warehouse.describe_refresh(plan, result.committed)
        context.log.info("%s: %s", spec.name, summary)
        metadata = _metadata(result, counts, time.perf_counter() - started, summary)
        metadata |= _observed(spec, result, counts[1], dim, duckdb)
        return dg.MaterializeResult(metadata=metadata)

    return embeddings


def _metadata(result: RefreshResult, counts: tuple[int, int], seconds: float, summary: str) -> dict:
    plan, committed = result.plan, result.committed
    embedded = plan.to_embed.num_rows
    embed_seconds = result.seconds["embed"]
    return {
        "dagster/row_count": counts[0],
        "summary": summary,
        "committed": committed is not None,
        "full_rebuild": plan.rebuild,
        "rows_read": plan.rows_read,
        "rows_new": plan.new,
        "rows_changed": plan.changed,
        "rows_served_only_changed": plan.served_only.num_rows,
        "rows_unchanged": plan.unchanged,
        "rows_deleted": plan.deleted.num_rows,
        "rows_skipped_empty_text": plan.skipped_empty,
        "rows_embedded": embedded,
        "chunks": counts[1],
        "chunks_embedded": result.chunks,
        "rows_split_into_chunks": result.rows_split,
        "rows_cut_at_the_window": result.rows_cut,
        "batches": result.batches,
        "embedding_rows_per_second": round(embedded / embed_seconds, 1) if embedded else 0.0,
        "plan_seconds": round(result.seconds["plan"], 3),
        "embedding_seconds": round(embed_seconds, 3),
        "commit_seconds": round(result.seconds["commit"], 3),
        "seconds": round(seconds, 3),
        "seq_first": committed.first_seq if committed else 0,
        "seq_last": committed.last_seq if committed else plan.base_seq,
    }


def _observed(spec: DatasetSpec, result: RefreshResult, vector_count: int, dim: int, duckdb: DuckDBResource) -> dict:
    """Bytes on disk against the raw vectors, and a five-row preview of what this refresh changed."""
    return {
        "vector_dim": dg.MetadataValue.int(dim),
        "raw_vector_bytes": dg.MetadataValue.int(health.raw_vector_bytes(vector_count, dim)),
        "duckdb_file_bytes": dg.MetadataValue.int(health.duckdb_bytes(duckdb.database)),
        "preview": dg.MetadataValue.md(health.change_preview_md(result.plan, spec.primary_key, result.sample)),
    }
