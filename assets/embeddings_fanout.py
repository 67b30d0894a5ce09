"""``<ds>/embeddings`` as partitioned work, when the spec sets ``embeddings.fan_out`` above 1.

A graph-backed asset of three ops over the engine (``resources/embed_fanout.py``):

    plan     (writer pool, writer lock)  the diff, its rows staged as parts; one dynamic output each
    embed    (no pool, no DuckDB)         one step per part, mapped: any executor runs them at once
    commit   (writer pool, writer lock)  the parts collected and committed, one transaction each

The asset's key, deps, group, kinds, tags, run config (``full_rebuild``) and metadata keys are the
single-step asset's (``assets/embeddings.py``), plus ``fan_out``, ``parts``, ``parts_already_committed``,
``rows_stale`` and ``embedding_seconds_per_part``. A full rebuild is not fanned out: the plan op runs
the single-step refresh (one transaction replaces the table) and stages no parts. The staging
directory is ``$QUIVER_STAGING``, else ``<home>/.staging``: with workers on several machines, a
volume every step mounts at the same path. Re-executing a failed run from its failure reuses the
plan's staged parts (a part already embedded or committed is not done twice).
"""

import dataclasses
import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from quiver.assets.embeddings import EmbeddingsConfig, _metadata, _observed, _runtime_kind, rebuild_fix
from quiver.resources import warehouse
from quiver.resources.dagster_resources import (
    WRITER_POOL,
    EmbedderResource,
    IndexResource,
    key,
    mark_run,
    open_connection,
    tags,
    user_errors,
    writer_step,
)
from quiver.resources.embed_fanout import commit_parts, embed_part, plan_parts, staging_root
from quiver.resources.embed_refresh import BATCH_ROWS, RefreshResult, refresh_embeddings
from quiver.resources.embedding.chunking import ChunkSettings
from quiver.resources.embedding.progress import ProgressLog
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for


