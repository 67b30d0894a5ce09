"""Embedding as partitioned work (fan-out): one writer plans, workers embed parts, one writer commits. No Dagster.

    plan_parts    the writer (one connection): the diff (``warehouse.plan_changes``), the rows to
                  embed read once (``read_rows``) and staged as N Parquet parts, then plan.json
    embed_part    any worker, N at once, on any machine that sees the staging directory; never
                  opens DuckDB: input-<i>.parquet -> chunks -> vectors -> vectors-<i>.parquet
    commit_parts  the writer (one connection): each staged part in order, one DuckDB transaction
                  per part holding its changes, their change records (I1) and a ledger row; then
                  the plan's staging directory is removed

The Dagster glue (``assets/embeddings.py``, ``embeddings.fan_out`` > 1) maps ``embed_part`` over
the parts as dynamic outputs, so any executor runs the workers (multiprocess on one machine,
celery or k8s beyond); plan and commit are in the writer pool of 1. The single-step refresh
(``embed_refresh``) stays the default and embeds with the same code (``embed_rows``).

Staging, ``<staging root>/<dataset>/<plan_id>/`` (root: ``$QUIVER_STAGING``, else
``<QUIVER_HOME>/.staging``: a name no dataset can have; with workers on several machines it must be
a volume they all mount at the same path, as the index home is)::

    input-<i>.parquet    part i's rows as ``read_rows`` gave them when planned: primary key, ``_text``,
                         ``_content_hash``, ``_served_hash``, served columns, ``_rowid``; a
                         contiguous slice of the plan's rows in ``<ds>_rows`` order
    served_only.parquet  primary key, ``_rowid``: rows whose served columns alone changed
    deleted.parquet      primary key: rows that left
    plan.json            written last (its presence says the plan is whole): format, dataset,
                         plan_id, base_seq, model (the content identity), vector_dim, served
                         columns, the parts and their row counts, the plan's counts
    vectors-<i>.parquet  written by part i's worker: one row per chunk, primary key, ``_chunk``,
                         ``_chunk_start``, ``_chunk_end``, ``_content_hash`` and ``_vector``
                         FLOAT[dim]; the schema metadata ``quiver.fanout`` (JSON) names the plan,
                         the part and its counts (rows, chunks, rows split and cut, seconds)

Every file is written temp, fsync, rename, fsync the directory (``files.atomic_write``): it is
there whole or not at all, so a worker killed at any point leaves no half file. Each file is
written once; a retried worker whose vectors file exists does nothing.

Committing twice is committing once: ``<ds>_staged_commits`` (plan_id, part, first_seq,
last_seq, _at) gets a part's row inside the transaction of the part's change records
(``commit_changes``' ``on_commit``), and a part found there is skipped. A commit killed between
parts leaves whole parts committed and the rest staged; committing the plan again finishes it.
Ledger rows are a few bytes per part and are kept.

The plan may be stale when its parts commit: the pool of 1 serializes steps, not runs, so another
refresh may commit in between. Each part is therefore rebased on the current last seq and
committed with its rows as they are now: a row whose content hash differs from the staged one (its
text or the model changed), that left, or whose text became empty since the plan is not committed
with its stale vector (the next refresh embeds or deletes it); the served columns committed are the
current ones; a planned delete of a row that is back is dropped. ``served_only`` and ``deleted``
go with part 0. Two runs that plan before either commits stage the same rows: the second to commit
records them again (upserts of the same vectors): wasted work, never a wrong state.

Parts: ``min(rows, max(fan_out, ceil(rows / PART_ROWS)))``: as many as asked, more when a part
would hold over ``PART_ROWS`` rows (its text and vectors are in a worker's memory at once); a plan
with served-column changes or deletes only has one empty part; an empty plan has none and writes
nothing. A full rebuild is not fanned out: it replaces the embedded table in one transaction, so it
stays on the single-step path (``embed_refresh.refresh_embeddings``).

Leftovers: ``plan_parts`` removes its dataset's plan directories older than
``QUIVER_STAGING_KEEP_SECONDS`` (default a day): plans of runs that failed and were never
re-executed. Their rows are planned again by any later refresh, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.resources import warehouse
from quiver.resources.embed_refresh import RefreshResult, chunker_for, embed_rows
from quiver.resources.embedding.chunking import ChunkSettings
from quiver.resources.faults import kill_point
from quiver.resources.files import atomic_write, atomic_write_bytes, fsync_dir, remove_path
from quiver.resources.index.commitlog import CHUNK_COLUMNS
from quiver.resources.values import dumps
from quiver.resources.warehouse import CONTENT_HASH, ROWID, TEXT, VECTOR
from quiver.resources.warehouse.writer_memory import REFRESH_MEMORY_LIMIT, Connect, MemoryLimit, checkpoint_a_big_wal

log = logging.getLogger(__name__)

FORMAT = 1
STAGING_ENV = "QUIVER_STAGING"
STAGING_DIR = ".staging"  # under the home; not an identifier, so never a dataset's index directory
KEEP_ENV = "QUIVER_STAGING_KEEP_SECONDS"
KEEP_SECONDS = 24 * 3600
PART_ROWS = int(os.environ.get("QUIVER_FANOUT_PART_ROWS", "65536"))
PLAN_FILE = "plan.json"
META_KEY = b"quiver.fanout"
LEDGER = "staged_commits"


class StagingError(warehouse.WarehouseError):
    """A staged plan or part that cannot be committed as it is; nothing of it was committed."""


def staging_root(home: Path | str) -> Path:
    """``$QUIVER_STAGING``, else ``<home>/.staging``."""
    configured = os.environ.get(STAGING_ENV)
    return Path(configured) if configured else Path(home) / STAGING_DIR


def plan_dir(staging: Path, dataset: str, plan_id: str) -> Path:
    return Path(staging) / dataset / plan_id


def input_path(directory: Path, part: int) -> Path:
    return directory / f"input-{part}.parquet"


def vectors_path(directory: Path, part: int) -> Path:
    return directory / f"vectors-{part}.parquet"


@dataclass(frozen=True)
class StagedPlan:
    """What ``plan_parts`` staged: the plan's id, its directory and its parts (empty: nothing to do)."""

    plan_id: str
    directory: Path
    parts: tuple[int, ...]
    plan: warehouse.ChangePlan
    seconds: float = 0.0


