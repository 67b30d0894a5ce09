"""Churn: seeded mixed adds, updates and deletes through IndexStore and IndexReader, against a model.

One implementation for two users: tests/engine/test_churn.py runs a small plan in the default
test run, bench_churn.py runs 1,000,000 operations on 100,000 vectors of 384 dims and prints the
figures.

The plan alternates phases. *Shrink* batches delete more rows than they add, so usearch's
tombstones (graph slots of removed keys that no add has reused yet) pile up until a snapshot
passes the rebuild bound; *grow* batches add more than they delete, and the new vectors fill the
slots usearch freed. A quarter of the adds bring back a key deleted earlier: a removed key that
comes back is where usearch once served ghosts. One batch is one commit-log segment, and a
snapshot follows every ``snapshot_every`` batches, as the snapshot sensor would ask.

The reader is checked twice per snapshot: just before it (the reader's delta is at its largest)
and just after it (only the new snapshot). Each check compares with ``LiveRows``, the plain
truth: the live count; every hit of every query is a live key, appears once, has the distance of
its key's current vector (not a superseded one) and the served columns of its current version;
recall@k against exact search over the live vectors. Each snapshot is checked for its live
count and its tombstones against the bound, and (those with ``memory_min_tombstone_percent`` or
more) against a fresh index built over the same live rows: bytes on disk and resident memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from quiver.resources.index import IndexReader, IndexStore, SnapshotResult
from quiver.resources.index.commitlog import KEY, OP, OP_DELETE, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.identity import HnswParams, IndexIdentity, new_usearch_index
from quiver.resources.index.snapshot import INDEX_FILE

PK, NAME = "id", "name"
RECALL_BOUND = 0.9
MEMORY_BOUND = 1.25
DISTANCE_TOLERANCE = 1e-4
# Below this, page and allocator granularity swamp a resident-memory comparison; file sizes remain.
RESIDENT_MIN_BYTES = 32 << 20
_GOLDEN, _OFFSET = np.uint64(0x9E3779B97F4A7C15), np.uint64(0x632BE59BD9B4E019)
# Operation mix per phase: (adds, updates, deletes) as fractions of a batch.
SHRINK_MIX = (0.2, 0.3, 0.5)
GROW_MIX = (0.5, 0.3, 0.2)
READD_FRACTION = 0.25


@dataclass(frozen=True)
class ChurnPlan:
    dim: int
    initial_rows: int
    operations: int  # churn operations after the initial load
    batch_ops: int  # operations per segment
    phase_batches: int  # batches per shrink or grow phase
    snapshot_every: int = 3
    clusters: int = 64
    spread: float = 0.5  # norm of a vector's offset from its cluster centre (centres are unit)
    params: HnswParams = field(default_factory=HnswParams)
    rebuild_tombstone_percent: float = 20.0
    queries: int = 50  # per check
    k: int = 10  # for recall
    ghost_k: int = 100  # a deeper search per query, checked for ghosts only
    memory_min_tombstone_percent: float = 0.0  # compare with a fresh index only from this share
    seed: int = 0

    @property
    def batches(self) -> int:
        return self.operations // self.batch_ops

    @property
    def identity(self) -> IndexIdentity:
        return IndexIdentity(dim=self.dim, metric="cosine", dtype="f32", model="churn-synthetic")


def full_plan() -> ChurnPlan:
    """The issue's figure: 1,000,000 mixed operations on an index of 100,000 vectors of 384 dims."""
    return ChurnPlan(
        dim=384,
        initial_rows=100_000,
        operations=1_000_000,
        batch_ops=10_000,
        phase_batches=8,
        clusters=256,
        queries=100,
        memory_min_tombstone_percent=12.0,  # a fresh build costs half a minute: compare near the bound
    )


def keys_of(pks: np.ndarray) -> np.ndarray:
    """A stable u64 key per primary key, spread over the whole u64 range (as the warehouse does)."""
    return pks.astype(np.uint64) * _GOLDEN + _OFFSET  # wraps modulo 2**64 on purpose


