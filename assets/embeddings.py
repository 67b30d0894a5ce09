"""``<ds>/embeddings``: new and changed rows embedded, with change records (I1)."""

import time

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource

from assets.naming import key, layout, tags
from pipelines.spec import DatasetSpec
from resources import warehouse
from resources.dagster_resources import WRITER_POOL, EmbedderResource, open_connection


def embeddings_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout(spec)
    model_name = spec.embeddings.model

    @dg.asset(
        key=key(spec, "embeddings"),
        deps=[key(spec, "rows")],
        group_name="embed",
        kinds={"duckdb", "pytorch"},
        tags=tags(spec),
        pool=WRITER_POOL,
        description=f"Table {spec.name}_embeddings: one {model_name} vector per row of {spec.name!r} with "
        "non-empty text, its content hash and the seq of its last change; plus the change records.",
    )
    def embeddings(
        context: dg.AssetExecutionContext, duckdb: DuckDBResource, embedder: EmbedderResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        with open_connection(duckdb) as conn:
            plan = warehouse.plan_changes(conn, table, model_name)
        if plan.skipped_empty:
            context.log.warning(
                "%s: skipped %d rows whose embedded text is empty or null (e.g. %s=%s); they are not indexed",
                spec.name, plan.skipped_empty, spec.primary_key, plan.skipped_examples,
            )
        texts = plan.to_embed.column(warehouse.TEXT).to_pylist()
        embed_started = time.perf_counter()
        vectors = np.empty((0, 0), dtype=np.float32)
        if texts:  # the connection is closed while the model runs
            vectors = embedder.get(model_name).embed(
                texts, progress=lambda done, total: context.log.info("%s: embedded %d/%d", spec.name, done, total)
            )
        embed_seconds = time.perf_counter() - embed_started
        with open_connection(duckdb) as conn:
            committed = warehouse.commit_changes(conn, table, plan, vectors)
        return dg.MaterializeResult(
            metadata={
                "rows_read": plan.rows_read,
                "rows_new": plan.new,
                "rows_changed": plan.changed,
                "rows_served_only_changed": plan.served_only.num_rows,
                "rows_unchanged": plan.unchanged,
                "rows_deleted": plan.deleted.num_rows,
                "rows_skipped_empty_text": plan.skipped_empty,
                "rows_embedded": len(texts),
                "embedding_rows_per_second": round(len(texts) / embed_seconds, 1) if texts else 0.0,
                "embedding_seconds": round(embed_seconds, 3),
                "seq_first": committed.first_seq if committed else 0,
                "seq_last": committed.last_seq if committed else plan.base_seq,
                "committed": committed is not None,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    return embeddings