@dataclass(frozen=True)
class PartResult:
    """What one worker did with one part (``skipped``: its vectors file was there already)."""

    plan_id: str
    part: int
    rows: int
    chunks: int
    rows_split: int
    rows_cut: int
    seconds: float
    skipped: bool = False


@dataclass
class FanoutResult(RefreshResult):
    """``RefreshResult`` (so the asset's metadata reads the same) plus the fan-out's own counts."""

    plan_id: str = ""
    parts: int = 0
    parts_committed: int = 0
    parts_already_committed: int = 0
    rows_stale: int = 0  # staged rows not committed: their source changed since the plan
    deletes_dropped: int = 0  # planned deletes of rows that came back since the plan
    part_seconds: list[float] = field(default_factory=list)


# -- plan ----------------------------------------------------------------------------------------
def plan_parts(
    connect: Connect,
    layout: warehouse.TableLayout,
    content_identity: str,
    staging: Path,
    parts: int,
    *,
    part_rows: int = PART_ROWS,
    memory_limit: str | None = REFRESH_MEMORY_LIMIT,
    now: float | None = None,
) -> StagedPlan:
    """Plan the diff and stage its rows as parts (see the module doc); the writer, one connection."""
    if parts < 1:
        raise ValueError(f"dataset {layout.dataset!r}: embeddings.fan_out must be 1 or more, got {parts}")
    started = time.perf_counter()
    remove_old_plans(Path(staging) / layout.dataset, now=now)
    plan_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    directory = plan_dir(staging, layout.dataset, plan_id)
    memory = MemoryLimit(memory_limit)
    with memory.connection(connect) as conn:
        plan = memory.retrying(conn, partial(warehouse.plan_changes, conn, layout, content_identity, False))
        if plan.is_empty:
            memory.retrying(conn, partial(checkpoint_a_big_wal, conn))
            return StagedPlan(plan_id, directory, (), plan, time.perf_counter() - started)
        total = plan.to_embed.num_rows
        count = min(total, max(parts, math.ceil(total / max(1, part_rows)))) if total else 1
        bounds = np.linspace(0, total, count + 1).astype(int)
        sizes = []
        for part in range(count):
            keys = plan.to_embed.slice(bounds[part], bounds[part + 1] - bounds[part])
            rows = memory.retrying(conn, partial(warehouse.read_rows, conn, layout, plan, keys))
            rows = _with_rowids(rows, keys, layout.primary_key)
            _write_parquet(input_path(directory, part), rows, "fanout.input")
            sizes.append(rows.num_rows)
    _write_parquet(directory / "served_only.parquet", plan.served_only, "fanout.input")
    _write_parquet(directory / "deleted.parquet", plan.deleted, "fanout.input")
    kill_point("fanout.plan_written")
    header = {
        "format": FORMAT,
        "dataset": layout.dataset,
        "plan_id": plan_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_seq": plan.base_seq,
        "model": plan.model,
        "vector_dim": plan.vector_dim,
        "served": list(plan.served),
        "parts": [{"part": part, "rows": size} for part, size in enumerate(sizes)],
        "counts": {
            "rows_read": plan.rows_read, "unchanged": plan.unchanged, "new": plan.new, "changed": plan.changed,
            "skipped_empty": plan.skipped_empty, "skipped_examples": plan.skipped_examples,
        },
        "plan_seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_bytes(directory / PLAN_FILE, dumps(header, indent=1).encode(), "fanout.plan")
    fsync_dir(directory.parent)
    log.info("dataset %r: plan %s staged %d rows in %d parts under %s", layout.dataset, plan_id, total, count, directory)
    return StagedPlan(plan_id, directory, tuple(range(count)), plan, time.perf_counter() - started)


def _with_rowids(rows: pa.Table, keys: pa.Table, pk: str) -> pa.Table:
    """``read_rows``' rows with their ``_rowid`` (read under the plan's connection: the same rows, in
    the same order; joined by primary key should that ever not hold)."""
    if rows.num_rows == keys.num_rows and rows.column(pk).equals(keys.column(pk)):
        return rows.append_column(ROWID, keys.column(ROWID))
    rowids = dict(zip(keys.column(pk).to_pylist(), keys.column(ROWID).to_pylist(), strict=True))
    return rows.append_column(ROWID, pa.array([rowids[v] for v in rows.column(pk).to_pylist()], pa.int64()))


def remove_old_plans(dataset_staging: Path, keep_seconds: float | None = None, now: float | None = None) -> list[Path]:
    """Plan directories of a dataset older than ``keep_seconds`` (default ``$QUIVER_STAGING_KEEP_SECONDS``,
    else a day), by their newest file's time: removed; returns them."""
    keep = keep_seconds if keep_seconds is not None else float(os.environ.get(KEEP_ENV, KEEP_SECONDS))
    now = time.time() if now is None else now
    removed = []
    for directory in sorted(dataset_staging.iterdir()) if dataset_staging.is_dir() else ():
        if not directory.is_dir():
            continue
        times = [p.stat().st_mtime for p in directory.iterdir()] or [directory.stat().st_mtime]
        if now - max(times) > keep:
            remove_path(directory)
            removed.append(directory)
            log.info("removed staged plan %s: older than %.0f s, never committed", directory, keep)
    return removed


# -- embed ---------------------------------------------------------------------------------------
def embed_part(
    staging: Path,
    dataset: str,
    plan_id: str,
    part: int,
    load_model: Callable[[], object],
    chunking: ChunkSettings,
    layout: warehouse.TableLayout | None = None,
    content_identity: str | None = None,
) -> PartResult:
    """Embed staged part ``part`` into ``vectors-<part>.parquet``; nothing if that file exists.

    Never opens DuckDB. ``layout`` names the primary key (default: the input's first column);
    ``content_identity``, when given, must be the plan's (the spec's model or chunking changed
    between plan and embedding otherwise: a mix of two models is refused).
    """
    directory = plan_dir(staging, dataset, plan_id)
    header = read_plan(directory, dataset, plan_id)
    final = vectors_path(directory, part)
    if final.exists():  # a retried step: the part is done
        meta = part_meta(final)
        return PartResult(plan_id, part, meta["rows"], meta["chunks"], meta["rows_split"], meta["rows_cut"], 0.0, True)
    if content_identity is not None and content_identity != header["model"]:
        raise StagingError(
            f"dataset {dataset!r}: plan {plan_id} was made for {header['model']!r} but this worker embeds with "
            f"{content_identity!r} (the spec changed since the plan); run the refresh again to plan anew"
        )
    started = time.perf_counter()
    source = input_path(directory, part)
    if not source.exists():
        raise StagingError(f"dataset {dataset!r}: plan {plan_id} has no part {part} ({source} is missing); run the refresh again")
    rows = pq.read_table(source)
    pk = layout.primary_key if layout is not None else rows.column_names[0]
    layout = layout or warehouse.TableLayout(dataset, pk, (TEXT,))
    plan = _plan_of(header, rows.slice(0, 0).select([pk, ROWID]), None, None)
    counts = RefreshResult(plan)
    model = load_model() if rows.num_rows else None
    if model is not None:
        warehouse.require_dimension(layout, plan, model.dim)
    chunker = chunker_for(layout, model, chunking)
    vectors, chunks = embed_rows(layout, rows, model, chunker, header["vector_dim"], counts)
    if chunks is None:  # no rows: an empty part (a plan of served-column changes or deletes only)
        chunks = _empty_chunks(rows, pk)
    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else int(header["vector_dim"] or 0)
    hashes = dict(zip(rows.column(pk).to_pylist(), rows.column(CONTENT_HASH).to_pylist(), strict=True))
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    table = chunks.select([pk, *CHUNK_COLUMNS]).append_column(
        CONTENT_HASH, pa.array([hashes[v] for v in chunks.column(pk).to_pylist()], pa.string())
    ).append_column(VECTOR, pa.FixedSizeListArray.from_arrays(flat, dim))
    seconds = time.perf_counter() - started
    result = PartResult(plan_id, part, rows.num_rows, counts.chunks, counts.rows_split, counts.rows_cut, seconds)
    meta = {"plan_id": plan_id, "part": part, "rows": result.rows, "chunks": result.chunks,
            "rows_split": result.rows_split, "rows_cut": result.rows_cut, "seconds": round(seconds, 3), "dim": dim}
    _write_parquet(final, table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), "fanout.vectors")
    kill_point("fanout.part_written")
    return result


