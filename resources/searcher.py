"""Query answering over index directories: text or vector in, a pyarrow Table out. No Dagster.

One ``Searcher`` per process serves every dataset under a home directory: it opens each index
once (``IndexReader``), refreshes it cheaply before each query, and embeds text with the model
recorded in the index's manifest, loaded once per process. It never opens the DuckDB file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from resources.embedding import get_embedder
from resources.index import IndexReader
from resources.index.errors import IndexNotBuiltError
from resources.index.manifest import manifest_path


class SearchError(ValueError):
    """A query that cannot be answered as asked; the message says what to change."""


class UnknownDatasetError(SearchError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Searcher:
    def __init__(self, home: Path, datasets: Iterable[str] | None = None, device: str | None = None):
        self.home = Path(home)
        self.datasets = tuple(datasets) if datasets is not None else None
        self.device = device
        self._readers: dict[str, IndexReader] = {}
        self._lock = threading.Lock()

    def reader(self, dataset: str) -> IndexReader:
        if self.datasets is not None and dataset not in self.datasets:
            known = ", ".join(self.datasets) or "(none)"
            raise UnknownDatasetError(f"unknown dataset {dataset!r}; known datasets: {known}")
        with self._lock:
            if dataset not in self._readers:
                root = self.home / dataset
                if not manifest_path(root).exists():
                    raise IndexNotBuiltError(
                        f"dataset {dataset!r} has no index at {root} yet: materialize its assets first "
                        f"(dagster asset materialize -m pipelines.definitions --select 'tag:dataset={dataset}')"
                    )
                self._readers[dataset] = IndexReader(root)
            reader = self._readers[dataset]
            reader.refresh()
            return reader

    def embed_query(self, dataset: str, text: str) -> np.ndarray:
        reader = self.reader(dataset)
        if not text.strip():
            raise SearchError(f"dataset {dataset!r}: the query text is empty; pass some words or a vector")
        return get_embedder(reader.identity.model, self.device).embed([text])[0]

    def search(
        self,
        dataset: str,
        query: str | Sequence[float] | np.ndarray,
        k: int = 10,
        columns: Sequence[str] | None = None,
        ef_search: int | None = None,
    ) -> pa.Table:
        """Best first: the primary key, ``score`` (higher is better), ``distance``, served columns."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise SearchError(f"k must be a positive integer, got {k!r}")
        reader = self.reader(dataset)
        if isinstance(query, str):
            vector = self.embed_query(dataset, query)
        else:
            vector = np.asarray(query, dtype=np.float32).reshape(-1)
            if vector.shape[0] != reader.identity.dim:
                raise SearchError(
                    f"dataset {dataset!r}: the query vector has {vector.shape[0]} dimensions, the index "
                    f"holds {reader.identity.dim}-dimensional vectors of model {reader.identity.model!r}"
                )
            if not np.all(np.isfinite(vector)):
                raise SearchError(f"dataset {dataset!r}: the query vector has NaN or infinite values")
        if columns is not None:
            unknown = [c for c in columns if c not in reader.served_columns]
            if unknown:
                raise SearchError(
                    f"dataset {dataset!r}: columns {unknown} are not served; served columns: "
                    f"{', '.join(reader.served_columns)}"
                )
        return reader.search_rows(vector, int(k), list(columns) if columns is not None else None, ef_search)
