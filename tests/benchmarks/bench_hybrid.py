"""Typing a name: vectors alone, the full-text index alone, and both fused (RRF), on real packages.

    make bench-hybrid                       # 10,000 packages of ../shared/data/debian_packages.parquet
    BENCH_HYBRID_ROWS=3000 BENCH_HYBRID_QUERIES=300 make bench-hybrid

Each package is embedded as "package: short_description" (the demo's text) with the default
model. The queries are package names, typed as they are (``python3-h5py``, ``libssl3``,
``xz-utils``), and the right answer is that package: success@1 and success@10 of
- vector: exact cosine search over the embeddings (no graph: the model's own ceiling);
- text: ``index.text_index`` (BM25 over words, and identifiers kept whole);
- hybrid: ``fusion.reciprocal_rank_fusion`` of the top 50 of each (k=60, equal weights).
Also a description as the query: the first sentence of the package's long description, which
says what the summary says in other words. That is where vectors are strong, and a name index
must not make the hybrid worse. Prints a markdown table.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.embedding import get_embedder  # noqa: E402
from quiver.resources.fusion import reciprocal_rank_fusion  # noqa: E402
from quiver.resources.index.text_index import Analyzer, write_text_index  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
DEPTH = 50  # candidates each pass gives the fusion


def main() -> None:
    rows = int(os.environ.get("BENCH_HYBRID_ROWS", "10000"))
    queries = int(os.environ.get("BENCH_HYBRID_QUERIES", "1000"))
    table = pq.read_table(SOURCE, columns=["package", "short_description", "long_description"])
    chosen = np.sort(np.random.default_rng(7).choice(table.num_rows, size=min(rows, table.num_rows), replace=False))
    table = table.take(chosen)
    names, summaries = table.column("package").to_pylist(), table.column("short_description").to_pylist()
    described = [_first_sentence(d) for d in table.column("long_description").to_pylist()]
    texts = [f"{n}: {s}" for n, s in zip(names, summaries)]
    print(f"-- embedding {len(texts):,} packages ...", file=sys.stderr, flush=True)
    embedder = get_embedder("all-MiniLM-L6-v2")
    vectors = embedder.embed(texts)
    keys = np.arange(len(texts), dtype=np.uint64)
    started = time.perf_counter()
    text_index = write_text_index(None, keys, texts, Analyzer())
    index_seconds = time.perf_counter() - started
    with_description = np.array([i for i, d in enumerate(described) if len(d.split()) >= 5])
    asked = np.random.default_rng(11).choice(with_description, size=min(queries, len(with_description)), replace=False)

    results = {}
    for label, query_of in (("the package's name", lambda i: names[i]), ("a sentence of its long description", lambda i: described[i])):
        query_texts = [query_of(i) for i in asked]
        query_vectors = embedder.embed(query_texts)
        found = {"vector": [], "text": [], "hybrid": []}
        text_ms = []
        for i, text, vector in zip(asked, query_texts, query_vectors):
            by_vector = np.argsort(-(vectors @ vector), kind="stable")[:DEPTH].tolist()
            clock = time.perf_counter()
            by_text = text_index.search(text, DEPTH).keys.astype(np.int64).tolist()
            text_ms.append((time.perf_counter() - clock) * 1000)
            fused = [f.key for f in reciprocal_rank_fusion({"vector": by_vector, "text": by_text})]
            for name, ranking in (("vector", by_vector), ("text", by_text), ("hybrid", fused)):
                found[name].append(ranking.index(i) + 1 if i in ranking else None)
        results[label] = (found, float(np.median(text_ms)))

    print(f"\nTyping a name: {len(texts):,} Debian packages, {len(asked):,} queries, all-MiniLM-L6-v2, "
          f"text index built in {index_seconds:.2f} s\n")
    print("| query | pass | success@1 | success@10 | MRR@10 |")
    print("|---|---|---:|---:|---:|")
    for label, (found, text_ms) in results.items():
        for name, ranks in found.items():
            at1 = np.mean([r == 1 for r in ranks])
            at10 = np.mean([r is not None and r <= 10 for r in ranks])
            mrr = np.mean([1 / r if r is not None and r <= 10 else 0.0 for r in ranks])
            print(f"| {label} | {name} | {at1:.3f} | {at10:.3f} | {mrr:.3f} |")
        print(f"| {label} | (text search, median ms) | {text_ms:.2f} | | |")


def _first_sentence(text: str | None) -> str:
    """The long description's first sentence (Debian's: lines, ``.`` lines between paragraphs)."""
    words = " ".join((text or "").split())
    return words.split(". ")[0][:300]


if __name__ == "__main__":
    main()
