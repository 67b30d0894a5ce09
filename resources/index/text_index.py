"""The full-text index of a state's units (rows, or chunks of rows), keyed by their usearch keys:
tantivy, BM25. No Dagster.

Format (a tantivy index directory, format 7 of tantivy 0.27; tantivy writes its own files):

    key     u64, stored and fast: the unit's usearch key, the one the vectors use (I2 compares them)
    words   text, analyzer ``words``: the text's words, split at anything but letters and digits
    idents  text, analyzer ``idents``: identifiers kept whole (``py-spy``, ``h5py``, ``v1.2``,
            ``libssl3``, ``x86_64``), so one typed as written matches it first

Both analyzers lower-case and fold accents to ASCII (``Café`` matches ``cafe``); ``stemmer``
(a Snowball language, e.g. ``english``) stems ``words`` only: an identifier is never stemmed.

A query is analyzed the same two ways and becomes a disjunction of term queries (no query syntax:
``c++``, ``-v`` or ``AND`` in a user's text are words, not operators), ``idents`` boosted so a
whole identifier ranks above its parts. ``search`` returns the best live keys: hits whose key is
no longer live (deleted or overwritten after this index was written) are skipped, and the search
widens until ``limit`` live keys are found or the matches run out, so the answer holds exactly
``min(limit, live matches)`` keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tantivy

KEY, WORDS, IDENTS = "key", "words", "idents"
IDENT_PATTERN = r"[^\W_]+(?:[-.+_/:@]+[^\W_]+)*\+*"  # word parts joined by - . + _ / : @; trailing ++
IDENT_BOOST = 2.0  # a whole identifier outranks the same words found apart
WRITER_HEAP = 64 * 2**20


class TextIndexError(ValueError):
    """A text index setting that cannot work (e.g. an unknown stemmer language)."""


@dataclass(frozen=True)
class Analyzer:
    """How text becomes terms; part of the index's identity (a change rebuilds the index)."""

    stemmer: str | None = None  # a Snowball language for ``words``, or None

    def words(self) -> tantivy.TextAnalyzer:
        builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
        builder = builder.filter(tantivy.Filter.ascii_fold())
        if self.stemmer:
            try:
                builder = builder.filter(tantivy.Filter.stemmer(self.stemmer))
            except ValueError as error:
                raise TextIndexError(f"full_text.stemmer: {self.stemmer!r} is not a stemmer language ({error})") from None
        return builder.filter(tantivy.Filter.remove_long(64)).build()

    def idents(self) -> tantivy.TextAnalyzer:
        return (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(IDENT_PATTERN))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.ascii_fold())
            .filter(tantivy.Filter.remove_long(128))
            .build()
        )

    def register(self, index: tantivy.Index) -> None:
        index.register_tokenizer(WORDS, self.words())
        index.register_tokenizer(IDENTS, self.idents())


def schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field(KEY, stored=True, fast=True, indexed=True)
    builder.add_text_field(WORDS, tokenizer_name=WORDS, index_option="freq")
    builder.add_text_field(IDENTS, tokenizer_name=IDENTS, index_option="freq")
    return builder.build()


def write_text_index(path: Path | None, keys: np.ndarray, texts: Iterable[str | None], analyzer: Analyzer) -> TextIndex:
    """A new index of ``keys`` with their ``texts`` (a None or empty text is not indexed) at
    ``path``, a directory that must not exist yet, or in memory when ``path`` is None."""
    if path is not None:
        Path(path).mkdir(parents=True)
    index = tantivy.Index(schema(), path=str(path) if path is not None else None, reuse=False)
    analyzer.register(index)
    writer = index.writer(WRITER_HEAP, 1)
    for key, text in zip(keys.tolist(), texts):
        if text:
            document = tantivy.Document()
            document.add_unsigned(KEY, int(key))
            document.add_text(WORDS, text)
            document.add_text(IDENTS, text)
            writer.add_document(document)
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return TextIndex(index, analyzer)


@dataclass
class TextHits:
    keys: np.ndarray  # uint64, best first
    scores: np.ndarray  # float32 BM25, best first (scores of two indexes are not comparable)


class TextIndex:
    """A written text index, opened for search (memory-mapped by tantivy when on disk)."""

    def __init__(self, index: tantivy.Index, analyzer: Analyzer):
        self._index = index
        self._schema = index.schema
        self._words, self._idents = analyzer.words(), analyzer.idents()

    @classmethod
    def open(cls, path: Path, analyzer: Analyzer) -> TextIndex:
        index = tantivy.Index.open(str(path))
        analyzer.register(index)
        return cls(index, analyzer)

    @property
    def documents(self) -> int:
        return self._index.searcher().num_docs

    def query(self, text: str) -> tantivy.Query | None:
        """The user's text as terms of both fields; None when it has no term at all."""
        clauses = []
        for field, analyzer, boost in ((WORDS, self._words, 1.0), (IDENTS, self._idents, IDENT_BOOST)):
            for term in dict.fromkeys(analyzer.analyze(text)):
                term_query = tantivy.Query.term_query(self._schema, field, term)
                clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(term_query, boost) if boost != 1 else term_query))
        return tantivy.Query.boolean_query(clauses) if clauses else None

    def search(self, text: str, limit: int, live: Callable[[np.ndarray], np.ndarray] | None = None) -> TextHits:
        """The ``limit`` best keys for ``text`` whose ``live(keys)`` mask is true (all, when None)."""
        query = self.query(text)
        if query is None or limit <= 0:
            return TextHits(np.empty(0, np.uint64), np.empty(0, np.float32))
        searcher = self._index.searcher()
        fetch = limit
        while True:
            result = searcher.search(query, limit=fetch, count=False)
            scores = np.fromiter((score for score, _ in result.hits), np.float32, len(result.hits))
            keys = np.fromiter((searcher.doc(address)[KEY][0] for _, address in result.hits), np.uint64, len(result.hits))
            keep = live(keys) if live is not None and len(keys) else np.ones(len(keys), bool)
            if keep.sum() >= limit or len(result.hits) < fetch:
                keys, scores = keys[keep][:limit], scores[keep][:limit]
                return TextHits(keys, scores)
            fetch *= 4  # dead keys took places: look further down
