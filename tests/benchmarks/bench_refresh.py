"""Incremental refresh benchmark: a first build, then a refresh after 1% churn.

    make bench-refresh                   # ../shared/data/debian_packages.parquet, all 63,666 rows
    BENCH_ROWS=5000 make bench-refresh   # the first 5,000 rows only
    BENCH_SOURCE=other.parquet           # any source with pkg_id, package, section, short_description

Both runs materialize the dataset's refresh chain (rows, embeddings, index, snapshot) through
Dagster's ``materialize``, the code path of the refresh job, in one process; the model is loaded
before either is timed. Between them the source changes: 1% of the rows get a new description, 1%
are deleted and 1% new rows (new keys, text derived from existing rows) are added. Prints a
markdown table: wall and CPU seconds of each run (CPU time is steadier on a shared machine), seconds
per stage, rows embedded, embedding rows/s and the refresh/first-build ratios. Exits non-zero if
the refresh embeds anything but the changed and new rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import build_resources
from quiver.resources.embedding import get_embedder
from quiver.resources.spec import load_spec

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
COLUMNS = ["pkg_id", "package", "section", "short_description"]
CHURN = 0.01
STAGES = ("rows", "embeddings", "index", "snapshot")


def churn(table: pa.Table, fraction: float, seed: int = 4) -> tuple[pa.Table, dict[str, int]]:
    """``fraction`` of the rows get a new description, as many are deleted and as many added."""
    n = max(1, round(table.num_rows * fraction))
    rng = np.random.default_rng(seed)
    picked = rng.choice(table.num_rows, 3 * n, replace=False)
    changed, deleted, templates = picked[:n], picked[n : 2 * n], picked[2 * n :]

    descriptions = table.column("short_description").to_pylist()
    for i in changed:
        descriptions[i] = f"{descriptions[i]} (updated upstream)"
    updated = table.set_column(3, table.schema.field(3), pa.array(descriptions, pa.string()))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[deleted] = False
    updated = updated.filter(pa.array(keep))

    added = table.take(pa.array(templates))
    first_id = pc.max(table.column("pkg_id")).as_py() + 1
    added = pa.table({
        "pkg_id": pa.array(range(first_id, first_id + n), table.schema.field("pkg_id").type),
        "package": pc.binary_join_element_wise(added.column("package"), "ng", "-"),
        "section": added.column("section"),
        "short_description": pc.binary_join_element_wise(added.column("short_description"), "next generation", ", "),
    }).cast(table.schema)
    return pa.concat_tables([updated, added]), {"changed": n, "deleted": n, "new": n}


@dataclass
class Run:
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time, all threads: less sensitive to other load on the machine
    metadata: dict[str, dict]  # asset -> its materialization metadata


def run_chain(spec, home: Path) -> Run:
    started, cpu_started = time.perf_counter(), time.process_time()
    result = materialize(dataset_assets(spec.get("bench")), resources=build_resources(spec, home), instance=DagsterInstance.ephemeral())
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    assert result.success
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata[materialization.asset_key.path[-1]] = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return Run(seconds, cpu_seconds, metadata)


def main() -> int:
    source = Path(os.environ.get("BENCH_SOURCE", DEFAULT_SOURCE))
    table = pq.read_table(source, columns=COLUMNS)
    table = table.slice(0, int(os.environ.get("BENCH_ROWS", table.num_rows)))
    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-refresh-"))
    src = tmp / "src.parquet"
    pq.write_table(table, src)
    spec_path = tmp / "datasets.yaml"
    spec_path.write_text(yaml.safe_dump({"datasets": [{
        "name": "bench", "from": str(src), "primary_key": "pkg_id",
        "columns": ["package", "section", "short_description"],
        "embeddings": {"columns": ["package", "short_description"], "separator": ": "},
    }]}))
    spec, home = load_spec(spec_path), tmp / "home"
    get_embedder()  # load the model once, outside both timings

    print(f"first build: {table.num_rows:,} rows from {source.name} ...", file=sys.stderr, flush=True)
    build = run_chain(spec, home)
    churned, expected = churn(table, CHURN)
    pq.write_table(churned, src)
    print(f"refresh: {expected} ...", file=sys.stderr, flush=True)
    refresh = run_chain(spec, home)
    print_table(source, table.num_rows, churned.num_rows, build, refresh)

    got = {name: refresh.metadata["embeddings"][f"rows_{name}"] for name in expected}
    embedded = refresh.metadata["embeddings"]["rows_embedded"]
    if got != expected or embedded != expected["changed"] + expected["new"]:
        print(f"FAIL: the refresh should embed exactly the changed and new rows: expected {expected}, got {got}, embedded {embedded}")
        return 1
    return 0


def print_table(source: Path, build_rows: int, refresh_rows: int, build: Run, refresh: Run) -> None:
    print(f"\nquiver incremental refresh on {source.name}: {build_rows:,} rows, {os.cpu_count()} cores\n")
    print("| run | rows in source | rows embedded | new / changed / deleted | seconds (wall) | CPU seconds "
          "| rows, embeddings (plan + embed + commit), index, snapshot: s | embedding rows/s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for label, rows, run in (
        ("first build", build_rows, build),
        (f"refresh ({CHURN:.0%} changed, deleted, new)", refresh_rows, refresh),
    ):
        meta, emb = run.metadata, run.metadata["embeddings"]
        stages = (
            f"{meta['rows']['seconds']:.1f}, {emb['seconds']:.1f} ({emb['plan_seconds']:.1f} + {emb['embedding_seconds']:.1f} + "
            f"{emb['commit_seconds']:.1f}), {meta['index']['seconds']:.1f}, {meta['snapshot']['seconds']:.1f}"
        )
        print(
            f"| {label} | {rows:,} | {emb['rows_embedded']:,} | {emb['rows_new']:,} / {emb['rows_changed']:,} / {emb['rows_deleted']:,} "
            f"| {run.seconds:.1f} | {run.cpu_seconds:.1f} | {stages} | {emb['embedding_rows_per_second']:.0f} |"
        )
    built, embedded = build.metadata["embeddings"]["rows_embedded"], refresh.metadata["embeddings"]["rows_embedded"]
    print(
        f"| **refresh / first build** | | {embedded / built:.2%} | | **{refresh.seconds / build.seconds:.2%}** "
        f"| **{refresh.cpu_seconds / build.cpu_seconds:.2%}** | | |"
    )
    print("\ngoal: the refresh embeds exactly the changed and new rows and takes at most 5% of the first build's time")


if __name__ == "__main__":
    sys.exit(main())