def _empty_chunks(rows: pa.Table, pk: str) -> pa.Table:
    empty = pa.array([], pa.int32())
    return pa.table({pk: rows.column(pk), **{c: empty for c in CHUNK_COLUMNS}})


def part_meta(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    if META_KEY not in meta:
        raise StagingError(f"{path} is not a staged vectors file (no {META_KEY.decode()} metadata); remove it and embed the part again")
    return json.loads(meta[META_KEY])


# -- commit --------------------------------------------------------------------------------------
def commit_parts(
    connect: Connect,
    layout: warehouse.TableLayout,
    staging: Path,
    plan_id: str,
    *,
    memory_limit: str | None = REFRESH_MEMORY_LIMIT,
    progress: Callable[[int, int], None] | None = None,
) -> FanoutResult:
    """Commit a staged plan's parts in order, each in one transaction with its ledger row; the writer.

    Refuses (``StagingError``, before committing anything) when a part not yet committed has no
    vectors file. Removes the plan's directory once every part is in the ledger.
    """
    directory = plan_dir(staging, layout.dataset, plan_id)
    pk = layout.primary_key
    if not (directory / PLAN_FILE).exists():
        done = _already_committed(connect, layout, plan_id)
        if done:  # committed whole, its directory removed: committing it again commits nothing
            nothing = pa.table({pk: pa.array([]), ROWID: pa.array([], pa.int64())})
            header = {"base_seq": 0, "served": [], "model": "", "vector_dim": None,
                      "counts": dict.fromkeys(("rows_read", "unchanged", "new", "changed", "skipped_empty"), 0) | {"skipped_examples": []}}
            return FanoutResult(_plan_of(header, nothing, None, None), plan_id=plan_id, parts=done, parts_already_committed=done)
    header = read_plan(directory, layout.dataset, plan_id)
    parts = [entry["part"] for entry in header["parts"]]
    served_only = pq.read_table(directory / "served_only.parquet")
    deleted = pq.read_table(directory / "deleted.parquet")
    keys = [pq.read_table(input_path(directory, p), columns=[pk, ROWID]) for p in parts]
    plan = _plan_of(header, pa.concat_tables(keys) if keys else served_only.slice(0, 0), served_only, deleted)
    result = FanoutResult(plan, plan_id=plan_id, parts=len(parts))
    result.seconds["plan"] = float(header.get("plan_seconds", 0.0))
    memory = MemoryLimit(memory_limit)
    ledger = layout.table(LEDGER)
    done_rows = 0
    with memory.connection(connect) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {ledger} (plan_id VARCHAR, part INTEGER, first_seq BIGINT, last_seq BIGINT, _at TIMESTAMPTZ)"
        )
        committed = {row[0] for row in conn.execute(f"SELECT part FROM {ledger} WHERE plan_id = ?", [plan_id]).fetchall()}
        missing = [p for p in parts if p not in committed and not vectors_path(directory, p).exists()]
        if missing:
            raise StagingError(
                f"dataset {layout.dataset!r}: plan {plan_id}: part{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} {'have' if len(missing) > 1 else 'has'} no embedded vectors "
                f"({vectors_path(directory, missing[0])} is missing); nothing was committed. Embed "
                f"{'them' if len(missing) > 1 else 'it'} first (re-execute the run from its failure), or run the refresh again"
            )
        for index, part in enumerate(parts):
            clock = time.perf_counter()
            if part in committed:
                result.parts_already_committed += 1
                continue
            meta = part_meta(vectors_path(directory, part))
            if (meta["plan_id"], meta["part"]) != (plan_id, part):
                raise StagingError(
                    f"dataset {layout.dataset!r}: {vectors_path(directory, part)} belongs to plan {meta['plan_id']} "
                    f"part {meta['part']}, not plan {plan_id} part {part}; remove it and embed the part again"
                )
            staged = pq.read_table(input_path(directory, part), columns=[pk, ROWID, CONTENT_HASH])
            vectors = pq.read_table(vectors_path(directory, part))
            first = index == 0
            committed_part, stale, back = memory.retrying(
                conn,
                partial(
                    _commit_part, conn, layout, plan, staged, vectors, plan_id, part,
                    served_only if first else served_only.slice(0, 0), deleted if first else deleted.slice(0, 0),
                ),
            )
            result.committed = _joined(result.committed, committed_part)
            result.rows_stale += stale
            result.deletes_dropped += back
            result.parts_committed += 1
            result.chunks += meta["chunks"]
            result.rows_split += meta["rows_split"]
            result.rows_cut += meta["rows_cut"]
            result.part_seconds.append(float(meta["seconds"]))
            result.seconds["commit"] += time.perf_counter() - clock
            done_rows += staged.num_rows
            if progress is not None and plan.to_embed.num_rows:
                progress(done_rows, plan.to_embed.num_rows)
            if index + 1 < len(parts):
                kill_point("fanout.mid_commit")
        memory.retrying(conn, partial(checkpoint_a_big_wal, conn))
    result.seconds["embed"] = sum(result.part_seconds)
    if parts:
        sample = pq.read_table(input_path(directory, parts[0]), columns=[pk, TEXT])
        result.sample = sample.slice(0, 5)
    kill_point("fanout.before_cleanup")
    remove_path(directory)  # (what a failure here leaves is removed with the plans older than a day)
    result.memory_limit = memory.limit
    return result


