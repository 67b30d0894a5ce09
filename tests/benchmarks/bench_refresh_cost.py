"""What a refresh costs against a plain sentence-transformers encode, as a user runs both.

    make bench-refresh-cost                      # 20,000 rows of ../shared/data/debian_packages.parquet
    BENCH_ROWS=5000 BENCH_RSS_ROWS=10000,100000 make bench-refresh-cost    # quicker
    BENCH_PARTS=rss make bench-refresh-cost     # some parts only: plain,build,backend,resume,rss

Every pipeline figure is the wall time of the README's command, ``python -m quiver refresh`` (the
refresh job, then the snapshot job when due, through Dagster, recorded in the instance), in a
process of its own, against a fresh state directory and Dagster instance:

- plain: a ten-line script (import sentence-transformers, load the model, ``encode`` the same
  texts), run as a process: the wall time a user waits for it, and its ``encode`` alone;
- first build with a cold export cache (``QUIVER_MODEL_CACHE`` empty: the ONNX export is built),
  then with a warm one (a new ``QUIVER_HOME``, the export reused);
- a refresh with no change (the same command again);
- the embeddings step's own rows/s (its metadata) against the backend's (``Embedder.embed`` on the
  same texts, in this process);
- resume: a first build killed with SIGKILL once its log says half the rows are committed (and a
  second into the next batch), then run again; rows the rerun embedded against those left;
- peak RSS of the embedding step at 10k, 100k and 1M rows (``refresh_memory.py``: synthetic texts,
  a stand-in model, each size in a process of its own).

Prints markdown tables. The machine is shared: compare within one run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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

from dagster import AssetKey, DagsterInstance

from quiver.resources.embedding import get_embedder
from quiver.resources.embedding.model import resolve_model_path

SOURCE = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
MODEL = "all-MiniLM-L6-v2"
PLAIN_SCRIPT = """
import sys, time, json
import pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
table = pq.read_table(sys.argv[1])
texts = [f"{p}: {d}" for p, d in zip(table["package"].to_pylist(), table["short_description"].to_pylist())]
model = SentenceTransformer(sys.argv[2], device="cpu")
started = time.perf_counter()
vectors = model.encode(texts)
print(json.dumps({"encode_seconds": time.perf_counter() - started, "rows": len(vectors)}))
"""


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "20000"))
    rss_rows = [int(n) for n in os.environ.get("BENCH_RSS_ROWS", "10000,100000,1000000").split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="quiver-bench-cost-"))
    try:
        source = write_source(work, rows)
        texts = [f"{p}: {d}" for p, d in zip(*(pq.read_table(source, columns=[c]).column(0).to_pylist() for c in ("package", "short_description")))]
        cold_cache, warm_cache = work / "cache-cold", work / "cache-warm"
        report: dict = {"rows": rows}

        parts = set(os.environ.get("BENCH_PARTS", "plain,build,backend,resume,rss").split(","))
        if "plain" in parts:
            step("plain sentence-transformers script")
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(source), str(resolve_model_path(MODEL))],
                                 capture_output=True, text=True, env=env(work / "unused", cold_cache), check=True)
            report["plain"] = {"wall": time.perf_counter() - started, **json.loads(out.stdout.strip().splitlines()[-1])}
        if "build" in parts:
            step("first build, cold export cache")
            report["cold"] = build(work / "cold", cold_cache, work)
            step("first build, warm export cache")
            shutil.copytree(cold_cache, warm_cache)
            report["warm"] = build(work / "warm", warm_cache, work)
            step("refresh with no change")
            report["no_change"] = [timed(env(work / "warm", warm_cache, work)) for _ in range(3)]
        if "backend" in parts:
            step("backend alone")
            embedder = get_embedder(MODEL)
            embedder.embed(texts[:256])
            started = time.perf_counter()
            embedder.embed(texts)
            report["backend_rows_per_second"] = len(texts) / (time.perf_counter() - started)
        if "resume" in parts:
            step("resume after SIGKILL")
            report["resume"] = resume(work / "resume", warm_cache, work, rows)
        if "rss" in parts:
            step(f"peak RSS of the embedding step at {rss_rows}")
            report["rss"] = [rss(work / "rss", n) for n in rss_rows]
        print_tables(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step(what: str) -> None:
    print(f"-- {what} ...", file=sys.stderr, flush=True)


def write_source(work: Path, rows: int) -> Path:
    table = pq.read_table(SOURCE, columns=["pkg_id", "package", "section", "short_description"]).slice(0, rows)
    source = work / "src.parquet"
    pq.write_table(table, source)
    (work / "datasets.yaml").write_text(yaml.safe_dump({"datasets": [{
        "name": "bench", "from": str(source), "primary_key": "pkg_id",
        "columns": ["package", "section", "short_description"],
        "embeddings": {"columns": ["package", "short_description"], "separator": ": "},
    }]}))
    return source


def env(home: Path, cache: Path, work: Path | None = None) -> dict:
    dagster_home = home / "dagster"
    if work is not None and not (dagster_home / "dagster.yaml").exists():
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")
    return os.environ | {
        "QUIVER_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "QUIVER_MODEL_CACHE": str(cache),
        "QUIVER_DATASETS": str((work or home) / "datasets.yaml"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }


REFRESH = [sys.executable, "-m", "quiver", "refresh"]


def timed(environment: dict) -> float:
    started = time.perf_counter()
    out = subprocess.run(REFRESH, capture_output=True, text=True, env=environment, cwd=ROOT, check=False)
    if out.returncode:
        raise SystemExit(f"{' '.join(REFRESH)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - started


def build(home: Path, cache: Path, work: Path) -> dict:
    return {"seconds": timed(env(home, cache, work)), "metadata": metadata(home)}


def metadata(home: Path) -> dict:
    instance = DagsterInstance.from_config(str(home / "dagster"))
    out = {}
    for stage in ("rows", "embeddings", "index", "snapshot"):
        event = instance.get_latest_materialization_event(AssetKey(["bench", stage]))
        found = event.asset_materialization.metadata if event is not None else {}
        out[stage] = {k: getattr(v, "value", v) for k, v in found.items()}
    instance.dispose()
    return out


def resume(home: Path, cache: Path, work: Path, rows: int) -> dict:
    """SIGKILL the first build once half its rows are committed (and a second into the next batch)."""
    environment = env(home, cache, work)
    process = subprocess.Popen(
        REFRESH,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment, cwd=ROOT, start_new_session=True,
    )
    committed = 0
    for line in process.stderr:
        if match := re.search(r"embedded ([\d,]+)/([\d,]+) rows", line):
            committed = int(match[1].replace(",", ""))
            if committed * 2 >= rows:
                time.sleep(1.0)
                os.killpg(process.pid, signal.SIGKILL)
                break
    process.wait()
    if not committed:
        raise SystemExit("the build ended before its log said half its rows were committed")
    rerun = timed(environment)
    embedded = metadata(home)["embeddings"]
    return {"committed_before_kill": committed, "rerun_embedded": embedded["rows_embedded"],
            "rerun_unchanged": embedded["rows_unchanged"], "rerun_seconds": rerun, "batch": 4096}


def rss(work: Path, rows: int) -> dict:
    script = ROOT / "tests" / "benchmarks" / "refresh_memory.py"
    subprocess.run([sys.executable, str(script), "build", str(rows), str(work)], check=True)
    out = subprocess.run([sys.executable, str(script), "refresh", str(work)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_tables(r: dict) -> None:
    rows = r["rows"]
    print(f"\nquiver refresh cost: {rows:,} rows of {SOURCE.name} ('package: short_description'), {os.cpu_count()} cores\n")
    plain = r.get("plain")
    if plain or "warm" in r:
        print("| run | seconds (wall) | against the plain script |")
        print("|---|---:|---:|")
    if plain:
        print(f"| plain script: import, load, encode (process) | {plain['wall']:.1f} | 1.00x |")
        print(f"| plain script: encode alone | {plain['encode_seconds']:.1f} | |")
    if "warm" in r:
        for label, key in (("cold export cache", "cold"), ("warm export cache", "warm")):
            total = r[key]["seconds"]
            against = f"{plain['wall'] / total:.2f}x faster" if plain else ""
            print(f"| first build, {label}: `python -m quiver refresh` (refresh + snapshot) | {total:.1f} | {against} |")
        print(f"| refresh with no change: `python -m quiver refresh`, median of 3 | {statistics.median(r['no_change']):.1f} | |")

    if "warm" in r and "backend_rows_per_second" in r:
        emb, backend = r["warm"]["metadata"]["embeddings"], r["backend_rows_per_second"]
        print("\n| embedding rows/s | value |")
        print("|---|---:|")
        print(f"| backend alone (Embedder.embed, this process) | {backend:.0f} |")
        print(f"| embeddings step (warm build's metadata) | {emb['embedding_rows_per_second']:.0f} ({emb['embedding_rows_per_second'] / backend:.2f}x the backend) |")
        if plain:
            print(f"| plain script's encode | {rows / plain['encode_seconds']:.0f} |")
    if "warm" in r:
        meta = r["warm"]["metadata"]
        emb = meta["embeddings"]
        print("\n| stage of the warm build | seconds |")
        print("|---|---:|")
        print(f"| rows | {meta['rows'].get('seconds', float('nan')):.1f} |")
        print(f"| embeddings: plan / embed / commit | {emb['plan_seconds']:.1f} / {emb['embedding_seconds']:.1f} / {emb['commit_seconds']:.1f} |")
        print(f"| index (commit-log segment) | {meta['index']['seconds']:.1f} |")
        print(f"| snapshot | {meta['snapshot'].get('seconds', float('nan')):.1f} |")

    if "resume" in r:
        res = r["resume"]
        left = rows - res["committed_before_kill"]
        print("\n| resume after SIGKILL | rows |")
        print("|---|---:|")
        print(f"| committed before the kill (its log) | {res['committed_before_kill']:,} |")
        print(f"| found already embedded by the rerun | {res['rerun_unchanged']:,} |")
        print(f"| embedded by the rerun | {res['rerun_embedded']:,} ({res['rerun_embedded'] / rows:.0%} of {rows:,}; left at the kill: {left:,}) |")
        print(f"| rerun wall seconds | {res['rerun_seconds']:.1f} |")

    if r.get("rss"):
        print("\n| rows | batches | peak RSS of the refresh process (MiB) | after imports (MiB) | against the smallest | seconds |")
        print("|---:|---:|---:|---:|---:|---:|")
        smallest = r["rss"][0]["peak_mib"]
        for m in r["rss"]:
            print(f"| {m['rows']:,} | {m['batches']} | {m['peak_mib']:.0f} | {m['baseline_peak_mib']:.0f} | {m['peak_mib'] / smallest:.2f}x | {m['seconds']:.0f} |")


if __name__ == "__main__":
    main()
