"""Scale benchmark: the single writer's commit rate, segment appends, and snapshot builds at 1M rows.

    make bench-scale              # writer at 100k rows, snapshots of 1M f32 and 200k f32/f16/i8 (~13 min, 2 cores)
    .venv/bin/python tests/benchmarks/bench_scale.py --rows 100000 --dtype-rows 0 --repeats 3   # quick
    .venv/bin/python tests/benchmarks/bench_scale.py --parts snapshot --rows 100000,300000,1000000
    .venv/bin/python tests/benchmarks/bench_scale.py --parts commit --base-rows 1000000

Every option has an environment variable for make (``BENCH_SCALE_ROWS``, ``BENCH_SCALE_DTYPE_ROWS``,
``BENCH_SCALE_DTYPES``, ``BENCH_SCALE_PARTS``, ``BENCH_SCALE_BASE_ROWS``, ``BENCH_SCALE_BATCHES``,
``BENCH_SCALE_REPEATS``, ``BENCH_SCALE_VECTORS``), named by ``--help``.

What it measures, all on this machine, in this run (docs/scale.md projects it to 10M and 100M):

1. **The writer** (``--parts commit``): a DuckDB file with ``--base-rows`` rows in ``scale_rows``
   (about 80 characters of text a row, three served columns), first embedded and committed in
   batches of 10,000. Then, per batch size (``--batches``) and kind (insert: new primary keys;
   update: existing rows whose text changed), ``--repeats`` refreshes, each timed step by step as
   the engine runs them: ``plan_changes`` (the diff over the whole table), ``read_rows`` (the
   batch's text), ``commit_changes`` (the rows, their vectors and change records in one DuckDB
   transaction: I1), the checkpoint a refresh takes when it leaves a big WAL, ``changes_after``
   (what the index asset reads back) and ``IndexStore.append_segment`` (the commit-log segment:
   Parquet, checksummed, fsynced, renamed). Connections are the refresh's own: ``writer_settings``
   and a 64 MB DuckDB memory limit (``MemoryLimit``). Vectors are random unit vectors of 384
   dimensions, no model: the point is what the writer costs, and a model's cost is
   ``make bench-embedding``'s. Medians over the repeats; for the first build, also the median
   commit over its first and last tenth (does a commit slow down as the table grows?).
2. **Snapshots** (``--parts snapshot``): a commit log of N upserts (segments of 100,000 rows:
   pk, u64 key, vector, one served text column), then ``IndexStore.take_snapshot`` in a process of
   its own (the first snapshot: every vector goes into a new HNSW graph, M 16, ef_construction
   128, all cores). Reported: wall time of ``take_snapshot`` and of its phases (read and check the
   log, fold it, build the graph, write and checksum the snapshot), peak RSS (``VmHWM``) after
   imports and after each phase, usearch's own memory figure, and the snapshot's bytes on disk
   (``index.usearch`` and ``rows.parquet``). f32 at each of ``--rows``; f32, f16 and i8 at
   ``--dtype-rows``. Vectors are clustered (1,000 gaussian centres plus noise, unit length, as in
   ``bench_serving.py``; ``--vectors uniform`` for uniform random unit vectors, which HNSW builds
   about twice as slowly: embeddings are not uniform noise).

Prints markdown tables; ``--json PATH`` also writes every figure. The machine is shared: compare
within one run, and run it alone (``flock /tmp/bench.lock make bench-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources import warehouse
from quiver.resources.index import IndexStore, commitlog, snapshot
from quiver.resources.index.commitlog import KEY, LOG_DIR, OP, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.snapshot import INDEX_FILE, ROWS_FILE
from quiver.resources.values import md_table
from quiver.resources.warehouse.writer_memory import REFRESH_MEMORY_LIMIT, MemoryLimit, checkpoint_a_big_wal
from tests.benchmarks.refresh_memory import writer_connection

DIM = 384
MODEL = "synthetic-random"  # the model identity hashed into the content hashes; no model runs
PK = "id"
LAYOUT = warehouse.TableLayout(dataset="scale", primary_key=PK, text_columns=("title", "body"), separator=": ")
BASE_BATCH = 10_000  # the first build's batch (the refresh's default is 4,096; fewer commits here)
LOG_SEGMENT_ROWS = 100_000  # upserts per segment of the snapshot benchmark's log
PARAMS = HnswParams(m=16, ef_construction=128, ef_search=64)
WORDS = [
    "library",
    "tool",
    "python",
    "data",
    "server",
    "client",
    "network",
    "file",
    "system",
    "package",
    "module",
    "driver",
    "kernel",
    "font",
    "theme",
    "audio",
    "video",
    "image",
    "text",
    "parser",
    "compiler",
    "runtime",
    "database",
    "query",
    "index",
    "graph",
    "plugin",
    "editor",
]
BODY = (  # about 70 characters of words, different for every row (as refresh_memory.py builds them)
    "list_aggregate(list_transform(range(11), j -> ["
    + ", ".join(f"'{w}'" for w in WORDS)
    + f"][1 + ((i * 7 + j * 13 + i // (j + 1)) % {len(WORDS)})]), 'string_agg', ' ')"
)


def step(what: str) -> None:
    print(f"-- {what}", file=sys.stderr, flush=True)


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- 1. the writer ---------------------------------------------------------------------------------
def writer_rates(work: Path, base_rows: int, batches: list[int], repeats: int, seed: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    database = work / "scale.duckdb"
    rng = np.random.default_rng(seed)

    connect = partial(writer_connection, database)

    identity = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model=MODEL)
    store = IndexStore(work / "index", "scale", identity, PARAMS, PK)
    store.open()
    with connect() as conn:
        conn.execute(
            f"CREATE TABLE scale_rows AS SELECT i AS id, 'pkg-' || i AS title, {BODY} AS body, "
            f"(i % 50)::INTEGER AS section FROM range({base_rows}) t(i)"
        )
    next_id = base_rows

    def refresh(batch_rows: int) -> dict:
        """One refresh as the engine runs it (plan, then per batch: read, commit; then checkpoint,
        changes_after, segment), each step timed."""
        memory = MemoryLimit(REFRESH_MEMORY_LIMIT)
        t: dict = {}
        clock = time.perf_counter()
        with memory.connection(connect) as conn:
            plan = memory.retrying(conn, partial(warehouse.plan_changes, conn, LAYOUT, MODEL))
        t["plan"] = time.perf_counter() - clock
        t["rows"] = plan.to_embed.num_rows
        t["commit"], t["read"], t["commits"], t["each_commit"] = 0.0, 0.0, 0, []
        base_seq = plan.base_seq
        for start in range(0, plan.to_embed.num_rows, batch_rows):
            batch = plan.to_embed.slice(start, batch_rows)
            with memory.connection(connect) as conn:
                clock = time.perf_counter()
                rows = memory.retrying(conn, partial(warehouse.read_rows, conn, LAYOUT, plan, batch))
                t["read"] += time.perf_counter() - clock
                sliced = replace(  # as embed_refresh slices a plan
                    plan,
                    base_seq=base_seq,
                    to_embed=batch,
                    served_only=plan.served_only.slice(start, batch_rows),
                    deleted=plan.deleted.slice(start, batch_rows),
                )
                vectors = unit_vectors(rng, rows.num_rows)
                clock = time.perf_counter()
                committed = memory.retrying(
                    conn, partial(warehouse.commit_changes, conn, LAYOUT, sliced, rows, vectors)
                )
                t["each_commit"].append(time.perf_counter() - clock)
                t["commit"] += t["each_commit"][-1]
                t["commits"] += 1
                base_seq = committed.last_seq
        with memory.connection(connect) as conn:
            clock = time.perf_counter()
            wal = database.with_name(database.name + ".wal")
            t["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
            memory.retrying(conn, partial(checkpoint_a_big_wal, conn))
            t["checkpoint"] = time.perf_counter() - clock
        after = store.last_seq()
        with connect() as conn:  # the index asset reads with a connection of its own
            clock = time.perf_counter()
            changes, last = warehouse.changes_after(conn, LAYOUT, after)
            t["changes_after"] = time.perf_counter() - clock
        clock = time.perf_counter()
        segment = store.append_segment(changes, after + 1, last)
        t["append"] = time.perf_counter() - clock
        t["segment_bytes"] = segment.bytes
        t["segment_records"] = changes.num_rows
        t["vector_bytes"] = changes.num_rows * DIM * 4
        return t

    figures: dict = {"base_rows": base_rows, "runs": {}}
    step(f"writer: first build of {base_rows:,} rows in batches of {BASE_BATCH:,}")
    figures["first_build"] = refresh(BASE_BATCH)
    for batch_rows in batches:
        for kind in ("insert", "update"):
            runs = []
            for i in range(repeats):
                with connect() as conn:
                    if kind == "insert":
                        conn.execute(
                            f"INSERT INTO scale_rows SELECT i, 'pkg-' || i, {BODY}, (i % 50)::INTEGER "
                            f"FROM range({next_id}, {next_id + batch_rows}) t(i)"
                        )
                        next_id += batch_rows
                    else:  # a new text for rows already embedded: new content hash, new vector
                        ids = pa.table({PK: pa.array(rng.choice(next_id, batch_rows, replace=False), pa.int64())})
                        conn.register("_ids", ids)
                        conn.execute(f"UPDATE scale_rows SET body = body || ' v{i}' WHERE id IN (SELECT id FROM _ids)")
                        conn.unregister("_ids")
                runs.append(refresh(batch_rows))
                step(f"writer: {kind} {batch_rows:,} rows, run {i + 1}/{repeats}: commit {runs[-1]['commit']:.2f}s")
            figures["runs"][f"{kind} {batch_rows}"] = runs
    with connect() as conn:
        figures["table_rows"] = conn.execute("SELECT count(*) FROM scale_embeddings").fetchone()[0]
    figures["database_bytes"] = database.stat().st_size
    return figures


def writer_tables(f: dict) -> str:
    def rate(rows, seconds):
        return f"{rows / seconds:,.0f}" if seconds else "-"

    headers = [
        "refresh (rows in it)",
        "runs",
        "commit_changes s",
        "commit rows/s",
        "plan s",
        "read_rows s",
        "checkpoint s",
        "writer rows/s (plan+read+commit+checkpoint)",
    ]
    lines = []
    rows = [("first build", [f["first_build"]])] + [(name, runs) for name, runs in f["runs"].items()]
    for name, runs in rows:
        n = runs[0]["rows"]
        commit = median([r["commit"] for r in runs])
        whole = median([r["plan"] + r["read"] + r["commit"] + r["checkpoint"] for r in runs])
        label = f"{name} ({n:,} rows, {runs[0]['commits']} commit{'s' if runs[0]['commits'] > 1 else ''})"
        lines.append(
            [
                label,
                len(runs),
                f"{commit:.3f}",
                rate(n, commit),
                f"{median([r['plan'] for r in runs]):.3f}",
                f"{median([r['read'] for r in runs]):.3f}",
                f"{median([r['checkpoint'] for r in runs]):.3f}",
                rate(n, whole),
            ]
        )
    out = [md_table(headers, lines), ""]
    headers = [
        "segment (records)",
        "changes_after s",
        "append_segment s",
        "append rows/s",
        "append MB/s (file)",
        "append MB/s (raw f32 vectors)",
        "segment bytes / raw vector bytes",
    ]
    lines = []
    for name, runs in rows:
        n = runs[0]["segment_records"]
        append = median([r["append"] for r in runs])
        seg = median([r["segment_bytes"] for r in runs])
        lines.append(
            [
                f"{name} ({n:,})",
                f"{median([r['changes_after'] for r in runs]):.3f}",
                f"{append:.3f}",
                rate(n, append),
                f"{seg / append / 1e6:.1f}",
                f"{n * DIM * 4 / append / 1e6:.1f}",
                f"{seg / (n * DIM * 4):.2f}",
            ]
        )
    out.append(md_table(headers, lines))
    each = f["first_build"]["each_commit"]
    if len(each) >= 4:  # does a commit slow down as the table grows?
        tenth = max(2, len(each) // 10)
        out.append(
            f"\nFirst build, one commit of {BASE_BATCH:,} rows: median {median(each[:tenth]):.3f} s over the first "
            f"{tenth} commits (table up to {tenth * BASE_BATCH:,} rows), {median(each[-tenth:]):.3f} s over the last {tenth} "
            f"(from {(len(each) - tenth) * BASE_BATCH:,} rows)."
        )
    out.append(
        f"\nTable after the runs: {f['table_rows']:,} embedded rows; DuckDB file {f['database_bytes'] / 2**20:,.0f} MiB."
    )
    return "\n".join(out)


# -- 2. snapshots ----------------------------------------------------------------------------------
def write_log(root: Path, rows: int, vectors: str, seed: int) -> dict:
    """A commit log of ``rows`` upserts under ``root`` (an index directory of f32 identity)."""
    identity = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model=MODEL)
    store = IndexStore(root, "scale", identity, PARAMS, PK)
    store.open()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, DIM))
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    started, appended, written = time.perf_counter(), 0.0, 0
    for start in range(0, rows, LOG_SEGMENT_ROWS):
        pks = np.arange(start, min(rows, start + LOG_SEGMENT_ROWS))
        if vectors == "uniform":
            batch = unit_vectors(rng, len(pks))
        else:
            batch = centres[rng.integers(len(centres), size=len(pks))] + rng.normal(
                scale=0.5 / np.sqrt(DIM), size=(len(pks), DIM)
            )
            batch = (batch / np.linalg.norm(batch, axis=1, keepdims=True)).astype(np.float32)
        table = pa.table(
            {
                SEQ: pa.array(pks + 1, pa.int64()),
                OP: pa.array([OP_UPSERT] * len(pks), pa.string()),
                KEY: pa.array(pks.astype(np.uint64) + 1, pa.uint64()),
                PK: pa.array(pks, pa.int64()),
                VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(batch.ravel(), pa.float32()), DIM),
                "title": pa.array(
                    [f"pkg-{pk}: a served column of about forty chars" for pk in pks.tolist()], pa.string()
                ),
            }
        )
        clock = time.perf_counter()
        ref = store.append_segment(table, start + 1, start + len(pks))
        appended += time.perf_counter() - clock
        written += ref.bytes
    return {"rows": rows, "log_bytes": written, "append_s": appended, "build_s": time.perf_counter() - started}


def snapshot_child(root: Path, dtype: str) -> None:
    """In a process of its own: ``take_snapshot`` of ``root`` as ``dtype``; prints one JSON line."""

    def peak_mib() -> float:  # VmHWM, not ru_maxrss (which Linux carries across exec)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")

    phases: dict = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            clock = time.perf_counter()
            result = fn(*args, **kwargs)
            phases[name] = {"s": time.perf_counter() - clock, "peak_mib": peak_mib()}
            if name == "build graph":
                phases[name]["usearch_memory_bytes"] = int(result.index.memory_usage)
                phases[name]["nodes"] = int(result.index.stats.nodes)
                phases[name]["edges"] = int(result.index.stats.edges)
            return result

        return wrapper

    # Instrumentation only: the store calls these through their modules, so wrapping them here times
    # its phases without changing what it does.
    commitlog.read_chain = timed("read log", commitlog.read_chain)
    commitlog.fold = timed("fold", commitlog.fold)
    snapshot.apply_changes = timed("build graph", snapshot.apply_changes)
    snapshot.write_snapshot = timed("write snapshot", snapshot.write_snapshot)
    baseline = peak_mib()
    identity = IndexIdentity(dim=DIM, metric="cosine", dtype=dtype, model=MODEL)
    store = IndexStore(root, "scale", identity, PARAMS, PK)
    clock = time.perf_counter()
    result = store.take_snapshot()
    seconds = time.perf_counter() - clock
    files = result.entry.files
    print(
        json.dumps(
            {
                "dtype": dtype,
                "vectors": result.entry.vectors,
                "seconds": seconds,
                "phases": phases,
                "baseline_peak_mib": baseline,
                "peak_mib": peak_mib(),
                "index_bytes": files[INDEX_FILE].bytes,
                "rows_bytes": files[ROWS_FILE].bytes,
                "threads": len(os.sched_getaffinity(0)),
            }
        )
    )


def snapshot_run(work: Path, log_root: Path, rows: int, dtype: str) -> dict:
    """A fresh index directory of ``dtype`` over the log at ``log_root`` (hard links), then the child."""
    root = work / f"snap-{rows}-{dtype}"
    shutil.rmtree(root, ignore_errors=True)
    identity = IndexIdentity(dim=DIM, metric="cosine", dtype=dtype, model=MODEL)
    IndexStore(root, "scale", identity, PARAMS, PK).open()
    (root / LOG_DIR).mkdir(exist_ok=True)
    for segment in sorted((log_root / LOG_DIR).iterdir()):
        os.link(segment, root / LOG_DIR / segment.name)  # segments are immutable; identity has no dtype
    step(f"snapshot: {rows:,} x {DIM} {dtype}")
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "_snapshot", str(root), dtype],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the snapshot process failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - clock
    figures["load_before"] = os.getloadavg()[0]
    shutil.rmtree(root)
    step(f"snapshot: {rows:,} {dtype}: {figures['seconds']:.1f}s, peak {figures['peak_mib']:,.0f} MiB")
    return figures


def snapshot_table(logs: dict, runs: list[dict]) -> str:
    headers = [
        "vectors x 384",
        "dtype",
        "take_snapshot s",
        "read log s",
        "fold s",
        "build graph s",
        "write s",
        "vectors/s",
        "peak RSS MiB (after imports)",
        "usearch memory MiB",
        "index.usearch MiB",
        "rows.parquet MiB",
        "bytes/vector (index)",
        "log MiB",
    ]
    lines = []
    for r in runs:
        p = r["phases"]
        n = r["vectors"]
        lines.append(
            [
                n,
                r["dtype"],
                f"{r['seconds']:.1f}",
                f"{p['read log']['s']:.1f}",
                f"{p['fold']['s']:.1f}",
                f"{p['build graph']['s']:.1f}",
                f"{p['write snapshot']['s']:.1f}",
                f"{n / r['seconds']:,.0f}",
                f"{r['peak_mib']:,.0f} ({r['baseline_peak_mib']:,.0f})",
                f"{p['build graph']['usearch_memory_bytes'] / 2**20:,.0f}",
                f"{r['index_bytes'] / 2**20:,.1f}",
                f"{r['rows_bytes'] / 2**20:,.1f}",
                f"{r['index_bytes'] / n:,.0f}",
                f"{logs[n]['log_bytes'] / 2**20:,.0f}",
            ]
        )
    out = [md_table(headers, lines), ""]
    headers = [
        "vectors",
        "dtype",
        "peak MiB after read log",
        "after fold",
        "after build graph",
        "after write",
        "graph edges / node",
    ]
    lines = [
        [
            r["vectors"],
            r["dtype"],
            *(f"{r['phases'][k]['peak_mib']:,.0f}" for k in ("read log", "fold", "build graph", "write snapshot")),
            f"{r['phases']['build graph']['edges'] / max(1, r['phases']['build graph']['nodes']):.1f}",
        ]
        for r in runs
    ]
    out.append(md_table(headers, lines))
    return "\n".join(out)


def sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip() and int(n)]


def main() -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", default=env("BENCH_SCALE_PARTS", "commit,snapshot"), help="commit,snapshot (BENCH_SCALE_PARTS)"
    )
    parser.add_argument(
        "--rows",
        default=env("BENCH_SCALE_ROWS", "1000000"),
        help="f32 snapshot sizes, comma separated (BENCH_SCALE_ROWS)",
    )
    parser.add_argument(
        "--dtype-rows",
        default=env("BENCH_SCALE_DTYPE_ROWS", "200000"),
        help="sizes for every --dtypes; 0: none (BENCH_SCALE_DTYPE_ROWS)",
    )
    parser.add_argument("--dtypes", default=env("BENCH_SCALE_DTYPES", "f32,f16,i8"), help="(BENCH_SCALE_DTYPES)")
    parser.add_argument(
        "--vectors",
        choices=("clustered", "uniform"),
        default=env("BENCH_SCALE_VECTORS", "clustered"),
        help="(BENCH_SCALE_VECTORS)",
    )
    parser.add_argument(
        "--base-rows",
        type=int,
        default=int(env("BENCH_SCALE_BASE_ROWS", "100000")),
        help="rows embedded before the timed refreshes (BENCH_SCALE_BASE_ROWS)",
    )
    parser.add_argument(
        "--batches",
        default=env("BENCH_SCALE_BATCHES", "1000,10000"),
        help="rows per timed refresh, comma separated (BENCH_SCALE_BATCHES)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=int(env("BENCH_SCALE_REPEATS", "5")),
        help="refreshes per batch size and kind (BENCH_SCALE_REPEATS)",
    )
    parser.add_argument("--work", help="a directory for the files (default: a new temporary one, removed after)")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="quiver-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict = {"cores": os.cpu_count(), "load_at_start": os.getloadavg()[0], "vectors": args.vectors}
    try:
        if "commit" in parts:
            report["writer"] = writer_rates(
                work / "writer", args.base_rows, sizes(args.batches), args.repeats, args.seed
            )
            shutil.rmtree(work / "writer")
        if "snapshot" in parts:
            plan = [(n, "f32") for n in sizes(args.rows)]
            dtype_rows = sizes(args.dtype_rows)
            for n in dtype_rows:
                plan += [(n, d) for d in args.dtypes.split(",") if (n, d) not in plan]
            logs, runs = {}, []
            for n in sorted({n for n, _ in plan}):
                step(f"log: {n:,} upserts ({args.vectors})")
                log_root = work / f"log-{n}"
                shutil.rmtree(log_root, ignore_errors=True)
                logs[n] = write_log(log_root, n, args.vectors, args.seed)
                for rows, dtype in plan:
                    if rows == n:
                        runs.append(snapshot_run(work, log_root, n, dtype))
                shutil.rmtree(log_root)
            report["logs"], report["snapshots"] = logs, runs
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    print(
        f"\nquiver scale benchmark: {os.cpu_count()} cores, load {report['load_at_start']:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end, {seconds:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    if "writer" in report:
        w = report["writer"]
        print(
            f"### The writer: {w['base_rows']:,} rows embedded first, then {args.repeats} refreshes per batch size and "
            f"kind; random unit vectors x {DIM} (no model), medians\n"
        )
        print(writer_tables(w))
        print()
    if "snapshots" in report:
        print(
            f"### Snapshots: the first snapshot of a log of N upserts ({args.vectors} unit vectors x {DIM}), "
            f"M {PARAMS.m}, ef_construction {PARAMS.ef_construction}, {report['snapshots'][0]['threads'] if report['snapshots'] else '-'} threads\n"
        )
        for n, log in report["logs"].items():
            print(
                f"log of {n:,} upserts: {log['log_bytes'] / 2**20:,.0f} MiB in {log['append_s']:.1f} s of append_segment "
                f"({n / log['append_s']:,.0f} rows/s, {log['log_bytes'] / log['append_s'] / 1e6:,.0f} MB/s)"
            )
        print()
        print(snapshot_table(report["logs"], report["snapshots"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_snapshot":
        snapshot_child(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
