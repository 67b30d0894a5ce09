"""Many readers on one bucket: N reader processes (each with its own cache, as on N machines) answer
queries back to back while a writer process publishes a segment every half second (a snapshot every
third), all against moto's S3 server started on 127.0.0.1.

    make bench-readers                                  # about 2.5 minutes
    BENCH_READERS=1,2 BENCH_READERS_SECONDS=5 BENCH_READERS_REPEAT=1 make bench-readers

Per level (medians over BENCH_READERS_REPEAT runs, 3; the counts summed): queries per second over all readers, per-query latency p50/p99 (from the local cache:
the bucket is only read by the poll, a HEAD every 0.2 s per reader, and by the downloads of what is
new), staleness (from the writer's publish returning to a reader first serving that seq; p50 and
max), states served, and agreement: at every state two readers served, their answers are equal
(exits 1 otherwise). The machine has 2 cores shared by the writer, the readers and moto, so beyond 2
readers the processes share cores: compare levels as ratios, in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.servers import aws_env, create_bucket, moto_server
from tests.serving import bucket_world

LEVELS = [int(n) for n in os.environ.get("BENCH_READERS", "1,2,4").split(",")]
SECONDS = float(os.environ.get("BENCH_READERS_SECONDS", "10"))
REPEAT = int(os.environ.get("BENCH_READERS_REPEAT", "3"))


def run_level(endpoint: str, readers: int, work: Path) -> dict:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    create_bucket(endpoint, bucket)
    work = work / bucket  # a fresh writer copy and fresh reader caches for every run
    work.mkdir()
    url = f"s3://{bucket}/quiver/world"
    queries = work / "queries.npy"
    np.save(queries, bucket_world.unit(np.random.default_rng(3), 16))
    module = [sys.executable, "-m", "tests.serving.bucket_world"]
    writer = subprocess.Popen([*module, "writer", url, str(work / f"w{readers}"), str(SECONDS),
                               str(work / f"writer-{readers}.json")], cwd=ROOT)
    procs = [
        subprocess.Popen([*module, "reader", url, str(work / f"c{readers}-{i}"), str(queries), str(SECONDS + 2),
                          str(work / f"reader-{readers}-{i}.json")], cwd=ROOT)
        for i in range(readers)
    ]
    try:
        if writer.wait(300) != 0 or any(p.wait(300) != 0 for p in procs):
            raise SystemExit(f"a process failed at {readers} readers")
    finally:
        for p in (writer, *procs):
            p.kill()
    publishes = json.loads((work / f"writer-{readers}.json").read_text())["publishes"]
    published_at = {}
    for entry in publishes:
        published_at.setdefault(entry["seq"], entry["at"])
    results = [json.loads((work / f"reader-{readers}-{i}.json").read_text()) for i in range(readers)]
    latencies = np.concatenate([r["latencies_ms"] for r in results])
    staleness, by_state = [], {}
    for result in results:
        for state, seen in result["states"].items():
            if seen["seq"] in published_at and seen["seq"] > 0:
                staleness.append(max(0.0, seen["first_at"] - published_at[seen["seq"]]))
            by_state.setdefault(state, []).append(seen["answers"])
    disagreements = sum(1 for answers in by_state.values() if any(a != answers[0] for a in answers))
    shared = sum(1 for answers in by_state.values() if len(answers) > 1)
    return {
        "readers": readers,
        "qps": sum(r["queries"] / r["seconds"] for r in results),
        "p50": float(np.median(latencies)),
        "p99": float(np.percentile(latencies, 99)),
        "stale_p50": float(np.median(staleness)) if staleness else float("nan"),
        "stale_max": max(staleness) if staleness else float("nan"),
        "states": len(by_state),
        "shared": shared,
        "disagreements": disagreements,
        "publishes": len(publishes) - 1,
    }


def median_row(runs: list[dict]) -> dict:
    """Each figure's median over the repetitions; the counts of states and disagreements summed."""
    row = {key: float(np.nanmedian([r[key] for r in runs])) for key in runs[0]}
    for key in ("states", "shared", "disagreements", "publishes"):
        row[key] = sum(r[key] for r in runs)
    row["readers"] = runs[0]["readers"]
    return row


def main() -> int:
    with moto_server() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(aws_env(server.url))
        runs = {n: [] for n in LEVELS}
        for _ in range(REPEAT):  # levels interleaved, so a noisy minute does not land on one level
            for n in LEVELS:
                runs[n].append(run_level(server.url, n, Path(tmp)))
        rows = [median_row(runs[n]) for n in LEVELS]
    base = rows[0]["qps"]
    print(f"\n## medians of {REPEAT} runs; {SECONDS:.0f} s per level, writer publishing every {bucket_world.WRITE_EVERY} s, 2,000 -> "
          f"{2000 + 50 * int(SECONDS / bucket_world.WRITE_EVERY)} vectors of {bucket_world.DIM} dims, k={bucket_world.K}\n")
    print("| readers | q/s (all) | vs 1 | p50 ms | p99 ms | staleness p50 s | staleness max s | publishes | states | shared | disagree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['readers']} | {r['qps']:.0f} | {r['qps'] / base:.2f}x | {r['p50']:.3f} | {r['p99']:.3f} | "
              f"{r['stale_p50']:.2f} | {r['stale_max']:.2f} | {r['publishes']} | {r['states']} | {r['shared']} | "
              f"{r['disagreements']} |")
    bad = sum(r["disagreements"] for r in rows)
    print(f"\nreaders agreeing at every shared state: {'yes' if not bad else f'NO ({bad} states)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
