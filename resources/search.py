"""Query answering over index directories: text or vector in, a pyarrow Table out. No Dagster.

One ``Searcher`` per process serves every dataset under a home directory: it opens each index
once (``IndexReader``), refreshes it cheaply before each query, and embeds text with the model
recorded in the index's manifest, loaded once per process. It never opens the DuckDB file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from quiver.resources import deferred
from quiver.resources.index import IndexReader
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.reader import PASSES, TextSearchUnavailable
from quiver.resources.index.row_filter import FilterError
from quiver.resources.index.text_index import is_blank
from quiver.resources.object_store import is_object_store_url
from quiver.resources.spec_file import UnknownDatasetError, dataset_names, default_index_cache, default_index_root

if TYPE_CHECKING:
    from quiver.resources.spec import QuiverSpec

# Which chunk of a row matched, as result columns: its number and [start, end) character offsets
# into the row's embedded text (the embedded columns joined by the spec's separator), and ``chunk``,
# that text itself (when the embedded columns are served).
CHUNK_RESULT_COLUMNS = {"chunk_number": "_chunk", "chunk_start": "_chunk_start", "chunk_end": "_chunk_end"}
CHUNK_TEXT = "chunk"
# How a query is answered: both passes fused (the default for a text query on a dataset with a
# full-text index), the vectors alone (the default otherwise), or the full-text index alone.
MODES = ("hybrid", "vector", "text")
HYBRID_COLUMNS = ("fused_score", "score", "distance", "text_score", "vector_rank", "text_rank")


@dataclass(frozen=True)
class EmbeddedText:
    """How a dataset's embedded text is made from its columns (the spec's ``embeddings``)."""

    columns: tuple[str, ...]
    separator: str = "\n"

    def of(self, row: dict) -> str:
        # as the warehouse builds it: blank columns left out, the rest joined by the separator
        return self.separator.join(row[c] for c in self.columns if not is_blank(row[c]))


def embedded_texts(spec: QuiverSpec) -> dict[str, EmbeddedText]:
    """Each dataset's ``EmbeddedText``, from its ``embeddings`` block."""
    return {d.name: EmbeddedText(tuple(d.embeddings.columns), d.embeddings.separator) for d in spec.datasets}


class SearchError(ValueError):
    """A query that cannot be answered as asked; the message says what to change."""


