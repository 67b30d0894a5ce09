"""Freshness: from a source file landing to its rows being searchable, with the real daemon.

A dataset of BENCH_FRESHNESS_ROWS rows of ../shared/data/debian_packages.parquet is built; then
`dagster-daemon run` starts with the project's workspace, its dagster.yaml and the *default*
sensor intervals (30 s for sources; QUIVER_SENSOR_INTERVAL_SECONDS unset), and
BENCH_FRESHNESS_TRIALS times a file of 100 new rows lands in the source. A reader (what the search
helper serves from) polls every 0.2 s until it serves the new rows' last seq.

Per trial: when the sensor queued the refresh run, when the run started and ended, and when the
rows were searchable, all from the landing. Goal: searchable within one sensor interval plus the
refresh itself (run queued -> run ended). Prints a table and writes JSON beside the state.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pyarrow.parquet as pq

from quiver.resources.index import IndexReader
from quiver.sensors.settings import DEFAULTS
from tests.conftest import dataset_entry, write_spec
from tests.dagster.daemon_harness import Daemon
from tests.dagster.helpers import materialize_all

CORPUS = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
DS = "packages"
BATCH = 100
COLUMNS = ["pkg_id", "package", "section", "short_description"]


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the daemon on the way out
    rows = int(os.environ.get("BENCH_FRESHNESS_ROWS", "1000"))
    trials = int(os.environ.get("BENCH_FRESHNESS_TRIALS", "3"))
    interval = DEFAULTS["source"]
    corpus = pq.read_table(CORPUS, columns=COLUMNS)
    work = Path(tempfile.mkdtemp(prefix="quiver-freshness-"))
    source = work / "source"
    source.mkdir()
    pq.write_table(corpus.slice(0, rows), source / "part-0000.parquet")
    spec_path = write_spec(work / "datasets.yaml", [dataset_entry(DS, source)])
    home = work / "home"
    print(f"first build of {rows:,} rows ...", file=sys.stderr, flush=True)
    if not materialize_all(spec_path, home).success:
        print("FAIL: the first build failed")
        return 1

    results = []
    reader = IndexReader(home / DS)
    with Daemon(work, spec_path, home, sensor_interval=None) as daemon:
        print("daemon started; waiting for the source sensor's first tick ...", file=sys.stderr, flush=True)
        daemon.wait_for("source sensor baseline", lambda: daemon.sensor_cursor(f"{DS}_source_sensor"), 300)
        for trial in range(1, trials + 1):
            reader.refresh()
            target = reader.served_seq + BATCH
            part = corpus.slice(rows + (trial - 1) * BATCH, BATCH)
            temp = source / f".part-{trial:04d}.tmp"
            pq.write_table(part, temp)
            temp.rename(source / f"part-{trial:04d}.parquet")
            landed = time.time()
            print(f"trial {trial}: {BATCH} rows landed; waiting ...", file=sys.stderr, flush=True)

            def searchable(target=target):
                reader.refresh()
                return reader.served_seq >= target

            daemon.wait_for(f"trial {trial} searchable", searchable, 600, poll=0.2)
            visible = time.time() - landed
            run = daemon.runs(f"{DS}_refresh")[-1]
            daemon.wait_for(
                "the refresh run's end", lambda r=run: daemon.instance.get_run_by_id(r.run_id).is_finished, 300
            )
            times = daemon.run_times(run.run_id)
            refresh = times["end"] - times["created"]
            results.append(
                {
                    "trial": trial,
                    "queued_s": times["created"] - landed,
                    "started_s": times["start"] - landed,
                    "run_ended_s": times["end"] - landed,
                    "searchable_s": visible,
                    "refresh_s": refresh,
                    "bound_s": interval + refresh,
                }
            )
        runs = len(daemon.runs(f"{DS}_refresh"))

    print(
        f"\nquiver freshness: {rows:,} rows + {BATCH} per trial, source sensor every {interval} s (default), "
        f"{os.cpu_count()} cores\n"
    )
    print(
        "| trial | run queued (s) | run started (s) | searchable (s) | run ended (s) | refresh run (s) | "
        "bound: interval + refresh (s) | within |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r['trial']} | {r['queued_s']:.1f} | {r['started_s']:.1f} | {r['searchable_s']:.1f} | "
            f"{r['run_ended_s']:.1f} | {r['refresh_s']:.1f} | {r['bound_s']:.1f} | "
            f"{'yes' if r['searchable_s'] <= r['bound_s'] else 'NO'} |"
        )

    def med(name):
        values = [r[name] for r in results]
        return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"

    print(
        f"| median (min..max) | {med('queued_s')} | {med('started_s')} | {med('searchable_s')} | "
        f"{med('run_ended_s')} | {med('refresh_s')} | {med('bound_s')} | |"
    )
    print(f"\nrefresh runs: {runs} for {trials} files (one per file)")
    print("goal: searchable within one sensor interval plus the refresh itself")
    out = home / "bench_freshness.json"
    out.write_text(
        json.dumps({"rows": rows, "interval_s": interval, "trials": results, "refresh_runs": runs}, indent=2)
    )
    print(f"JSON: {out}")
    ok = runs == trials and all(r["searchable_s"] <= r["bound_s"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
