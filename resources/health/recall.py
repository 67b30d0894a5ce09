"""Recall of the HNSW graphs against exact search over the same served state. No Dagster.

- ``measure_recall``: recall@k of the graphs against exact search over the same served state
  (the snapshot plus the delta of the segments after it), on a seeded sample of the index's own
  rows used as queries. Each query leaves its own row out of both answers (otherwise every query
  trivially finds itself), and a hit counts when it is in the exact answer or ties with the exact
  k-th distance (duplicate texts give equal vectors, and any of them is a right answer).
- ``ef_search_sweep``: recall and query latency of the graphs for a range of ``ef_search``;
  ``render_sweep_chart`` draws it as a PNG (matplotlib, an optional dependency, imported lazily).

The graphs are searched through ``IndexReader.graph_search`` (the snapshot's graph and a graph of
the delta), which is what the next snapshot will serve, so a bad graph shows before it is published.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quiver.resources.files import atomic_write
from quiver.resources.index import IndexReader

SEED = 0
# Above this many vectors after the snapshot (a first build, say), the delta is measured as served
# (exactly) instead of through a graph built for the check alone: building it took 5.7 s of a
# 20,000-row first build's 72 s (``make bench-refresh-cost``), for a graph the snapshot that
# follows replaces. Below it, a refresh's delta costs the check at most about 2.5 s here.
MAX_DELTA_GRAPH = 10_000
_TIE = 1e-6  # distances within this of the exact k-th one are ties


@dataclass(frozen=True)
class Queries:
    keys: np.ndarray
    vectors: np.ndarray
    k: int  # neighbours asked per query (at most live - 1: the query's own row is left out)
    truth: list[tuple[np.ndarray, np.ndarray]]  # exact (keys, distances) per query, self left out
    exact_seconds: float


def sample_queries(reader: IndexReader, sample: int, k: int = 10, seed: int = SEED) -> Queries:
    """A seeded sample of served rows as queries, with their exact answers (brute force)."""
    keys = reader.live_keys()
    k = max(0, min(k, len(keys) - 1))
    count = min(sample, len(keys)) if k else 0  # one row alone has no neighbour to find
    chosen = np.sort(np.random.default_rng(seed).choice(keys, size=count, replace=False)) if count else keys[:0]
    vectors = reader.vectors(chosen)
    started = time.perf_counter()
    truth = []
    for key, vector in zip(chosen, vectors):
        hits = reader.search(vector, k + 1, exact=True)
        truth.append(_without(key, hits.keys, hits.distances, k))
    return Queries(chosen, vectors, k, truth, time.perf_counter() - started)


def _without(key, keys: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = keys != key
    return keys[keep][:k], distances[keep][:k]


@dataclass(frozen=True)
class RecallResult:
    recall: float  # mean over the queries; 1.0 when there is nothing to ask
    queries: int
    k: int
    ef_search: int
    live_vectors: int
    graph_vectors: int  # served from the snapshot's graph
    delta_vectors: int  # served from the segments after it
    delta_graph: bool  # the delta was searched through a graph of its own (else exactly, as served)
    served_seq: int
    seconds: float  # the HNSW searches and the exact ones, not the opening
    latency_ms_p50: float
    latency_ms_p95: float
    worst: list[tuple[int, float]] = field(default_factory=list)  # (key, recall) of the worst queries
    problems: tuple[str, ...] = ()


def measure_recall(
    reader: IndexReader,
    ef_search: int | None = None,
    sample: int = 300,
    k: int = 10,
    seed: int = SEED,
    queries: Queries | None = None,
    max_delta_graph: int = MAX_DELTA_GRAPH,
) -> RecallResult:
    """Recall@k of the graphs against exact search over the same served vectors (module docstring).

    A delta of more than ``max_delta_graph`` vectors (a first load, say) is not given a graph of its
    own here, which would cost as much as the snapshot that builds it anyway: it is searched as it
    is served, exactly, and ``delta_graph`` says so. The next refresh's check measures the published
    graph."""
    ef_search = ef_search or reader.manifest.hnsw.ef_search
    queries = queries or sample_queries(reader, sample, k, seed)
    delta_graph = len(reader.live_keys_by_source()[1]) <= max_delta_graph
    per_query, latencies = [], []
    for key, vector, (true_keys, true_dist) in zip(queries.keys, queries.vectors, queries.truth):
        started = time.perf_counter()
        if delta_graph:
            found_keys, found_dist = reader.graph_search(vector, queries.k + 1, ef_search)
        else:
            hits = reader.search(vector, queries.k + 1, ef_search)
            found_keys, found_dist = hits.keys, hits.distances
        latencies.append(time.perf_counter() - started)
        found_keys, found_dist = _without(key, found_keys, found_dist, queries.k)
        per_query.append(_hits(found_keys, found_dist, true_keys, true_dist) / max(1, len(true_keys)))
    snap_keys, delta_keys = reader.live_keys_by_source()
    recalls = np.asarray(per_query, dtype=np.float64)
    lat_ms = np.asarray(latencies, dtype=np.float64) * 1000
    worst = np.argsort(recalls, kind="stable")[:5]
    return RecallResult(
        recall=float(recalls.mean()) if len(recalls) else 1.0,
        queries=len(recalls),
        k=queries.k,
        ef_search=int(ef_search),
        live_vectors=len(snap_keys) + len(delta_keys),
        graph_vectors=len(snap_keys),
        delta_vectors=len(delta_keys),
        delta_graph=delta_graph,
        served_seq=reader.served_seq,
        seconds=float(lat_ms.sum() / 1000 + queries.exact_seconds),
        latency_ms_p50=float(np.percentile(lat_ms, 50)) if len(lat_ms) else 0.0,
        latency_ms_p95=float(np.percentile(lat_ms, 95)) if len(lat_ms) else 0.0,
        worst=[(int(queries.keys[i]), float(recalls[i])) for i in worst if recalls[i] < 1.0],
        problems=reader.problems,
    )


def _hits(found_keys, found_dist, true_keys, true_dist) -> int:
    if len(true_keys) == 0:
        return 0
    kth = float(true_dist[-1]) + _TIE
    truth = set(true_keys.tolist())
    return int(sum(1 for key, dist in zip(found_keys.tolist(), found_dist.tolist()) if key in truth or dist <= kth))


DEFAULT_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def ef_search_sweep(
    reader: IndexReader, ef_values=DEFAULT_SWEEP, sample: int = 300, k: int = 10, seed: int = SEED
) -> list[RecallResult]:
    """``measure_recall`` for each ``ef_search`` on one sample (the exact answers are computed once)."""
    queries = sample_queries(reader, sample, k, seed)
    for vector in queries.vectors[:20]:  # warm the caches so the first ef_search is not penalized
        reader.graph_search(vector, queries.k + 1, max(ef_values))
    return [measure_recall(reader, ef, queries=queries) for ef in sorted(set(ef_values))]


def render_sweep_chart(points: list[RecallResult], path: Path, title: str, current_ef: int | None = None) -> Path:
    """recall@k and the p50 query latency against ef_search, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ef = [p.ef_search for p in points]
    fig, recall_ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        recall_ax.plot(ef, [p.recall for p in points], "o-", color="tab:blue", label=f"recall@{points[0].k}")
        recall_ax.set_xscale("log", base=2)
        recall_ax.set_xticks(ef, [str(v) for v in ef])
        recall_ax.set_xlabel("ef_search")
        recall_ax.set_ylabel(f"recall@{points[0].k} (vs exact search)", color="tab:blue")
        recall_ax.set_ylim(min(0.9, min(p.recall for p in points) - 0.01), 1.002)
        recall_ax.grid(True, alpha=0.3)
        latency_ax = recall_ax.twinx()
        latency_ax.plot(ef, [p.latency_ms_p50 for p in points], "s--", color="tab:orange", label="p50 latency")
        latency_ax.set_ylabel("query latency p50 (ms)", color="tab:orange")
        latency_ax.set_ylim(bottom=0)
        if current_ef is not None:
            recall_ax.axvline(current_ef, color="grey", linestyle=":", label=f"served ef_search={current_ef}")
        lines = recall_ax.get_legend_handles_labels()[0] + latency_ax.get_legend_handles_labels()[0]
        labels = recall_ax.get_legend_handles_labels()[1] + latency_ax.get_legend_handles_labels()[1]
        recall_ax.legend(lines, labels, loc="lower right")
        recall_ax.set_title(title, fontsize=10)
        fig.tight_layout()
        atomic_write(Path(path), lambda temp: fig.savefig(temp, format="png"), label="chart")
    finally:
        plt.close(fig)
    return Path(path)
