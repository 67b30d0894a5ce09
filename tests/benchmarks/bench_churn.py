"""Churn benchmark: 1,000,000 mixed adds, updates and deletes on an index of 100,000 vectors.

    make bench-churn                                   # the issue's figure (many minutes)
    BENCH_CHURN_OPS=100000 BENCH_CHURN_ROWS=20000 make bench-churn   # a shorter run

Runs the workload of churn_workload.py (the same one tests/engine/test_churn.py runs small) and
prints one table: operations, live count of the reader against the model, removed keys seen in
search results (must be 0), memory against a fresh index over the same live rows, recall@10,
rebuilds and time. Exits non-zero when any promise broke, listing the first failures.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.churn_workload import MEMORY_BOUND, RECALL_BOUND, ChurnFigures, ChurnPlan, full_plan, run_churn


def plan_from_env() -> ChurnPlan:
    plan = full_plan()
    overrides = {
        "operations": int(os.environ.get("BENCH_CHURN_OPS", plan.operations)),
        "initial_rows": int(os.environ.get("BENCH_CHURN_ROWS", plan.initial_rows)),
        "dim": int(os.environ.get("BENCH_CHURN_DIM", plan.dim)),
    }
    # Keep the shape of the full plan: a segment changes 10% of the rows, so a shrink phase passes
    # the rebuild bound.
    overrides["batch_ops"] = max(10, overrides["initial_rows"] // 10)
    return dataclasses.replace(plan, **overrides)


def table_rows(plan: ChurnPlan, f: ChurnFigures) -> list[tuple[str, str, str]]:
    p = plan.params
    phases = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in f.seconds.items() if name != "total")
    return [
        (
            "initial rows x dims",
            f"{plan.initial_rows:,} x {plan.dim}",
            f"m={p.m} ef_construction={p.ef_construction} ef_search={p.ef_search}, {plan.clusters} clusters",
        ),
        (
            "operations",
            f"{f.operations:,}",
            f"adds {f.adds:,} (of which re-adds of deleted keys {f.readds:,}), updates {f.updates:,}, deletes {f.deletes:,}",
        ),
        (
            "segments / snapshots / rebuilds",
            f"{f.batches} / {f.snapshots} / {f.rebuilds}",
            f"{plan.batch_ops:,} ops per segment, a snapshot every {plan.snapshot_every}, rebuild past {plan.rebuild_tombstone_percent:g}% tombstones",
        ),
        (
            "live count: reader / model",
            f"{f.live_reader:,} / {f.live_model:,}",
            f"{len(f.count_mismatches)} mismatches over {f.checks} checks and {f.snapshots} snapshots",
        ),
        (
            "removed keys seen in results",
            f"{len(f.ghosts)}",
            f"of {f.hits_checked:,} hits from {f.queries:,} queries (k={plan.k} and k={plan.ghost_k}); must be 0",
        ),
        (
            "stale vectors / stale rows / dup or short",
            f"{len(f.stale_hits)} / {len(f.wrong_rows)} / {len(f.duplicate_or_short)}",
            "a live key scored or served as an older version; must be 0",
        ),
        (
            "recall@10: min / median",
            f"{min(f.recalls):.4f} / {statistics.median(f.recalls):.4f}",
            f"{f.checks} checks of {plan.queries} queries against exact search; bound {RECALL_BOUND}",
        ),
        (
            "tombstones after a snapshot: max",
            f"{max(f.tombstone_percents):.1f}%",
            f"of the vectors; bound {plan.rebuild_tombstone_percent:g}%",
        ),
        (
            "index file vs fresh: max",
            f"{max(f.file_ratios, default=float('nan')):.3f}x",
            f"{len(f.file_ratios)} snapshots with >= {plan.memory_min_tombstone_percent:g}% tombstones; bound {MEMORY_BOUND}x",
        ),
        (
            "index resident memory vs fresh: max",
            f"{max(f.resident_ratios, default=float('nan')):.3f}x",
            "growth of RSS when each is loaded (not viewed) from its file",
        ),
        ("time (s)", f"{f.seconds['total']:.0f}", phases),
    ]


def main() -> int:
    plan = plan_from_env()
    root = Path(tempfile.mkdtemp(prefix="quiver-churn-")) / "churn"
    print(f"churn: {plan.operations:,} operations on {plan.initial_rows:,} x {plan.dim} in {root}", file=sys.stderr)
    started = time.perf_counter()
    figures = run_churn(root, plan, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    shutil.rmtree(root.parent)
    rows = table_rows(plan, figures)
    width = max(len(r[0]) for r in rows)
    print(f"\nquiver churn benchmark, {os.cpu_count()} cores, {time.perf_counter() - started:.0f} s\n")
    print(f"{'measure'.ljust(width)}  {'value':>18}  note")
    print(f"{'-' * width}  {'-' * 18}  ----")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>18}  {note}")
    failures = figures.failures()
    print(f"\n{'PASS' if not failures else f'FAIL: {len(failures)} broken promises'}")
    for line in failures[:20]:
        print(f"  {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