def _commit_part(conn, layout, plan, staged, vectors, plan_id, part, served_only, deleted):
    """One part in one transaction: rebased, stale rows and deletes dropped, the ledger row inside.
    Returns (the commit or None, rows dropped as stale, planned deletes dropped)."""
    pk = layout.primary_key
    base = warehouse.last_seq(conn, layout)
    current = warehouse.read_rows(conn, layout, plan, staged.select([pk, ROWID]))  # the rows as they are now
    planned = dict(zip(staged.column(pk).to_pylist(), staged.column(CONTENT_HASH).to_pylist(), strict=True))
    same = [planned.get(v) == h for v, h in zip(current.column(pk).to_pylist(), current.column(CONTENT_HASH).to_pylist(), strict=True)]
    fresh = current.filter(pa.array(same, pa.bool_()))
    chunks = vectors.filter(pc.is_in(vectors.column(pk), value_set=fresh.column(pk)))
    back = 0
    if deleted.num_rows:  # a row planned to leave that is back (with text) stays
        rowids = pa.array(np.full(deleted.num_rows, -1, np.int64))  # unknown: read_rows looks in the whole table
        present = warehouse.read_rows(conn, layout, plan, deleted.append_column(ROWID, rowids))
        back = present.num_rows
        if back:
            deleted = deleted.filter(pc.invert(pc.is_in(deleted.column(pk), value_set=present.column(pk))))
    batch = replace(
        plan,
        base_seq=base,
        to_embed=fresh.select([pk]).append_column(ROWID, pa.array(np.zeros(fresh.num_rows, np.int64))),
        served_only=served_only,
        deleted=deleted,
    )
    dim = chunks.schema.field(VECTOR).type.list_size
    matrix = chunks.column(VECTOR).combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if chunks.num_rows else np.empty((0, dim), np.float32)
    ledger = layout.table(LEDGER)

    def record(conn, first, last):
        conn.execute(f"INSERT INTO {ledger} VALUES (?, ?, ?, ?, now())", [plan_id, part, first, last])
        kill_point("fanout.in_transaction")

    if batch.is_empty:  # every row stale, nothing else to do: the part is done all the same
        conn.execute("BEGIN")
        try:
            record(conn, None, None)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return None, staged.num_rows - fresh.num_rows, back
    committed = warehouse.commit_changes(conn, layout, batch, fresh, matrix, chunks.select([pk, *CHUNK_COLUMNS]), on_commit=record)
    return committed, staged.num_rows - fresh.num_rows, back


