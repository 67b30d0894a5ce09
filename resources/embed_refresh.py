"""The embeddings refresh, owned by the engine: plan once, then embed and commit batch by batch. No Dagster.

    plan (keys only) -> for each batch: read its rows, split into chunks, embed (no connection
    held), commit with its change records (one transaction: I1 holds after every batch) -> repeat

Each batch is a commit of its own, so a killed refresh loses at most the batch in flight: the
rerun plans again, and the rows already committed have their new content hash, so only the rest is
embedded. The plan holds keys; a batch's text and vectors are the only rows in memory, so memory
does not grow with the table (``make bench-refresh-cost`` measures peak RSS at 10k, 100k and 1M
rows). Committing batch i and reading batch i+1 share one connection: one open of the database
per batch. Rows that left the source go with the first batch; rows whose served columns alone
changed are batched beside the rows to embed. A full rebuild stays one transaction: it replaces
the embedded table whole, and a half-replaced table would mix two states.

The caller passes ``connect``, a context manager that opens a writer connection and closes it;
``load_model``, which returns the embedder (``embedding.Embedder`` or anything with ``dim``,
``embed`` and ``chunker``); and callbacks for the plan and for progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pyarrow as pa

from quiver.resources import warehouse
from quiver.resources.embedding.chunking import ChunkingError, ChunkSettings, chunk_rows
from quiver.resources.faults import kill_point
from quiver.resources.warehouse.writer_memory import REFRESH_MEMORY_LIMIT, Connect, MemoryLimit, checkpoint_a_big_wal

# Rows embedded and committed together: seconds of embedding on CPU, a few MB of vectors.
BATCH_ROWS = int(os.environ.get("QUIVER_REFRESH_BATCH_ROWS", "4096"))


@dataclass
class RefreshResult:
    plan: warehouse.ChangePlan
    committed: warehouse.CommitResult | None = None  # seqs from the first batch's first to the last's last
    batches: int = 0
    chunks: int = 0  # chunks embedded
    rows_split: int = 0  # rows that became more than one chunk
    rows_cut: int = 0  # rows cut at the model's window (chunking off)
    sample: pa.Table | None = None  # the first rows embedded (primary key, text), for previews
    memory_limit: str | None = None  # DuckDB's memory limit at the end (None: DuckDB's own)
    seconds: dict[str, float] = field(default_factory=lambda: {"plan": 0.0, "embed": 0.0, "commit": 0.0})


def refresh_embeddings(
    connect: Connect,
    layout: warehouse.TableLayout,
    content_identity: str,
    load_model: Callable[[], object],
    chunking: ChunkSettings,
    full_rebuild: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int, int], None] | None = None,
    rebuild_fix: str = warehouse.REBUILD_FIX,
    planned: Callable[[warehouse.ChangePlan], None] | None = None,
    memory_limit: str | None = REFRESH_MEMORY_LIMIT,
) -> RefreshResult:
    """Plan the diff, then embed and commit it batch by batch (see the module doc).

    ``load_model`` is called only when there is text to embed. ``planned(plan)`` is called once the
    plan is known, before any embedding; ``progress(done, total)`` counts rows embedded and committed.
    """
    started = time.perf_counter()
    memory = MemoryLimit(None if full_rebuild else memory_limit)  # a rebuild holds every vector anyway
    with memory.connection(connect) as conn:
        plan = memory.retrying(conn, partial(warehouse.plan_changes, conn, layout, content_identity, full_rebuild))
        if plan.is_empty:  # (a WAL left by an earlier refresh of any size)
            memory.retrying(conn, partial(checkpoint_a_big_wal, conn))
    result = RefreshResult(plan)
    result.seconds["plan"] = time.perf_counter() - started
    if planned is not None:
        planned(plan)
    if plan.is_empty:
        return result
    total = plan.to_embed.num_rows
    model = load_model() if total else None
    if model is not None:
        warehouse.require_dimension(layout, plan, model.dim, fix=rebuild_fix)  # before hours of work
    chunker = chunker_for(layout, model, chunking)
    size = max(1, total) if plan.rebuild else max(1, batch_rows)
    starts = range(0, max(total, plan.served_only.num_rows, plan.deleted.num_rows, 1), size)
    base_seq, done = plan.base_seq, 0
    pending = None  # the batch embedded and not yet committed: (plan slice, rows, vectors, chunks)
    for start in [*starts, None]:
        clock = time.perf_counter()
        with memory.connection(connect) as conn:
            if pending is not None:
                committed = memory.retrying(conn, partial(warehouse.commit_changes, conn, layout, *pending))
                base_seq = committed.last_seq if committed is not None else base_seq
                result.committed = _joined(result.committed, committed)
                result.batches += 1
            if start is not None:
                batch = replace(
                    plan,
                    base_seq=base_seq,
                    to_embed=plan.to_embed.slice(start, size),
                    served_only=plan.served_only.slice(start, size),
                    deleted=plan.deleted.slice(start, size),
                )
                rows = memory.retrying(conn, partial(warehouse.read_rows, conn, layout, plan, batch.to_embed))
                if result.sample is None:
                    result.sample = rows.select([layout.primary_key, warehouse.TEXT]).slice(0, 5)
            else:  # the last commit: leave no big WAL for every later open to replay
                memory.retrying(conn, partial(checkpoint_a_big_wal, conn))
        result.seconds["commit"] += time.perf_counter() - clock
        if pending is not None:
            done += pending[0].to_embed.num_rows
            if progress is not None and total:
                progress(done, total)
            if start is not None:
                kill_point("refresh.between_batches")
        if start is None:
            break
        clock = time.perf_counter()
        vectors, chunks = embed_rows(layout, rows, model, chunker, plan.vector_dim, result)
        result.seconds["embed"] += time.perf_counter() - clock
        pending = (batch, rows, vectors, chunks)
    result.memory_limit = memory.limit
    return result


def chunker_for(layout: warehouse.TableLayout, model, chunking: ChunkSettings):
    """The model's chunker for the spec's settings (None without a model); a window the settings do
    not fit, known only once a local model is loaded, is an error naming the dataset."""
    try:
        return model.chunker(chunking) if model is not None else None
    except ChunkingError as error:  # a local model's window, known only now
        raise ChunkingError(f"dataset {layout.dataset!r}: embeddings.chunking: {error}") from None


def embed_rows(layout, rows, model, chunker, vector_dim, result: RefreshResult):
    """Rows (``read_rows``' output) split into chunks and embedded: (vectors, chunk table or None).

    ``result`` counts the chunks, the rows split and the rows cut. The single-step refresh calls it
    per batch, the fan-out's workers (``embed_fanout.embed_part``) per part."""
    if not rows.num_rows:  # a batch without text: deletes and served columns only
        return np.empty((0, vector_dim or (model.dim if model is not None else 0)), dtype=np.float32), None
    texts = rows.column(warehouse.TEXT).to_pylist()
    chunks = chunk_rows(layout.primary_key, rows.column(layout.primary_key), texts, chunker)
    result.chunks += len(chunks.texts)
    result.rows_split += chunks.rows_split
    result.rows_cut += chunks.rows_cut
    return model.embed(chunks.texts), chunks.table


def _joined(before: warehouse.CommitResult | None, after: warehouse.CommitResult) -> warehouse.CommitResult:
    if before is None:
        return after
    return warehouse.CommitResult(
        first_seq=before.first_seq,
        last_seq=after.last_seq,
        upserted=before.upserted + after.upserted,
        deleted=before.deleted + after.deleted,
    )
