"""Write-cost benchmark: what changing 1% of the rows writes, from the process's own I/O counters.

    make bench-write-cost                                  # 100,000 rows
    BENCH_SIZE=100000,1000000 make bench-write-cost        # and 1,000,000 (about 3 GB, many minutes)
    .venv/bin/python tests/benchmarks/bench_write_cost.py 1000000

For each size: build an index of N synthetic 384-dim rows and snapshot it, then, several times,
re-embed 1% of the rows (updates: new vector and new served text), append them as one commit-log
segment and take the next snapshot. Bytes written come from /proc/self/io, read just before and
just after each step: ``wchar`` (bytes passed to write calls) and ``write_bytes`` (bytes the
process sent towards the disk, page-rounded). The point: a commit writes a segment proportional to
what changed, never the whole index, whereas DuckDB's vss extension rewrites the whole index at
every checkpoint. A snapshot does rewrite the index, which is why the snapshot sensor takes one
only when the log has grown past a share of it (min_delta_size_percent).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.index import HnswParams, IndexIdentity, IndexStore
from quiver.resources.index.commitlog import KEY, OP, OP_UPSERT, SEQ, VECTOR
from tests.benchmarks.churn_workload import keys_of, unit_rows

DIM = 384
CHANGED_PERCENT = 1
REPETITIONS = int(os.environ.get("BENCH_REPS", "3"))
BUILD_CHUNK = 100_000  # rows per build segment: bounds the memory a build holds besides the index
PK, TEXT = "id", "title"
# Clustered vectors, as embeddings are: HNSW builds them twice as fast as uniform noise
# (100k uniform 384-dim vectors take minutes on two cores), and the bytes written are the same.
CENTRES = np.random.default_rng(0).normal(size=(1024, DIM)).astype(np.float32)
CENTRES /= np.linalg.norm(CENTRES, axis=1, keepdims=True)
SPREAD = 0.5


def io_counters() -> tuple[int, int]:
    """(wchar, write_bytes) of this process, all its threads included."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


@dataclass(frozen=True)
class Written:
    wchar: int
    write_bytes: int


def measured(step: Callable[[], object]) -> tuple[object, Written]:
    """Run ``step`` and return its result with the bytes this process wrote meanwhile."""
    wchar, write_bytes = io_counters()
    result = step()
    after_wchar, after_write_bytes = io_counters()
    return result, Written(after_wchar - wchar, after_write_bytes - write_bytes)


def upserts_table(pks: np.ndarray, first_seq: int, rng: np.random.Generator, version: int) -> pa.Table:
    """A commit-log segment table (commitlog.py) upserting ``pks`` with new vectors and texts."""
    vectors = unit_rows(CENTRES, SPREAD, len(pks), rng)
    return pa.table(
        {
            SEQ: pa.array(np.arange(first_seq, first_seq + len(pks)), pa.int64()),
            OP: pa.array([OP_UPSERT] * len(pks), pa.string()),
            KEY: pa.array(keys_of(pks), pa.uint64()),
            PK: pa.array(pks, pa.int64()),
            VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
            TEXT: pa.array([f"product {pk} description version {version}" for pk in pks.tolist()], pa.string()),
        }
    )


def build(root: Path, rows: int, rng: np.random.Generator) -> IndexStore:
    """An index of ``rows`` rows, snapshotted; built a chunk at a time so memory stays bounded."""
    store = IndexStore(root, "bench", IndexIdentity(DIM, "cosine", "f32", "synthetic"), HnswParams(), PK)
    store.open()
    for start in range(0, rows, BUILD_CHUNK):
        pks = np.arange(start, min(rows, start + BUILD_CHUNK), dtype=np.int64)
        store.append_segment(upserts_table(pks, start + 1, rng, 0), start + 1, start + len(pks))
        store.take_snapshot()
        print(f"  built {start + len(pks):,}/{rows:,} rows", file=sys.stderr, flush=True)
    return store


@dataclass(frozen=True)
class Round:
    changed: int
    index_bytes: int  # the published snapshot (index + rows files) before the change
    segment_bytes: int  # the new segment on disk
    append: Written
    snapshot: Written


def change_round(store: IndexStore, rows: int, rng: np.random.Generator, version: int) -> Round:
    """Re-embed 1% of the rows: append them as one segment, then take the next snapshot."""
    index_bytes = store.open().snapshot.total_bytes
    changed = np.sort(rng.choice(rows, rows * CHANGED_PERCENT // 100, replace=False)).astype(np.int64)
    first = store.last_seq() + 1
    changes = upserts_table(changed, first, rng, version)
    segment, append = measured(lambda: store.append_segment(changes, first, first + len(changed) - 1))
    _, snapshot = measured(store.take_snapshot)
    return Round(len(changed), index_bytes, segment.bytes, append, snapshot)


def run_size(rows: int) -> list[Round]:
    rng = np.random.default_rng(rows)
    root = Path(tempfile.mkdtemp(prefix="quiver-write-cost-")) / "bench"
    started = time.perf_counter()
    store = build(root, rows, rng)
    print(f"  build of {rows:,} rows: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    rounds = [change_round(store, rows, rng, version) for version in range(1, REPETITIONS + 1)]
    shutil.rmtree(root.parent)  # GBs at the 1M size
    return rounds


def median_spread(values: list[int]) -> str:
    """The median, with min-max when the repetitions differ."""
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:,.0f}" if low == high else f"{median:,.0f} ({low:,}-{high:,})"


def table(results: dict[int, list[Round]]) -> str:
    head = [
        "rows",
        "changed rows",
        "segment bytes on disk",
        "append wchar",
        "append write_bytes",
        "append wchar per 1,000 changed",
        "full index bytes",
        "append / full index",
        "snapshot wchar",
        "snapshot write_bytes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rows, rounds in results.items():
        append = [r.append.wchar for r in rounds]
        per_thousand = [1000 * r.append.wchar // r.changed for r in rounds]
        ratio = statistics.median(r.append.wchar / r.index_bytes for r in rounds)
        cells = [
            f"{rows:,}",
            f"{rounds[0].changed:,}",
            median_spread([r.segment_bytes for r in rounds]),
            median_spread(append),
            median_spread([r.append.write_bytes for r in rounds]),
            median_spread(per_thousand),
            median_spread([r.index_bytes for r in rounds]),
            f"{ratio:.4f}",
            median_spread([r.snapshot.wchar for r in rounds]),
            median_spread([r.snapshot.write_bytes for r in rounds]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sizes() -> list[int]:
    chosen = sys.argv[1:] or os.environ.get("BENCH_SIZE", "100000").split(",")
    return [int(size) for size in chosen]


def main() -> None:
    results = {}
    for rows in sizes():
        print(f"write cost at {rows:,} rows x {DIM} dims", file=sys.stderr, flush=True)
        results[rows] = run_size(rows)
    print(
        f"\nquiver write cost: re-embedding {CHANGED_PERCENT}% of the rows, medians of {REPETITIONS} repetitions (min-max)\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
