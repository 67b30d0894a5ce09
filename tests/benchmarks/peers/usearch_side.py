"""Raw usearch: one index built with ``add`` in one batch, searched directly, saved to one file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from usearch.index import Index

from tests.benchmarks.peers.corpus import Rows
from tests.benchmarks.peers.quiver_side import PARAMS


def new_index(dim: int, dtype: str = "f32") -> Index:
    return Index(
        ndim=dim,
        metric="cos",
        dtype=dtype,
        connectivity=PARAMS.m,
        expansion_add=PARAMS.ef_construction,
        expansion_search=PARAMS.ef_search,
    )


class UsearchSide:
    def __init__(self, path: Path):
        self.path = path
        self.index: Index | None = None

    def build(self, rows: Rows, dtype: str = "f32") -> dict:
        self.index = new_index(rows.vectors.shape[1], dtype)
        started = time.perf_counter()
        self.index.add(rows.pks.astype(np.uint64), rows.vectors)
        seconds = time.perf_counter() - started
        self.index.save(str(self.path))
        return {"build_s": seconds, "bytes": self.path.stat().st_size}

    def query(self, queries: np.ndarray, passes: int) -> dict:
        passes_out, batch, found = [], [], []
        for _ in range(passes):
            times, found = [], []
            for vector in queries:
                started = time.perf_counter()
                matches = self.index.search(vector, 10)
                times.append(time.perf_counter() - started)
                found.append(matches.keys.astype(np.int64).tolist())
            passes_out.append(times)
            started = time.perf_counter()
            self.index.search(queries, 10)  # the whole pass in one call
            batch.append((time.perf_counter() - started) / len(queries))
        return {"passes": passes_out, "batch_per_query_s": batch, "found": found}