def _already_committed(connect: Connect, layout: warehouse.TableLayout, plan_id: str) -> int:
    """How many parts of ``plan_id`` the ledger holds (0: none, or no ledger yet)."""
    with connect() as conn:
        return sum(1 for plan, _ in staged_commits(conn, layout) if plan == plan_id)


def _joined(before, after):
    if after is None:
        return before
    if before is None:
        return after
    return warehouse.CommitResult(
        first_seq=before.first_seq, last_seq=after.last_seq,
        upserted=before.upserted + after.upserted, deleted=before.deleted + after.deleted,
    )


def read_plan(directory: Path, dataset: str, plan_id: str) -> dict:
    """A staged plan's plan.json, checked: refuses a plan that is not whole or not of this dataset."""
    path = directory / PLAN_FILE
    if not path.exists():
        raise StagingError(
            f"dataset {dataset!r}: no staged plan {plan_id} at {directory} (never written whole, already committed "
            f"and removed, or not on this machine's staging volume: ${STAGING_ENV}); run the refresh again"
        )
    header = json.loads(path.read_text())
    if header.get("format") != FORMAT or header.get("dataset") != dataset or header.get("plan_id") != plan_id:
        raise StagingError(
            f"dataset {dataset!r}: {path} is format {header.get('format')} of dataset {header.get('dataset')!r}, plan "
            f"{header.get('plan_id')}; expected format {FORMAT}, plan {plan_id}: remove {directory} and run the refresh again"
        )
    return header


