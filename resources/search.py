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

from quiver.resources.embedding import get_embedder
from quiver.resources.index import IndexReader
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.row_filter import FilterError
from quiver.resources.spec import UnknownDatasetError

# Which chunk of a row matched, as result columns: its number and [start, end) character offsets
# into the row's embedded text (the embedded columns joined by the spec's separator).
CHUNK_RESULT_COLUMNS = {"chunk": "_chunk", "chunk_start": "_chunk_start", "chunk_end": "_chunk_end"}


class SearchError(ValueError):
    """A query that cannot be answered as asked; the message says what to change."""


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
                        f"(dagster asset materialize -m quiver.pipelines.definitions --select 'tag:dataset={dataset}')"
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

    def query_vectors(self, dataset: str, queries: Sequence, reader: IndexReader | None = None) -> np.ndarray:
        """Texts (embedded in one batch with the dataset's model) or vectors -> a (n, dim) float32 matrix.

        ``reader``: the dataset's, already refreshed by the caller (a refresh is a listing: once a query)."""
        reader = reader or self.reader(dataset)
        dim = reader.identity.dim
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            matrix = queries.astype(np.float32, copy=False)
        elif all(isinstance(q, str) for q in queries):
            empty = [i for i, q in enumerate(queries) if not q.strip()]
            if empty:
                raise SearchError(f"dataset {dataset!r}: query {empty[0]} is empty text; pass some words or a vector")
            model = get_embedder(reader.identity.model, self.device)
            return model.embed(list(queries)) if queries else np.empty((0, dim), np.float32)
        elif any(isinstance(q, str) for q in queries):
            raise SearchError(f"dataset {dataset!r}: a batch is either all texts or all vectors, not both")
        else:
            rows = [np.asarray(q, dtype=np.float32).reshape(-1) for q in queries]
            bad = [i for i, r in enumerate(rows) if r.shape[0] != dim]
            if bad:
                raise SearchError(
                    f"dataset {dataset!r}: query vector {bad[0]} has {rows[bad[0]].shape[0]} dimensions, the index "
                    f"holds {dim}-dimensional vectors of model {reader.identity.model!r}"
                )
            matrix = np.stack(rows) if rows else np.empty((0, dim), np.float32)
        if matrix.shape[1] != dim:
            raise SearchError(
                f"dataset {dataset!r}: the query vector{'s have' if len(matrix) > 1 else ' has'} {matrix.shape[1]} "
                "dimensions, the index holds "
                f"{dim}-dimensional vectors of model {reader.identity.model!r}"
            )
        if not np.all(np.isfinite(matrix)):
            raise SearchError(f"dataset {dataset!r}: a query vector has NaN or infinite values")
        return matrix

    def _check(self, reader: IndexReader, dataset: str, k, columns, ef_search=None) -> list[str] | None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise SearchError(f"k must be a positive integer, got {k!r}")
        if ef_search is not None and (
            isinstance(ef_search, bool) or not isinstance(ef_search, (int, np.integer)) or ef_search <= 0
        ):
            raise SearchError(f"ef_search must be a positive integer (or left out for the spec's), got {ef_search!r}")
        if columns is None:
            return None
        unknown = [c for c in columns if c not in reader.served_columns and c not in CHUNK_RESULT_COLUMNS]
        if unknown:
            raise SearchError(
                f"dataset {dataset!r}: columns {unknown} are not served; served columns: "
                f"{', '.join(reader.served_columns)} (and {', '.join(CHUNK_RESULT_COLUMNS)}: which chunk matched)"
            )
        return [CHUNK_RESULT_COLUMNS.get(c, c) for c in columns]

    def search(
        self,
        dataset: str,
        query: str | Sequence[float] | np.ndarray,
        k: int = 10,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
    ) -> pa.Table:
        """Best first: the primary key, ``score`` (higher is better), ``distance``, served columns.

        ``where``: a SQL predicate over the served columns (``section = 'python' AND name LIKE
        'py%'``); the result is then the top ``min(k, matching rows)``. A row whose text was split
        into chunks is one result, scored by its best chunk; ``group=False`` returns the ``k`` best
        chunks instead (a row may repeat). ``columns`` may add ``chunk``, ``chunk_start`` and
        ``chunk_end``: which chunk matched, and where it is in the row's embedded text.
        """
        reader = self.reader(dataset)
        columns = self._check(reader, dataset, k, columns, ef_search)
        if isinstance(query, str) and not query.strip():
            raise SearchError(f"dataset {dataset!r}: the query text is empty; pass some words or a vector")
        one = [query] if isinstance(query, str) else np.asarray(query, dtype=np.float32).reshape(1, -1)
        vectors = self.query_vectors(dataset, one, reader)
        try:
            table = reader.search_rows(vectors[0], int(k), columns, ef_search, where=where, group=group)
        except FilterError as error:
            raise SearchError(f"dataset {dataset!r}: {error}") from error
        return _public_chunk_names(table)

    def search_batch(
        self,
        dataset: str,
        queries: Sequence[str] | Sequence[Sequence[float]] | np.ndarray,
        k: int = 10,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
    ) -> pa.Table:
        """Many queries at once (texts embedded in one batch): one Table, ``query`` (the position in
        ``queries``) first, then what ``search`` returns, best first within each query."""
        reader = self.reader(dataset)
        columns = self._check(reader, dataset, k, columns, ef_search)
        vectors = self.query_vectors(dataset, queries, reader)
        tables = []
        for i, vector in enumerate(vectors):
            try:
                table = _public_chunk_names(reader.search_rows(vector, int(k), columns, ef_search, where=where, group=group))
            except FilterError as error:
                raise SearchError(f"dataset {dataset!r}: {error}") from error
            tables.append(table.add_column(0, "query", pa.array(np.full(table.num_rows, i, dtype=np.int32))))
        if not tables:
            empty = _public_chunk_names(reader.search_rows(np.zeros(reader.identity.dim, np.float32), 1, columns, ef_search).slice(0, 0))
            return empty.add_column(0, "query", pa.array([], pa.int32()))
        return pa.concat_tables(tables)


def _public_chunk_names(table: pa.Table) -> pa.Table:
    internal = {v: k for k, v in CHUNK_RESULT_COLUMNS.items()}
    if not any(name in internal for name in table.column_names):
        return table
    return table.rename_columns([internal.get(name, name) for name in table.column_names])
