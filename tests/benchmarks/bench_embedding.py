"""Embedding benchmark: rows/s of each embedding path, at 1 and 2 threads, short and long texts.

    make bench-embedding
    BENCH_SHORT=2000 BENCH_LONG=500 BENCH_REPEATS=3 BENCH_THREADS=1,2 make bench-embedding

Data: ../shared/data/debian_packages.parquet (``BENCH_SOURCE``), three kinds of text:
``short``, the ``short_description`` alone (~12 tokens: the issue's short texts); ``demo``,
``package: short_description`` as the demo dataset embeds it (~21 tokens); ``long``, the
``long_description`` (~80 tokens).
Paths, each in this one process so their figures compare as ratios:

- ``st-default``: ``SentenceTransformer.encode`` with its defaults (torch fp32, batch 32, texts
  sorted by character length);
- ``torch-sorted``: quiver's embedder on torch (token-sorted batches under a token budget);
- ``onnx-sorted``: quiver's default, ONNX Runtime fp32, token-sorted;
- ``onnx-int8``: ONNX Runtime int8 (dynamic, per-channel), token-sorted.

Each cell is the median of ``BENCH_REPEATS`` runs, the paths interleaved (each repeat runs every
path once) so that load from other processes falls on all of them alike. Load time is a fresh process from start to the
first vector (imports included), with the export already cached. Fidelity is each path's vectors
against torch fp32 (sentence-transformers) on the three kinds of text together: mean and min
cosine, top-10 neighbour overlap. Last, the embeddings asset runs through Dagster on the demo
texts and its reported rows/s is set against the raw default path measured just before it.
Prints a table and writes JSON (``BENCH_OUT``, default ``<QUIVER_HOME>/bench/embedding.json``).
The figures are noisy on a shared machine: compare the ratios within one run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.embedding import DEFAULT_MODEL, Embedder, available_cpus, onnx_export, resolve_model_path
from quiver.resources.embedding.token_batches import load_tokenizer
from quiver.resources.spec import default_home
from tests.benchmarks.roofline import Encoder, flops_char_sorted, flops_token_sorted, gemm_gflops

SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT.parent / "shared" / "data" / "debian_packages.parquet"))
PATHS = ("st-default", "torch-sorted", "onnx-sorted", "onnx-int8")


def load_texts(n_short: int, n_long: int) -> dict[str, list[str]]:
    """``short`` and ``demo`` texts of the same ``n_short`` packages, and ``n_long`` long ones."""
    table = pq.read_table(SOURCE, columns=["package", "short_description", "long_description"])
    rng = np.random.default_rng(0)
    rows = table.take(rng.permutation(table.num_rows)[: max(n_short, n_long) * 2]).to_pylist()
    rows_short = [r for r in rows if (r["short_description"] or "").strip()][:n_short]
    long = [re.sub(r"\s+", " ", r["long_description"] or "").strip() for r in rows]
    return {
        "short": [r["short_description"] for r in rows_short],
        "demo": [f"{r['package']}: {r['short_description']}" for r in rows_short],
        "long": [t for t in long if t][:n_long],
    }


def make_path(name: str, threads: int, cache: Path):
    """A callable texts -> vectors for one path at ``threads``."""
    if name == "st-default":
        import torch
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(resolve_model_path(DEFAULT_MODEL)), device="cpu")

        def run(texts):
            torch.set_num_threads(threads)
            return st.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)

        return run
    if name == "torch-sorted":
        embedder = Embedder(DEFAULT_MODEL, device="cpu", backend="torch", threads=threads)
    elif name == "onnx-sorted":
        embedder = Embedder(DEFAULT_MODEL, backend="onnx", threads=threads, cache_dir=cache)
    else:
        embedder = Embedder(f"{DEFAULT_MODEL}+int8", backend="onnx", threads=threads, cache_dir=cache)

    def run(texts):
        if embedder.backend == "torch":
            import torch

            torch.set_num_threads(threads)
        return embedder.embed(texts)

    return run


def rate(run, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    rates, vectors = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = run(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates), vectors


def load_seconds(name: str, cache: Path) -> float:
    """A fresh process: start, imports, model (export cached), first vector."""
    code = {
        "st-default": "from sentence_transformers import SentenceTransformer as S; "
        f"S({str(resolve_model_path(DEFAULT_MODEL))!r}, device='cpu').encode(['a query'])",
        "torch-sorted": "from quiver.resources.embedding import Embedder; "
        "Embedder(device='cpu', backend='torch').embed(['a query'])",
        "onnx-sorted": f"from quiver.resources.embedding import Embedder; Embedder(backend='onnx', cache_dir={str(cache)!r})"
        ".embed(['a query'])",
        "onnx-int8": f"from quiver.resources.embedding import Embedder; Embedder('{DEFAULT_MODEL}+int8', cache_dir="
        f"{str(cache)!r}).embed(['a query'])",
    }[name]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def asset_rate(demo: list[str]) -> dict:
    """The embeddings asset through Dagster on the ``demo`` texts (package: description); its rows/s."""
    from dagster import DagsterInstance, materialize

    from quiver.assets import dataset_assets
    from quiver.pipelines.definitions import build_resources
    from quiver.resources.spec import load_spec

    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-embedding-"))
    package, description = zip(*(t.split(": ", 1) for t in demo))
    pq.write_table(
        pa.table({"pkg_id": list(range(len(demo))), "package": list(package), "short_description": list(description)}),
        tmp / "src.parquet",
    )
    (tmp / "datasets.yaml").write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "bench",
                        "from": str(tmp / "src.parquet"),
                        "primary_key": "pkg_id",
                        "embeddings": {"columns": ["package", "short_description"], "separator": ": "},
                    }
                ]
            }
        )
    )
    spec = load_spec(tmp / "datasets.yaml")
    assets = dataset_assets(spec.get("bench"))[:3]  # source, rows, embeddings
    result = materialize(assets, resources=build_resources(spec, tmp / "home"), instance=DagsterInstance.ephemeral())
    assert result.success
    for event in result.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        if "embedding_rows_per_second" in metadata:
            return {
                "rows": metadata["rows_embedded"].value,
                "rows_per_s": metadata["embedding_rows_per_second"].value,
            }
    raise RuntimeError("the embeddings asset reported no embedding_rows_per_second")


def main() -> None:
    n_short = int(os.environ.get("BENCH_SHORT", "2000"))
    n_long = int(os.environ.get("BENCH_LONG", "500"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    cpus = available_cpus()
    threads_list = sorted({min(int(t), cpus) for t in os.environ.get("BENCH_THREADS", "1,2").split(",")})
    cache = default_home() / "models"
    out_path = Path(os.environ.get("BENCH_OUT", default_home() / "bench" / "embedding.json"))

    texts_of = load_texts(n_short, n_long)
    tokenizer = load_tokenizer(resolve_model_path(DEFAULT_MODEL), 256)
    lengths = {name: [len(e.ids) for e in tokenizer.encode_batch(t)] for name, t in texts_of.items()}
    tokens = {name: float(np.mean(values)) for name, values in lengths.items()}
    encoder = Encoder.of(resolve_model_path(DEFAULT_MODEL))
    # FLOPs per text as each path batches (st-default: its own char-sorted batches of 32).
    flops_per_text = {
        label: {
            "token_sorted": flops_token_sorted(encoder, lengths[label]) / len(lengths[label]),
            "char_sorted": flops_char_sorted(encoder, texts_of[label], lengths[label]) / len(lengths[label]),
        }
        for label in lengths
    }
    onnx_export.ensure_export(cache, resolve_model_path(DEFAULT_MODEL), "int8", threads=cpus)  # made once, not timed

    results: dict = {
        "paths": {},
        "tokens_mean": tokens,
        "cpus": cpus,
        "repeats": repeats,
        "loadavg_start": os.getloadavg(),
        "gflop_per_text": {label: {k: v / 1e9 for k, v in f.items()} for label, f in flops_per_text.items()},
    }
    gemm_samples: dict = {}
    fidelity_texts = texts_of["short"][:500] + texts_of["demo"][500:1000] + texts_of["long"][:500]
    samples: dict = {name: {} for name in PATHS}
    for threads in threads_list:
        runs = {name: make_path(name, threads, cache) for name in PATHS}
        for run in runs.values():
            run(texts_of["short"][:64])  # warm-up
        # Interleaved: every repeat runs every path once, so load from other work hits them alike.
        for repeat in range(repeats):
            for name, run in runs.items():
                for label, texts in texts_of.items():
                    samples[name].setdefault(f"{label}@{threads}", []).append(rate(run, texts, 1)[0])
            gemm_samples.setdefault(threads, []).append(gemm_gflops(encoder, threads, seconds=0.5))
            print(f"  {threads} thread(s), repeat {repeat + 1}/{repeats} done", file=sys.stderr)
        if threads == threads_list[-1]:
            reference = runs["st-default"](fidelity_texts)
            for name, run in runs.items():
                fidelity = onnx_export.measure_fidelity(reference, run(fidelity_texts))
                results["paths"].setdefault(name, {})["fidelity"] = vars(fidelity)
        del runs
    for name in PATHS:
        entry = results["paths"].setdefault(name, {})
        entry["rows_per_s"] = {cell: round(statistics.median(v), 1) for cell, v in samples[name].items()}
        entry["rows_per_s_runs"] = {cell: [round(x, 1) for x in v] for cell, v in samples[name].items()}
        entry["load_seconds"] = round(load_seconds(name, cache), 2)

    results["gemm_gflops"] = {t: round(statistics.median(v), 1) for t, v in gemm_samples.items()}
    best = max(threads_list)
    raw = rate(make_path("onnx-sorted", best, cache), texts_of["demo"], repeats)[0]
    asset = asset_rate(texts_of["demo"])
    results["asset"] = {**asset, "raw_rows_per_s": round(raw, 1), "ratio": round(asset["rows_per_s"] / raw, 3)}
    results["loadavg_end"] = os.getloadavg()

    cols = [f"{label}@{t}" for label in texts_of for t in threads_list]
    print(
        f"\nrows/s, median of {repeats}; "
        + ", ".join(f"{label} ~{tokens[label]:.0f} tokens ({len(texts_of[label])})" for label in texts_of)
        + "; "
        f"{cpus} CPUs; load average {results['loadavg_start'][0]:.1f} at start"
    )
    header = (
        f"{'path':<14}" + "".join(f"{c:>11}" for c in cols) + f"{'load s':>8}{'cos mean':>10}{'cos min':>9}{'top10':>7}"
    )
    print(header)
    print("-" * len(header))
    base = results["paths"]["st-default"]["rows_per_s"]
    for name in PATHS:
        entry = results["paths"][name]
        fid = entry["fidelity"]
        print(
            f"{name:<14}"
            + "".join(f"{entry['rows_per_s'][c]:>11,.0f}" for c in cols)
            + f"{entry['load_seconds']:>8.2f}{fid['mean_cosine']:>10.5f}"
            + f"{fid['min_cosine']:>9.4f}{fid['topk_overlap']:>7.3f}"
        )
    print("speed-up over st-default:")
    for name in PATHS[1:]:
        ratios = ", ".join(f"{c} {results['paths'][name]['rows_per_s'][c] / base[c]:.2f}x" for c in cols)
        print(f"  {name:<14}{ratios}")
    print_roofline(results, cols)
    a = results["asset"]
    print(
        f"embeddings asset: {a['rows_per_s']:,.0f} rows/s reported for {a['rows']} rows; raw default path "
        f"{a['raw_rows_per_s']:,.0f} rows/s in this run (ratio {a['ratio']:.2f})"
    )
    default = results["paths"]["onnx-sorted"]["rows_per_s"]
    speedups = {t: default[f"short@{t}"] / base[f"short@{t}"] for t in threads_list}
    print(
        "goals: the default path (onnx-sorted) >= 3x st-default on short texts: "
        + ", ".join(f"{x:.2f}x at {t} thread(s) ({'met' if x >= 3 else 'missed'})" for t, x in speedups.items())
        + f"; the asset's rows/s within 10% of the raw path: {a['ratio']:.2f} ({'met' if abs(a['ratio'] - 1) <= 0.1 else 'missed'})"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")


def print_roofline(results: dict, cols: list[str]) -> None:
    """Each path's matrix-product rate against the fp32 GEMM rate measured in this run (roofline.py)."""
    gemm = results["gemm_gflops"]
    per_text = results["gflop_per_text"]
    print(
        "fp32 ceiling: ONNX Runtime MatMul on the encoder's shapes, "
        + ", ".join(f"{t} thread(s) {g:,.0f} GFLOP/s" for t, g in gemm.items())
        + "; GFLOP per text: "
        + ", ".join(
            f"{label} {f['token_sorted']:.3f} token-sorted / {f['char_sorted']:.3f} st-default batches"
            for label, f in per_text.items()
        )
    )
    print(f"{'% of the GEMM rate':<20}" + "".join(f"{c:>11}" for c in cols))
    for name, entry in results["paths"].items():
        batching = "char_sorted" if name == "st-default" else "token_sorted"
        cells = []
        for cell in cols:
            label, threads = cell.split("@")
            used = entry["rows_per_s"][cell] * per_text[label][batching]
            cells.append(f"{100 * used / gemm[int(threads)]:>10.0f}%")
        print(
            f"{name:<20}"
            + "".join(cells)
            + ("   (int8 products: not bound by the fp32 rate)" if "int8" in name else "")
        )
    best = max(gemm)
    goal = 3 * results["paths"]["st-default"]["rows_per_s"][f"short@{best}"]
    needed = goal * per_text["short"]["token_sorted"]
    ceiling = gemm[best] / per_text["short"]["token_sorted"]
    print(
        f"3x st-default on short@{best} is {goal:,.0f} rows/s: {needed:,.0f} GFLOP/s of fp32 products, "
        f"{needed / gemm[best]:.2f}x the GEMM rate measured ({ceiling:,.0f} rows/s at 100% of it)"
    )


if __name__ == "__main__":
    main()