def embeddings_fanout_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    table = layout_for(spec)
    model_name, content = spec.embeddings.identity, spec.embeddings.content_identity
    chunking = ChunkSettings.from_spec(spec.embeddings.chunking)
    name = spec.name

    def load_model(context, embedder: EmbedderResource):
        model = embedder.get(model_name)
        context.log.info("%s: embedding with %s (%s, %d threads)", name, model.model, model.backend, model.threads)
        return model

    @dg.op(
        name=f"{name}_plan_embeddings",
        ins={"rows": dg.In(dg.Nothing)},
        out={"plan": dg.Out(dict), "parts": dg.DynamicOut(dict)},
        pool=WRITER_POOL,
        tags=tags(spec),
        description=f"Diff {name}_rows against {name}_embeddings and stage the rows to embed in parts.",
    )
    @user_errors
    def plan(context: dg.OpExecutionContext, config: EmbeddingsConfig, duckdb: DuckDBResource,
             embedder: EmbedderResource, index_store: IndexResource):
        started = time.time()
        mark_run(context)
        with writer_step(context, duckdb, f"{name}/embeddings (plan)"):
            if config.full_rebuild:  # one transaction replaces the table: the single-step path
                result = refresh_embeddings(
                    lambda: open_connection(duckdb), table, content, lambda: load_model(context, embedder), chunking,
                    full_rebuild=True, rebuild_fix=rebuild_fix(spec),
                )
                return {"plan_id": None, "started": started, "done": result}, []
            staged = plan_parts(
                lambda: open_connection(duckdb), table, content, staging_root(index_store.home), spec.embeddings.fan_out
            )
        if not staged.parts:  # nothing changed: nothing staged, nothing to commit
            return {"plan_id": None, "started": started, "done": RefreshResult(staged.plan)}, []
        context.log.info("%s: %s; %d parts under %s", name, warehouse.describe_plan(staged.plan, BATCH_ROWS),
                         len(staged.parts), staged.directory)
        parts = [dg.DynamicOutput({"plan_id": staged.plan_id, "part": p}, mapping_key=f"part_{p}") for p in staged.parts]
        return {"plan_id": staged.plan_id, "started": started, "done": None}, parts

    @dg.op(name=f"{name}_embed_part", tags=tags(spec), description=f"Embed one staged part of {name}'s rows (no DuckDB).")
    @user_errors
    def embed(context: dg.OpExecutionContext, part: dict, embedder: EmbedderResource, index_store: IndexResource) -> dict:
        done = embed_part(staging_root(index_store.home), name, part["plan_id"], part["part"],
                          lambda: load_model(context, embedder), chunking, table, content)
        context.log.info("%s: part %d: %d rows, %d chunks in %.1f s%s", name, done.part, done.rows, done.chunks,
                         done.seconds, " (embedded before: kept)" if done.skipped else "")
        return dataclasses.asdict(done)

    @dg.op(
        name=f"{name}_commit_embeddings",
        out=dg.Out(dg.Nothing),
        pool=WRITER_POOL,
        tags=tags(spec),
        description=f"Commit the staged parts to {name}_embeddings with their change records, one transaction each.",
    )
    @user_errors
    def commit(context: dg.OpExecutionContext, plan: dict, parts: list, duckdb: DuckDBResource, index_store: IndexResource):
        mark_run(context)
        result = plan["done"]  # a full rebuild, or nothing to do
        if plan["plan_id"] is not None:
            log_line = ProgressLog(lambda line: context.log.info("%s: committed %s", name, line), every=2.0)
            with writer_step(context, duckdb, f"{name}/embeddings (commit)"):
                result = commit_parts(lambda: open_connection(duckdb), table, staging_root(index_store.home),
                                      plan["plan_id"], progress=log_line)
        with open_connection(duckdb) as conn:
            counts = (warehouse.embedded_rows(conn, table), warehouse.embedded_count(conn, table))
            dim = warehouse.vector_dim(conn, table) or 0
        summary = warehouse.describe_refresh(result.plan, result.committed)
        if result.plan.skipped_empty:
            context.log.warning("%s: skipped %d rows whose embedded text is empty or null (e.g. %s=%s); they are not indexed",
                                name, result.plan.skipped_empty, spec.primary_key, result.plan.skipped_examples)
        context.log.info("%s: %s", name, summary)
        metadata = _metadata(result, counts, time.time() - plan["started"], summary) | _observed(spec, result, counts[1], dim, duckdb)
        metadata |= {
            "fan_out": spec.embeddings.fan_out,
            "parts": len(parts),
            "parts_already_committed": getattr(result, "parts_already_committed", 0),
            "rows_stale": getattr(result, "rows_stale", 0),
            "embedding_seconds_per_part": [round(p["seconds"], 3) for p in parts],
        }
        context.add_output_metadata(metadata)

    @dg.graph_asset(
        key=key(spec, "embeddings"),
        ins={"rows": dg.AssetIn(key=key(spec, "rows"), dagster_type=dg.Nothing)},
        group_name="embed",
        kinds={"duckdb", _runtime_kind(spec)},
        tags=tags(spec),
        config=dg.ConfigMapping(
            config_schema={"full_rebuild": dg.Field(bool, default_value=False, description=EmbeddingsConfig.model_fields["full_rebuild"].description)},
            config_fn=lambda outer: {f"{name}_plan_embeddings": {"config": {"full_rebuild": outer["full_rebuild"]}}},
        ),
        description=f"Table {name}_embeddings: one {model_name} vector per chunk of each row of {name!r} "
        "with non-empty text (one chunk when the text fits the model's window), its offsets, the row's content "
        f"hash and the seq of its last change; plus the change records. Embedded in up to {spec.embeddings.fan_out} "
        "parts at once (embeddings.fan_out), committed by one writer.",
    )
    def embeddings(rows):
        staged, parts = plan(rows)
        return commit(staged, parts.map(embed).collect())

    return embeddings
