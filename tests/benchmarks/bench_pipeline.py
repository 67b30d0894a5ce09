"""Pipeline benchmark: build the demo dataset through Dagster, then measure what the README claims.

    make bench                      # the shipped 3,000-row sample
    BENCH_SOURCE=../shared/data/debian_packages.parquet BENCH_ROWS=20000 make bench

Prints one table: embedding rows/s (median of runs), stage times, on-disk bytes of the DuckDB file
and the index directory against the raw vector bytes, recall@10 of the index against exact search,
and single-query latency of quiver's reader against raw usearch on the same snapshot (medians and
p95, with their ratio, measured in the same run).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dagster import DagsterInstance, materialize  # noqa: E402

from quiver.assets import dataset_assets  # noqa: E402
from quiver.pipelines.definitions import DUCKDB_FILE, build_resources  # noqa: E402
from quiver.resources.embedding import get_embedder  # noqa: E402
from quiver.resources.index import IndexReader  # noqa: E402
from quiver.resources.index.manifest import read_manifest  # noqa: E402
from quiver.resources.spec import load_spec  # noqa: E402


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    source = Path(os.environ.get("BENCH_SOURCE", ROOT / "data" / "debian_sample.parquet"))
    rows = int(os.environ.get("BENCH_ROWS", "3000"))
    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-"))
    table = pq.read_table(source).select(["pkg_id", "package", "section", "short_description"]).slice(0, rows)
    pq.write_table(table, tmp / "src.parquet")
    spec_path = tmp / "datasets.yaml"
    spec_path.write_text(yaml.safe_dump({"datasets": [{
        "name": "bench", "from": str(tmp / "src.parquet"), "primary_key": "pkg_id",
        "columns": ["package", "section", "short_description"],
        "embeddings": {"columns": ["package", "short_description"], "separator": ": "},
    }]}))
    spec, home = load_spec(spec_path), tmp / "home"

    embedder = get_embedder()
    texts = [f"{p}: {d}" for p, d in zip(table.column("package").to_pylist(), table.column("short_description").to_pylist())]
    sample = texts[: min(1000, len(texts))]
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        embedder.embed(sample)
        rates.append(len(sample) / (time.perf_counter() - started))

    started = time.perf_counter()
    result = materialize(dataset_assets(spec.get("bench")), resources=build_resources(spec, home), instance=DagsterInstance.ephemeral())
    build_seconds = time.perf_counter() - started
    assert result.success
    stage = {}
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        stage[m.asset_key.path[-1]] = m.metadata["seconds"].value

    conn = duckdb.connect(str(home / DUCKDB_FILE), read_only=True)
    keys, vectors = conn.execute('SELECT _key, _vector FROM "bench_embeddings" ORDER BY _key').fetchnumpy().values()
    conn.close()
    vectors = np.stack(vectors).astype(np.float32)
    raw_bytes = vectors.nbytes

    reader = IndexReader(home / "bench")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    queries = rng.choice(len(keys), min(200, len(keys)), replace=False)
    found = 0
    quiver_ms, usearch_ms = [], []
    from usearch.index import Index

    manifest = read_manifest(home / "bench")
    raw = Index.restore(str(home / "bench" / manifest.snapshot.dir / "index.usearch"), view=True)
    for q in queries:
        exact = set(keys[np.argsort(-(unit @ unit[q]))[:10]].tolist())
        t0 = time.perf_counter()
        hits = reader.search_rows(vectors[q], 10)
        quiver_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        raw.search(vectors[q], 10)
        usearch_ms.append((time.perf_counter() - t0) * 1000)
        found += len(exact & set(reader.search(vectors[q], 10).keys.tolist()))
        assert hits.num_rows == 10

    rows_out = [
        ("rows", f"{len(keys):,}", ""),
        ("embedding rows/s (median of 3 x %d texts)" % len(sample), f"{statistics.median(rates):.0f}", f"runs {', '.join(f'{r:.0f}' for r in rates)}"),
        ("materialize, all assets (s)", f"{build_seconds:.1f}", ", ".join(f"{k} {v:.2f}s" for k, v in stage.items())),
        ("raw vector bytes (n x 384 x 4)", f"{raw_bytes:,}", "1.00x"),
        ("DuckDB file bytes", f"{(home / DUCKDB_FILE).stat().st_size:,}", f"{(home / DUCKDB_FILE).stat().st_size / raw_bytes:.2f}x raw"),
        ("index directory bytes", f"{dir_bytes(home / 'bench'):,}", f"{dir_bytes(home / 'bench') / raw_bytes:.2f}x raw"),
        ("recall@10 vs exact (%d queries)" % len(queries), f"{found / (10 * len(queries)):.4f}", ""),
        ("query p50 ms: quiver reader (with rows) / raw usearch", f"{statistics.median(quiver_ms):.3f} / {statistics.median(usearch_ms):.3f}", f"{statistics.median(quiver_ms) / statistics.median(usearch_ms):.1f}x"),
        ("query p95 ms: quiver reader (with rows) / raw usearch", f"{percentile(quiver_ms, 95):.3f} / {percentile(usearch_ms, 95):.3f}", ""),
    ]
    width = max(len(r[0]) for r in rows_out)
    print(f"\nquiver pipeline benchmark on {source.name} ({len(keys)} rows), {os.cpu_count()} cores\n")
    print(f"{'measure'.ljust(width)}  {'value':>22}  note")
    print(f"{'-' * width}  {'-' * 22}  ----")
    for name, value, note in rows_out:
        print(f"{name.ljust(width)}  {value:>22}  {note}")


if __name__ == "__main__":
    main()