class Searcher:
    def __init__(
        self,
        home: Path,
        datasets: Iterable[str] | None = None,
        device: str | None = None,
        texts: dict[str, EmbeddedText] | None = None,
        embed: Callable[[str, list[str]], np.ndarray] | None = None,
        index_root: str | None = None,
    ):
        """``texts``: how each dataset's embedded text is made, for the ``chunk`` result column.
        ``embed(model, texts)``: how query texts become vectors (default: the process-wide model,
        one call per query or batch); a server may gather concurrent queries into one batch.
        ``index_root``: where the index directories are (default ``$QUIVER_INDEX_ROOT``, else
        ``home``); an ``s3://`` URL is served from a local cache (``remote.RemoteMirror``)."""
        self.home = Path(home)
        self.index_root = index_root if index_root is not None else default_index_root()
        self._mirrors: dict[str, object] = {}
        self.datasets = tuple(datasets) if datasets is not None else None
        self.device = device
        self._texts = dict(texts or {})
        self._load_texts: Callable[[], dict[str, EmbeddedText]] | None = None
        self.embed = embed or self._embed_now
        self._readers: dict[str, IndexReader] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_spec(cls, home: Path, spec: QuiverSpec, device: str | None = None) -> Searcher:
        """A searcher over the spec's datasets, knowing how each one's embedded text is made."""
        return cls(home, spec.names, device, embedded_texts(spec))

    @classmethod
    def for_spec_file(cls, home: Path, path: Path, device: str | None = None) -> Searcher:
        """``for_spec`` that validates the spec only when a query needs its embedded columns (the
        ``chunk`` column): a new process answers its first vector query without importing pydantic."""
        searcher = cls(home, dataset_names(path), device)

        def load_texts() -> dict[str, EmbeddedText]:
            return embedded_texts(deferred.load_spec(path))

        searcher._load_texts = load_texts
        return searcher

    @property
    def texts(self) -> dict[str, EmbeddedText]:
        """How each dataset's embedded text is made (the validated spec's, read on first use)."""
        with self._lock:
            if self._load_texts is not None:
                self._texts, self._load_texts = self._load_texts(), None
            return self._texts

    def reader(self, dataset: str) -> IndexReader:
        if self.datasets is not None and dataset not in self.datasets:
            known = ", ".join(self.datasets) or "(none)"
            raise UnknownDatasetError(f"unknown dataset {dataset!r}; known datasets: {known}")
        with self._lock:
            if self.index_root is not None and is_object_store_url(self.index_root):
                return self._remote_reader(dataset)
            if dataset not in self._readers:
                root = Path(self.index_root or self.home) / dataset
                if not manifest_path(root).exists():
                    raise IndexNotBuiltError(
                        f"dataset {dataset!r} has no index at {root} yet: materialize its assets first "
                        f"(python -m quiver refresh {dataset}, or dg launch -m quiver.pipelines.definitions --assets 'key:{dataset}/rows+')"
                    )
                self._readers[dataset] = IndexReader(root)
            reader = self._readers[dataset]
            reader.refresh()
            return reader

    def _remote_reader(self, dataset: str) -> IndexReader:
        """The reader of the dataset's cached copy, the copy pulled first (at most once a poll)."""
        mirror = self._mirrors.get(dataset)
        if mirror is None:
            remote = deferred.remote
            url = remote.dataset_url(self.index_root, dataset)
            mirror = remote.RemoteMirror(url, remote.local_dir_for(default_index_cache(), url))
            mirror.pull(force=True)  # kept only once it has a copy: a failed first pull is tried again next query
            self._mirrors[dataset] = mirror
        else:
            mirror.pull()
        if dataset not in self._readers:
            self._readers[dataset] = IndexReader(mirror.local)
        reader = self._readers[dataset]
        reader.refresh()
        return reader

    def _embed_now(self, model: str, texts: list[str]) -> np.ndarray:
        return deferred.get_embedder(model, self.device).embed(texts)

    def embed_query(self, dataset: str, text: str) -> np.ndarray:
        reader = self.reader(dataset)
        if not text.strip():
            raise SearchError(f"dataset {dataset!r}: the query text is empty; pass some words or a vector")
        return self.embed(reader.identity.model, [text])[0]

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
            return self.embed(reader.identity.model, list(queries)) if queries else np.empty((0, dim), np.float32)
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
        extra = (*CHUNK_RESULT_COLUMNS, CHUNK_TEXT)
        unknown = [c for c in columns if c not in reader.served_columns and c not in extra]
        if unknown:
            raise SearchError(
                f"dataset {dataset!r}: columns {unknown} are not served; served columns: "
                f"{', '.join(reader.served_columns)} (and {', '.join(extra)}: which chunk matched)"
            )
        if CHUNK_TEXT in columns:
            text = self.texts.get(dataset)
            if text is None:
                raise SearchError(
                    f"dataset {dataset!r}: column {CHUNK_TEXT!r} needs the spec's embedded columns, which this "
                    "searcher was not given (make it with Searcher.for_spec); chunk_start and chunk_end work without"
                )
            missing = [c for c in text.columns if c not in reader.served_columns]
            if missing:
                raise SearchError(
                    f"dataset {dataset!r}: column {CHUNK_TEXT!r} is the matching chunk's text, cut from the embedded "
                    f"columns, and {', '.join(missing)} is not served; add it to the dataset's `columns:` "
                    "(or ask for chunk_start and chunk_end, the chunk's offsets)"
                )
        return list(columns)

    def _search_rows(
        self, reader: IndexReader, dataset: str, vector, k, columns, ef_search, where, group, mode="vector", text=None, weights=None
    ) -> pa.Table:
        """One query in ``mode`` with the chunk result columns: asked for by their public names, the
        chunk's text cut from the embedded columns."""

        def answer(wanted):
            if mode == "vector" and getattr(vector, "ndim", 1) == 2:  # a batch (search_batch): one table
                return reader.search_rows_many(vector, int(k), wanted, ef_search)
            if mode == "vector":
                return reader.search_rows(vector, int(k), wanted, ef_search, where=where, group=group)
            if mode == "text":
                return reader.search_text_rows(text, int(k), wanted, where=where, group=group)
            return reader.search_hybrid_rows(vector, text, int(k), wanted, ef_search, where=where, group=group, weights=weights)

        if columns is None:
            return answer(None)
        embedded = self.texts.get(dataset) if CHUNK_TEXT in columns else None
        wanted = [CHUNK_RESULT_COLUMNS.get(c, c) for c in columns if c != CHUNK_TEXT]
        if embedded is not None:
            wanted += [c for c in (*embedded.columns, "_chunk_start", "_chunk_end") if c not in wanted]
        table = answer(wanted)
        if embedded is not None:
            cut = [
                None if row["_chunk_start"] is None else embedded.of(row)[row["_chunk_start"] : row["_chunk_end"]]
                for row in table.select([*embedded.columns, "_chunk_start", "_chunk_end"]).to_pylist()
            ]
            table = table.append_column(CHUNK_TEXT, pa.array(cut, pa.string()))
        public = {v: name for name, v in CHUNK_RESULT_COLUMNS.items()}
        head = table.column_names[: table.num_columns - len(wanted) - (embedded is not None)]  # key and scores
        return table.rename_columns([public.get(n, n) for n in table.column_names]).select([*head, *columns])

    def _mode(self, reader: IndexReader, dataset: str, is_text: bool, mode: str | None, weights) -> str:
        """The mode a query runs in: checked against the query (has it text for the text pass?) and
        the dataset's index."""
        if mode is not None and mode not in MODES:
            raise SearchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode is None:
            mode = "hybrid" if is_text and reader.has_text else "vector"
        if mode != "vector" and not is_text:
            raise SearchError(
                f"dataset {dataset!r}: mode {mode!r} needs words for the text pass: query text, or keywords beside a vector"
            )
        if mode != "vector" and not reader.has_text:
            raise SearchError(
                f"dataset {dataset!r} has no full-text index, so mode {mode!r} cannot run; turn on the spec's "
                "`full_text` (it is on by default) and materialize the dataset, or use mode 'vector'"
            )
        if weights is not None:
            unknown = sorted(set(weights) - set(PASSES))
            bad = {name: w for name, w in weights.items() if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0}
            if mode != "hybrid" or unknown or bad:
                raise SearchError(
                    f"weights apply to mode 'hybrid' only and name the passes {', '.join(PASSES)} with numbers "
                    f">= 0 (got {weights!r} in mode {mode!r})"
                )
        return mode

    def search(
        self,
        dataset: str,
        query: str | Sequence[float] | np.ndarray,
        k: int = 10,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
        mode: str | None = None,
        weights: dict[str, float] | None = None,
        keywords: str | Sequence[str] | None = None,
    ) -> pa.Table:
        """Best first: the primary key, the scores, the served columns.

        ``mode``: ``hybrid`` (the default for query text when the dataset has a full-text index:
        the vector and text passes fused by reciprocal rank, k=60, with per-pass ``weights`` such
        as ``{"vector": 1, "text": 2}``), ``vector`` (the default for a vector, or a dataset
        without a text index) or ``text`` (BM25 alone; the text is words, never query syntax).
        Scores: ``score`` and ``distance`` for ``vector``; ``score`` (BM25) for ``text``;
        ``fused_score``, ``score``, ``distance``, ``text_score``, ``vector_rank``, ``text_rank``
        for ``hybrid`` (a rank is null when that pass did not find the row). ``keywords`` (words,
        or a list of them, as Spice's ``/v1/search`` takes them): what the text pass searches
        instead of the query text; beside a query vector they make the search hybrid.

        ``where``: a SQL predicate over the served columns (``section = 'python' AND name LIKE
        'py%'``), applied to every pass before the cut; the result is then the top ``min(k,
        matching rows)`` (in mode ``text``: rows that match the text too). A row whose text was
        split into chunks is one result, scored by its best chunk; ``group=False`` returns the
        ``k`` best chunks instead (a row may repeat). ``columns`` may add ``chunk`` (the matching
        chunk's text), ``chunk_number``, ``chunk_start`` and ``chunk_end`` (its offsets in the
        row's embedded text).
        """
        reader = self.reader(dataset)
        columns = self._check(reader, dataset, k, columns, ef_search)
        if isinstance(query, str) and not query.strip():
            raise SearchError(f"dataset {dataset!r}: the query text is empty; pass some words or a vector")
        text = _words(dataset, keywords) if keywords is not None else query if isinstance(query, str) else None
        if keywords is not None and mode == "vector":
            raise SearchError(f"dataset {dataset!r}: keywords feed the text pass, which mode 'vector' does not run; drop one")
        mode = self._mode(reader, dataset, text is not None, mode, weights)
        one = [query] if isinstance(query, str) else np.asarray(query, dtype=np.float32).reshape(1, -1)
        vector = self.query_vectors(dataset, one, reader)[0] if mode != "text" else None
        return self._answer(reader, dataset, vector, k, columns, ef_search, where, group, mode, text, weights)

    def _answer(self, reader, dataset, vector, k, columns, ef_search, where, group, mode, text, weights) -> pa.Table:
        try:
            return self._search_rows(reader, dataset, vector, k, columns, ef_search, where, group, mode, text, weights)
        except FilterError as error:
            raise SearchError(f"dataset {dataset!r}: {error}") from error
        except TextSearchUnavailable as error:
            raise SearchError(f"dataset {dataset!r}: {error}") from error

    def search_batch(
        self,
        dataset: str,
        queries: Sequence[str] | Sequence[Sequence[float]] | np.ndarray,
        k: int = 10,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
        mode: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> pa.Table:
        """Many queries at once (texts embedded in one batch): one Table, ``query`` (the position in
        ``queries``) first, then what ``search`` returns, best first within each query (``mode``
        as there; a batch of vectors is searched by vector)."""
        reader = self.reader(dataset)
        columns = self._check(reader, dataset, k, columns, ef_search)
        texts = all(isinstance(q, str) for q in queries) if not isinstance(queries, np.ndarray) else False
        mode = self._mode(reader, dataset, texts, mode, weights)
        if mode == "text":
            empty = [i for i, q in enumerate(queries) if not q.strip()]
            if empty:
                raise SearchError(f"dataset {dataset!r}: query {empty[0]} is empty text; pass some words")
            vectors = [None] * len(queries)
        else:
            vectors = self.query_vectors(dataset, queries, reader)
        if mode == "vector" and where is None and len(vectors) and not (group and reader.state.chunked):
            # one graph search and one take of rows for the whole batch
            return self._answer(reader, dataset, vectors, k, columns, ef_search, None, group, mode, None, None)
        tables = []
        for i, vector in enumerate(vectors):
            text = queries[i] if texts else None
            table = self._answer(reader, dataset, vector, k, columns, ef_search, where, group, mode, text, weights)
            tables.append(table.add_column(0, "query", pa.array(np.full(table.num_rows, i, dtype=np.int32))))
        if not tables:
            zero = np.zeros(reader.identity.dim, np.float32)
            empty = self._answer(reader, dataset, zero, 1, columns, ef_search, None, True, "vector", None, None).slice(0, 0)
            return empty.add_column(0, "query", pa.array([], pa.int32()))
        return pa.concat_tables(tables)


def _words(dataset: str, keywords: str | Sequence[str]) -> str:
    """Keywords as the text pass's query: a string, or a list of strings joined by spaces."""
    if isinstance(keywords, str):
        words = keywords
    elif isinstance(keywords, Sequence) and all(isinstance(w, str) for w in keywords):
        words = " ".join(keywords)
    else:
        raise SearchError(f"dataset {dataset!r}: keywords must be a string or a list of strings, got {keywords!r}")
    if not words.strip():
        raise SearchError(f"dataset {dataset!r}: the keywords are empty; pass some words or leave them out")
    return words