def names_of(pks: np.ndarray, version: int) -> list[str]:
    return [f"row-{pk}-v{version}" for pk in pks.tolist()]


class LiveRows:
    """The plain truth: the live rows as parallel arrays, in no particular order."""

    def __init__(self, dim: int):
        self.keys = np.empty(0, dtype=np.uint64)
        self.pks = np.empty(0, dtype=np.int64)
        self.versions = np.empty(0, dtype=np.int64)
        self.vectors = np.empty((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.keys)

    def update(self, positions: np.ndarray, vectors: np.ndarray, version: int) -> None:
        self.vectors[positions] = vectors
        self.versions[positions] = version

    def delete(self, positions: np.ndarray) -> None:
        keep = np.ones(len(self), dtype=bool)
        keep[positions] = False
        self.keys, self.pks, self.versions, self.vectors = (
            self.keys[keep],
            self.pks[keep],
            self.versions[keep],
            self.vectors[keep],
        )

    def add(self, pks: np.ndarray, vectors: np.ndarray, version: int) -> None:
        self.keys = np.concatenate([self.keys, keys_of(pks)])
        self.pks = np.concatenate([self.pks, pks])
        self.versions = np.concatenate([self.versions, np.full(len(pks), version)])
        self.vectors = np.concatenate([self.vectors, vectors])

    def positions_of(self, keys: np.ndarray) -> np.ndarray:
        """Positions of ``keys`` in the arrays; -1 for a key that is not live."""
        if not len(self):
            return np.full(len(keys), -1)
        order = np.argsort(self.keys)
        at = order[np.searchsorted(self.keys, keys, sorter=order).clip(max=len(order) - 1)]
        return np.where(self.keys[at] == keys, at, -1)

    def exact_top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        """The keys of the ``k`` most similar live vectors per query (vectors and queries are unit)."""
        similarity = self.vectors @ queries.T  # rows x queries
        top = np.argpartition(-similarity, k - 1, axis=0)[:k]
        return self.keys[top.T]


@dataclass
class Batch:
    """One segment's worth of changes, before it is applied to the model."""

    version: int
    add_pks: np.ndarray
    add_vectors: np.ndarray
    update_positions: np.ndarray
    update_vectors: np.ndarray
    delete_positions: np.ndarray
    readds: int

    @property
    def operations(self) -> int:
        return len(self.add_pks) + len(self.update_positions) + len(self.delete_positions)


class ChurnWorkload:
    """Makes seeded batches, turns them into segment tables, and applies them to ``live``."""

    def __init__(self, plan: ChurnPlan):
        self.plan = plan
        self.rng = np.random.default_rng(plan.seed)
        centres = self.rng.normal(size=(plan.clusters, plan.dim))
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        self.live = LiveRows(plan.dim)
        self.dead_pks = np.empty(0, dtype=np.int64)
        self.next_pk = 0
        self.last_seq = 0
        self.version = 0

    def vectors(self, count: int) -> np.ndarray:
        return unit_rows(self.centres, self.plan.spread, count, self.rng)

    def new_pks(self, count: int) -> tuple[np.ndarray, int]:
        """Primary keys to add: some brought back from the deleted ones, the rest never seen."""
        readds = min(int(count * READD_FRACTION), len(self.dead_pks))
        chosen = self.rng.choice(len(self.dead_pks), readds, replace=False)
        back = self.dead_pks[chosen]
        self.dead_pks = np.delete(self.dead_pks, chosen)
        fresh = np.arange(self.next_pk, self.next_pk + count - readds, dtype=np.int64)
        self.next_pk += len(fresh)
        return np.concatenate([back, fresh]), readds

    def make_batch(self, adds: int, updates: int, deletes: int) -> Batch:
        self.version += 1
        chosen = self.rng.choice(len(self.live), updates + deletes, replace=False)
        add_pks, readds = self.new_pks(adds)
        return Batch(
            version=self.version,
            add_pks=add_pks,
            add_vectors=self.vectors(adds),
            update_positions=chosen[:updates],
            update_vectors=self.vectors(updates),
            delete_positions=chosen[updates:],
            readds=readds,
        )

    def churn_batch(self, number: int) -> Batch:
        """Batch ``number`` of the plan: its phase sets the mix of adds, updates and deletes."""
        shrinking = (number // self.plan.phase_batches) % 2 == 0
        mix = SHRINK_MIX if shrinking else GROW_MIX
        adds, updates = (round(share * self.plan.batch_ops) for share in mix[:2])
        return self.make_batch(adds, updates, self.plan.batch_ops - adds - updates)

    def changes(self, batch: Batch) -> tuple[pa.Table, int, int]:
        """The batch as a commit-log segment table (commitlog.py), seqs in a shuffled op order."""
        dim = self.plan.dim
        update_pks = self.live.pks[batch.update_positions]
        delete_pks = self.live.pks[batch.delete_positions]
        pks = np.concatenate([batch.add_pks, update_pks, delete_pks])
        upserts = len(batch.add_pks) + len(update_pks)
        vectors = np.zeros((len(pks), dim), dtype=np.float32)
        vectors[:upserts] = np.concatenate([batch.add_vectors, batch.update_vectors])
        deleted = np.arange(len(pks)) >= upserts
        first = self.last_seq + 1
        self.last_seq += len(pks)
        table = pa.table(
            {
                SEQ: pa.array(first + self.rng.permutation(len(pks)), pa.int64()),
                OP: pa.array(np.where(deleted, OP_DELETE, OP_UPSERT)),
                KEY: pa.array(keys_of(pks), pa.uint64()),
                PK: pa.array(pks, pa.int64()),
                VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim, mask=pa.array(deleted)),
                NAME: pa.array(names_of(pks[:upserts], batch.version) + [None] * int(deleted.sum()), pa.string()),
            }
        )
        return table, first, self.last_seq

    def apply(self, batch: Batch) -> None:
        """Apply the batch to the model (after ``changes``: that reads the positions it names)."""
        self.live.update(batch.update_positions, batch.update_vectors, batch.version)
        self.dead_pks = np.concatenate([self.dead_pks, self.live.pks[batch.delete_positions]])
        self.live.delete(batch.delete_positions)
        self.live.add(batch.add_pks, batch.add_vectors, batch.version)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def loaded_bytes(path: Path) -> int:
    """The resident memory that loading a usearch file (not viewing it) adds to this process."""
    from usearch.index import Index

    before = resident_bytes()
    index = Index.restore(str(path), view=False)
    grown = resident_bytes() - before
    del index
    return grown


def unit_rows(centres: np.ndarray, spread: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered unit vectors: a random centre plus gaussian noise of norm about ``spread``."""
    dim = centres.shape[1]
    rows = centres[rng.integers(len(centres), size=count)] + rng.normal(scale=spread / np.sqrt(dim), size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class ChurnFigures:
    """What a churn run saw. ``failures`` lists every broken promise, empty when all held."""

    initial_rows: int = 0
    operations: int = 0
    adds: int = 0
    updates: int = 0
    deletes: int = 0
    readds: int = 0
    batches: int = 0
    snapshots: int = 0
    rebuilds: int = 0
    checks: int = 0
    queries: int = 0
    hits_checked: int = 0
    live_model: int = 0
    live_reader: int = 0
    count_mismatches: list[str] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)  # removed keys that came back
    stale_hits: list[str] = field(default_factory=list)  # a live key with a superseded vector
    wrong_rows: list[str] = field(default_factory=list)  # served columns of another version
    duplicate_or_short: list[str] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)
    tombstone_percents: list[float] = field(default_factory=list)  # per published snapshot
    tombstone_violations: list[str] = field(default_factory=list)
    file_ratios: list[float] = field(default_factory=list)  # snapshot index file / fresh index file
    resident_ratios: list[float] = field(default_factory=list)  # resident memory once loaded, same
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, started: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def failures(self) -> list[str]:
        found = self.count_mismatches + self.ghosts + self.stale_hits + self.wrong_rows + self.duplicate_or_short
        found += self.tombstone_violations
        found += [f"recall@10 {r:.3f} < {RECALL_BOUND}" for r in self.recalls if r < RECALL_BOUND]
        found += [f"index file {r:.3f}x a fresh one > {MEMORY_BOUND}x" for r in self.file_ratios if r > MEMORY_BOUND]
        found += [
            f"index memory {r:.3f}x a fresh one > {MEMORY_BOUND}x" for r in self.resident_ratios if r > MEMORY_BOUND
        ]
        return found


class ChurnRun:
    """Drives one plan through a store and a reader in ``root`` and fills in ``figures``."""

    def __init__(self, root: Path, plan: ChurnPlan, progress: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.plan = plan
        self.progress = progress or (lambda _line: None)
        self.store = IndexStore(self.root, "churn", plan.identity, plan.params, PK)
        self.reader = IndexReader(self.root)
        self.workload = ChurnWorkload(plan)
        self.query_rng = np.random.default_rng(plan.seed + 1_000_003)
        self.figures = ChurnFigures(initial_rows=plan.initial_rows)
        self.started = time.perf_counter()

    def run(self) -> ChurnFigures:
        self.store.open()
        self.append(self.workload.make_batch(self.plan.initial_rows, 0, 0))
        self.snapshot()
        self.figures.operations = 0  # the initial load is not churn
        for number in range(self.plan.batches):
            batch = self.workload.churn_batch(number)
            self.append(batch)
            self.count(batch)
            if (number + 1) % self.plan.snapshot_every == 0 or number + 1 == self.plan.batches:
                self.check(f"batch {number}, before its snapshot")
                self.snapshot()
                self.check(f"batch {number}, after its snapshot")
                self.progress(self.progress_line(number))
        self.figures.live_model = len(self.workload.live)
        self.figures.live_reader = len(self.reader)
        self.figures.seconds["total"] = time.perf_counter() - self.started
        return self.figures

    def count(self, batch: Batch) -> None:
        self.figures.batches += 1
        self.figures.operations += batch.operations
        self.figures.adds += len(batch.add_pks)
        self.figures.updates += len(batch.update_positions)
        self.figures.deletes += len(batch.delete_positions)
        self.figures.readds += batch.readds

    def append(self, batch: Batch) -> None:
        started = time.perf_counter()
        changes = self.workload.changes(batch)
        self.workload.apply(batch)
        self.figures.timed("make changes", started)
        started = time.perf_counter()
        self.store.append_segment(*changes)
        self.figures.timed("append segments", started)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        started = time.perf_counter()
        result = self.store.take_snapshot(self.plan.rebuild_tombstone_percent)
        self.figures.timed("snapshots", started)
        self.figures.snapshots += 1
        self.figures.rebuilds += int(result.rebuilt)
        self.check_snapshot(result)

    def check_snapshot(self, result: SnapshotResult) -> None:
        entry, live = result.entry, len(self.workload.live)
        percent = 100.0 * entry.tombstones / max(1, entry.vectors)
        self.figures.tombstone_percents.append(percent)
        where = f"snapshot {entry.seq}"
        if entry.vectors != live:
            self.figures.count_mismatches.append(f"{where}: {entry.vectors} vectors, the model has {live}")
        if percent > self.plan.rebuild_tombstone_percent:
            self.figures.tombstone_violations.append(
                f"{where}: {percent:.1f}% tombstones kept, bound {self.plan.rebuild_tombstone_percent}%"
            )
        if result.rebuilt and entry.tombstones:
            self.figures.tombstone_violations.append(f"{where}: rebuilt but kept {entry.tombstones} tombstones")
        if percent >= self.plan.memory_min_tombstone_percent:
            self.compare_with_fresh(self.root / entry.dir / INDEX_FILE)

    def compare_with_fresh(self, index_path: Path) -> None:
        """The snapshot's index against a fresh one built over the same live rows: bytes on disk,
        and the resident memory that loading each (not viewing it) adds. usearch's own
        ``memory_usage`` is no measure here: it barely moves with the node count of a restored index."""
        started = time.perf_counter()
        live = self.workload.live
        fresh = new_usearch_index(self.plan.identity, self.plan.params)
        fresh.add(live.keys, live.vectors, threads=0)
        fresh_path = self.root.with_name(self.root.name + "-fresh.usearch")  # outside the index directory
        fresh.save(str(fresh_path))
        del fresh
        fresh_bytes = fresh_path.stat().st_size
        self.figures.file_ratios.append(index_path.stat().st_size / fresh_bytes)
        if fresh_bytes >= RESIDENT_MIN_BYTES:
            self.figures.resident_ratios.append(loaded_bytes(index_path) / loaded_bytes(fresh_path))
        fresh_path.unlink()
        self.figures.timed("fresh-index comparisons", started)

    # -- reader checks -----------------------------------------------------------------------
    def check(self, where: str) -> None:
        started = time.perf_counter()
        self.reader.refresh()
        self.figures.timed("reader refresh", started)
        started = time.perf_counter()
        live = self.workload.live
        self.figures.checks += 1
        if len(self.reader) != len(live):
            self.figures.count_mismatches.append(f"{where}: reader holds {len(self.reader)}, the model {len(live)}")
        queries = unit_rows(self.workload.centres, self.plan.spread, self.plan.queries, self.query_rng)
        exact = live.exact_top_k(queries, self.plan.k)
        found = 0
        for query, expected in zip(queries, exact):
            top = self.reader.search(query, self.plan.k)
            found += len(np.intersect1d(top.keys, expected))
            self.check_hits(where, query, top, self.plan.k)
            self.check_hits(where, query, self.reader.search(query, self.plan.ghost_k), self.plan.ghost_k)
        self.figures.queries += len(queries)
        self.figures.recalls.append(found / (self.plan.k * len(queries)))
        self.figures.timed("queries and checks", started)

    def check_hits(self, where: str, query: np.ndarray, hits, k: int) -> None:
        live, figures = self.workload.live, self.figures
        figures.hits_checked += len(hits.keys)
        if len(set(hits.keys.tolist())) != len(hits.keys) or len(hits.keys) != min(k, len(live)):
            figures.duplicate_or_short.append(
                f"{where}: {len(hits.keys)} hits, {len(set(hits.keys.tolist()))} distinct"
            )
        at = live.positions_of(hits.keys)
        for key in hits.keys[at < 0].tolist():
            figures.ghosts.append(f"{where}: removed key {key} came back")
        present = at >= 0
        expected = 1.0 - live.vectors[at[present]] @ query
        off = np.abs(expected - hits.distances[present]) > DISTANCE_TOLERANCE
        for key in hits.keys[present][off].tolist():
            figures.stale_hits.append(f"{where}: key {key} scored with a vector it no longer has")
        names = self.reader.rows(hits.keys[present], [NAME]).column(NAME).to_pylist()
        want = [f"row-{pk}-v{v}" for pk, v in zip(live.pks[at[present]].tolist(), live.versions[at[present]].tolist())]
        for key, got, expected_name in zip(hits.keys[present].tolist(), names, want):
            if got != expected_name:
                figures.wrong_rows.append(f"{where}: key {key} served {got!r}, current is {expected_name!r}")

    def progress_line(self, number: int) -> str:
        f = self.figures
        return (
            f"batch {number + 1}/{self.plan.batches}: {f.operations:,} ops, live {len(self.workload.live):,}, "
            f"tombstones {f.tombstone_percents[-1]:.1f}%, rebuilds {f.rebuilds}, recall {f.recalls[-1]:.3f}, "
            f"{time.perf_counter() - self.started:.0f} s"
        )


def run_churn(root: Path, plan: ChurnPlan, progress: Callable[[str], None] | None = None) -> ChurnFigures:
    return ChurnRun(root, plan, progress).run()
