"""Fan-out benchmark: the same incremental refresh embedded by one step or by two workers at once.

    make bench-fanout                      # 3 repetitions of each configuration
    BENCH_NEW=3000 BENCH_REPEAT=5 make bench-fanout

The corpus is ``../shared/data/debian_packages.parquet``: ``BENCH_BASE`` rows (default 300) are
embedded first, once, with the single-step asset; the refresh being timed then adds the next
``BENCH_NEW`` rows (default 2,000), embedding ``package`` and ``long_description`` (a paragraph
each; long ones split into chunks). Each repetition starts from a copy of the same base home and
runs the dataset's refresh job (rows -> embeddings -> index) with ``dagster.execute_job`` on a
persistent instance with quiver's pool limit of 1:

    1 step, 1 thread     embeddings.fan_out 1, in-process executor, QUIVER_EMBED_THREADS=1
    1 step, 2 threads    embeddings.fan_out 1, in-process executor, QUIVER_EMBED_THREADS=2
                         (the honest baseline: one process using both cores)
    2 workers x 1 thread embeddings.fan_out 2, multiprocess executor (max_concurrent 2),
                         QUIVER_EMBED_THREADS=1 in each worker

Prints a markdown table of medians: the job's wall seconds, the embeddings asset's span (its first
step's start to its last step's end, from the run's events), and the speed-ups of the fan-out
against each single-step configuration. Exits non-zero if a run embeds anything but the new rows.
Run it alone on the machine (``flock /tmp/bench.lock``): the point is two cores' worth of work.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import dagster as dg

from quiver.pipelines.component import build_definitions
from quiver.resources.spec import load_spec

SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT.parent / "shared" / "data" / "debian_packages.parquet"))
BASE = int(os.environ.get("BENCH_BASE", "300"))
NEW = int(os.environ.get("BENCH_NEW", "2000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
DS = "bench"
CONFIGS = {  # name: (fan_out, executor, threads per process)
    "1 step, 1 thread": (1, "in_process", 1),
    "1 step, 2 threads": (1, "in_process", 2),
    "2 workers x 1 thread": (2, "multiprocess", 1),
}
ONLY = [name.strip() for name in os.environ.get("BENCH_CONFIGS", "").split(",") if name.strip()]  # a subset, by name
COLUMNS = ["pkg_id", "package", "section", "long_description"]


def refresh_job() -> dg.JobDefinition:
    """The refresh job of $QUIVER_DATASETS with $BENCH_EXECUTOR (reconstructed in each step's process)."""
    spec = load_spec(Path(os.environ["QUIVER_DATASETS"]))
    defs = build_definitions(spec, Path(os.environ["QUIVER_HOME"]), executor=os.environ["BENCH_EXECUTOR"], sensors=False)
    return defs.resolve_job_def(f"{DS}_refresh")


def write_spec(path: Path, source: Path, fan_out: int) -> Path:
    entry = {
        "name": DS,
        "from": str(source),
        "primary_key": "pkg_id",
        "columns": ["package", "section"],
        "embeddings": {"columns": ["package", "long_description"], "separator": ": ", "fan_out": fan_out},
    }
    path.write_text(yaml.safe_dump({"datasets": [entry]}, sort_keys=False))
    return path


def run_refresh(work: Path, fan_out: int, executor: str, threads: int, dagster_home: Path) -> dict:
    """One refresh in a fresh process (Dagster caches a reconstructed job per process): its timings."""
    env = {**os.environ, "QUIVER_DATASETS": str(write_spec(work / "datasets.yaml", work / "source.parquet", fan_out)),
           "QUIVER_HOME": str(work / "home"), "BENCH_EXECUTOR": executor, "QUIVER_EMBED_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "_run", str(dagster_home)], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the refresh failed ({executor}, fan_out {fan_out}):\n{done.stderr[-4000:]}")
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    if timing["embedded"] != NEW:
        raise SystemExit(f"expected the refresh to embed the {NEW} new rows, it embedded {timing['embedded']}")
    return timing


def _run(dagster_home: Path) -> None:
    """In the child: the refresh job of $QUIVER_DATASETS, timed; prints its timings as JSON."""
    executor = os.environ["BENCH_EXECUTOR"]
    run_config = {"execution": {"config": {"max_concurrent": 2}}} if executor == "multiprocess" else {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        started = time.perf_counter()
        with dg.execute_job(dg.reconstructable(refresh_job), instance=instance, run_config=run_config) as result:
            wall = time.perf_counter() - started
            if not result.success:
                raise SystemExit("the refresh failed; see the run's events above")
            records = instance.all_logs(result.run_id)
    spans, steps, embedded, per_part = [], {}, None, []
    for record in records:
        event = record.dagster_event
        step = event.step_key if event is not None else None  # the asset's steps: the one, or the graph's ops
        if step is None or not (step == f"{DS}__embeddings" or step.startswith(f"{DS}__embeddings.")):
            continue
        if event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
            spans.append(record.timestamp)
            steps.setdefault(event.step_key.split(".")[-1].split("[")[0], []).append(record.timestamp)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.event_specific_data.materialization.metadata
            embedded = metadata["rows_embedded"].value
            if "embedding_seconds_per_part" in metadata:
                per_part = metadata["embedding_seconds_per_part"].value
    timing = {"wall": wall, "embeddings": max(spans) - min(spans), "embedded": embedded}
    if per_part:  # where the fan-out's time goes: each op's steps, first start to last end
        timing["steps"] = {op.removeprefix(f"{DS}_"): max(times) - min(times) for op, times in steps.items()}
        timing["model_seconds_per_part"] = per_part
    print(json.dumps(timing))


def main() -> None:
    table = pq.read_table(SOURCE, columns=COLUMNS).slice(0, BASE + NEW)
    with tempfile.TemporaryDirectory(prefix="quiver-fanout-") as tmp:
        tmp = Path(tmp)
        dagster_home = tmp / "dagster"
        dagster_home.mkdir()
        shutil.copyfile(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")
        base = tmp / "base"
        base.mkdir()
        pq.write_table(table.slice(0, BASE), base / "source.parquet")
        env = {**os.environ, "QUIVER_DATASETS": str(write_spec(base / "datasets.yaml", base / "source.parquet", 1)),
               "QUIVER_HOME": str(base / "home"), "BENCH_EXECUTOR": "in_process"}
        built = subprocess.run([sys.executable, __file__, "_run", str(dagster_home)], env=env, capture_output=True, text=True, check=False)
        if built.returncode:
            raise SystemExit(f"the base build failed:\n{built.stderr[-4000:]}")
        print(f"base: {BASE} rows embedded; each run adds {NEW} rows of {SOURCE.name} (package: long_description)",
              file=sys.stderr)

        timings: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for repetition in range(REPEAT):
            for name, (fan_out, executor, threads) in CONFIGS.items():  # interleaved: drift hits all alike
                if ONLY and name not in ONLY:
                    continue
                work = tmp / f"run-{repetition}-{fan_out}-{threads}"
                shutil.copytree(base, work)
                pq.write_table(table, work / "source.parquet")
                timing = run_refresh(work, fan_out, executor, threads, dagster_home)
                timings[name].append(timing)
                print(f"  {name}: {timing['wall']:.1f} s (embeddings {timing['embeddings']:.1f} s)", file=sys.stderr)
                shutil.rmtree(work)

    medians = {name: {k: statistics.median(t[k] for t in runs) for k in ("wall", "embeddings")} for name, runs in timings.items() if runs}
    fanned = timings["2 workers x 1 thread"]
    if fanned and "steps" in fanned[0]:
        ops = {op: statistics.median(t["steps"][op] for t in fanned) for op in fanned[0]["steps"]}
        model = statistics.median(max(t["model_seconds_per_part"]) for t in fanned)
        print("fan-out, medians: " + ", ".join(f"{op} steps {s:.1f} s" for op, s in ops.items())
              + f"; the slower part's chunking and embedding alone {model:.1f} s", file=sys.stderr)
    fan = medians.get("2 workers x 1 thread")
    print(f"\nIncremental refresh of {NEW:,} new rows (on {BASE} embedded), medians of {REPEAT} runs, {os.cpu_count()} CPUs\n")
    print("| configuration | refresh job (s) | embeddings asset (s) | embedding rows/s | fan-out speed-up (job) | fan-out speed-up (embeddings) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in medians.items():
        other = fan is not None and name != "2 workers x 1 thread"
        ratio = f"{m['wall'] / fan['wall']:.2f}x" if other else ""
        ratio_e = f"{m['embeddings'] / fan['embeddings']:.2f}x" if other else ""
        print(f"| {name} | {m['wall']:.1f} | {m['embeddings']:.1f} | {NEW / m['embeddings']:.0f} | {ratio} | {ratio_e} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_run"]:
        _run(Path(sys.argv[2]))
    else:
        main()
