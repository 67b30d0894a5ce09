"""The Python query helpers: ``search(dataset, text_or_vector, k=10, columns=None, where=None,
ef_search=None, mode=None, weights=None)`` and ``search_batch(dataset, queries, ...)`` for many
queries at once. ``mode``: hybrid (the default for text: vectors and full text fused), vector, text.

It honours ``QUIVER_DATASETS`` and ``QUIVER_HOME`` at each call, and keeps one ``Searcher`` per
(spec, home) for the life of the process, so the model loads and each index opens only once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from quiver.resources.search import Searcher
from quiver.resources.spec_file import ENV_DATASETS, ENV_HOME, default_home, default_spec_path

_SEARCHERS: dict = {}
_LOCK = threading.Lock()


def searcher():
    # Keyed by the variables themselves: resolving paths on every query would cost more than the lookup.
    key = (os.environ.get(ENV_DATASETS), os.environ.get(ENV_HOME))
    with _LOCK:
        if key not in _SEARCHERS:
            _SEARCHERS[key] = Searcher.for_spec_file(default_home(), default_spec_path())
        return _SEARCHERS[key]


def search(
    dataset: str,
    text_or_vector: str | Sequence[float] | np.ndarray,
    k: int = 10,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    ef_search: int | None = None,
    group: bool = True,
    mode: str | None = None,
    weights: dict[str, float] | None = None,
    keywords: str | Sequence[str] | None = None,
) -> pa.Table:
    """Top ``k`` rows of ``dataset`` for a text (embedded with the dataset's model) or a vector.

    Returns a pyarrow Table, best first: the primary key under its own name, ``score`` (higher is
    better), ``distance``, and the served columns (all of them, or ``columns``). ``where``: a SQL
    predicate over the served columns; the result is the top ``min(k, matching rows)``. A row whose
    text was split into chunks is one result, scored by its best chunk (``group=False``: the ``k``
    best chunks); ``columns`` may add ``chunk`` (the matching chunk's text), ``chunk_number``,
    ``chunk_start``, ``chunk_end``.

    ``mode``: ``hybrid`` (the default for text on a dataset with a full-text index: the vector and
    full-text passes fused by reciprocal rank, adding ``fused_score``, ``text_score``,
    ``vector_rank`` and ``text_rank``; ``weights={"vector": 1, "text": 2}`` weighs the passes),
    ``vector`` or ``text`` (BM25 alone; ``score`` is then the BM25 score). ``keywords``: what the
    text pass searches instead of the query text (beside a vector, they make it hybrid).
    """
    return searcher().search(
        dataset, text_or_vector, k=k, columns=columns, where=where, ef_search=ef_search, group=group, mode=mode,
        weights=weights, keywords=keywords,
    )


def search_batch(
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
    """``search`` for many queries at once: one Table with ``query`` (the position in ``queries``)
    first; texts are embedded in one batch."""
    return searcher().search_batch(
        dataset, queries, k=k, columns=columns, where=where, ef_search=ef_search, group=group, mode=mode, weights=weights
    )