def _plan_of(header: dict, to_embed: pa.Table, served_only: pa.Table | None, deleted: pa.Table | None) -> warehouse.ChangePlan:
    counts = header["counts"]
    return warehouse.ChangePlan(
        base_seq=int(header["base_seq"]),
        served=tuple(header["served"]),
        to_embed=to_embed,
        served_only=served_only if served_only is not None else to_embed.slice(0, 0),
        deleted=deleted if deleted is not None else to_embed.select([0]).slice(0, 0),
        model=header["model"],
        vector_dim=header["vector_dim"],
        rows_read=counts["rows_read"],
        unchanged=counts["unchanged"],
        new=counts["new"],
        changed=counts["changed"],
        skipped_empty=counts["skipped_empty"],
        skipped_examples=list(counts["skipped_examples"]),
    )


def _write_parquet(path: Path, table: pa.Table, label: str) -> None:
    atomic_write(path, lambda temp: pq.write_table(table, temp), label)


def staged_commits(conn, layout: warehouse.TableLayout) -> list[tuple[str, int]]:
    """The ledger: (plan_id, part) of every staged part committed, oldest first."""
    if not warehouse.table_exists(conn, layout.table(LEDGER)):
        return []
    return [tuple(r) for r in conn.execute(f"SELECT plan_id, part FROM {layout.table(LEDGER)} ORDER BY _at, plan_id, part").fetchall()]


__all__ = [
    "FanoutResult", "PartResult", "StagedPlan", "StagingError", "commit_parts", "embed_part", "plan_parts",
    "read_plan", "remove_old_plans", "staged_commits", "staging_root",
]
