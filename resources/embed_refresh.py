"""The embeddings refresh, owned by the engine: plan once, then embed and commit batch by batch. No Dagster.

    plan (one connection) -> for each batch of rows: split into chunks, embed (no connection held),
    commit with its change records (one transaction, I1 holds after every batch) -> repeat

Each batch is a commit of its own, so a killed refresh loses at most the batch in flight: the
rerun plans again, and the rows already committed have their new content hash, so only the rest is
embedded. Vectors are held one batch at a time. Rows that left the source and rows whose served
columns alone changed go with the first batch. A full rebuild stays one transaction: it replaces
the embedded table whole, and a half-replaced table would mix two states.

The caller passes ``connect``, a context manager that opens a writer connection and closes it;
the embedder (``embedding.Embedder`` or anything with ``dim``, ``embed`` and ``chunker``); and
callbacks for progress lines and stage times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np

from quiver.resources import warehouse
from quiver.resources.embedding.chunking import ChunkingError, ChunkSettings, chunk_rows
from quiver.resources.faults import kill_point

log = logging.getLogger(__name__)

BATCH_ROWS = 4096  # rows embedded and committed together: seconds of embedding, a few MB of vectors
Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


@dataclass
class RefreshResult:
    plan: warehouse.ChangePlan
    committed: warehouse.CommitResult | None = None  # seqs from the first batch's first to the last's last
    batches: int = 0
    chunks: int = 0  # chunks embedded
    rows_split: int = 0  # rows that became more than one chunk
    rows_cut: int = 0  # rows cut at the model's window (chunking off)
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
) -> RefreshResult:
    """Plan the diff, then embed and commit it batch by batch (see the module doc).

    ``load_model`` is called only when there is text to embed. ``progress(done, total)`` counts rows.
    """
    started = time.perf_counter()
    with connect() as conn:
        plan = warehouse.plan_changes(conn, layout, content_identity, full_rebuild=full_rebuild)
    result = RefreshResult(plan)
    result.seconds["plan"] = time.perf_counter() - started
    if plan.is_empty:
        return result
    total = plan.to_embed.num_rows
    model = load_model() if total else None
    if model is not None:
        warehouse.require_dimension(layout, plan, model.dim, fix=rebuild_fix)  # before hours of work
    try:
        chunker = model.chunker(chunking) if model is not None else None
    except ChunkingError as error:  # a local model's window, known only now
        raise ChunkingError(f"dataset {layout.dataset!r}: embeddings.chunking: {error}") from None
    size = max(1, total) if plan.rebuild else max(1, batch_rows)
    base_seq, done = plan.base_seq, 0
    for start in range(0, max(total, 1), size):
        batch = replace(
            plan,
            base_seq=base_seq,
            to_embed=plan.to_embed.slice(start, size),
            served_only=plan.served_only if start == 0 else plan.served_only.slice(0, 0),
            deleted=plan.deleted if start == 0 else plan.deleted.slice(0, 0),
        )
        clock = time.perf_counter()
        chunks, vectors = None, None
        if batch.to_embed.num_rows:
            texts = batch.to_embed.column(warehouse.TEXT).to_pylist()
            chunks = chunk_rows(layout.primary_key, batch.to_embed.column(layout.primary_key), texts, chunker)
            vectors = model.embed(chunks.texts)
            result.chunks += len(chunks.texts)
            result.rows_split += chunks.rows_split
            result.rows_cut += chunks.rows_cut
        else:  # a batch without text: deletes and served columns only
            vectors = np.empty((0, plan.vector_dim or 0), dtype=np.float32)
        result.seconds["embed"] += time.perf_counter() - clock
        clock = time.perf_counter()
        with connect() as conn:
            committed = warehouse.commit_changes(conn, layout, batch, vectors, chunks.table if chunks else None)
        result.seconds["commit"] += time.perf_counter() - clock
        result.batches += 1
        if committed is not None:
            base_seq = committed.last_seq
            result.committed = _joined(result.committed, committed)
        done += batch.to_embed.num_rows
        if progress is not None and total:
            progress(done, total)
        if done < total:
            kill_point("refresh.between_batches")
    return result


def _joined(before: warehouse.CommitResult | None, after: warehouse.CommitResult) -> warehouse.CommitResult:
    if before is None:
        return after
    return warehouse.CommitResult(
        first_seq=before.first_seq,
        last_seq=after.last_seq,
        upserted=before.upserted + after.upserted,
        deleted=before.deleted + after.deleted,
    )
