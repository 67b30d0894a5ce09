"""The full-text index of a state's units (rows, or chunks of rows), keyed by their usearch keys:
tantivy, BM25. No Dagster.

Format (a tantivy index directory, format 7 of tantivy 0.27; tantivy writes its own files):

    key     u64, indexed and fast (read per hit without loading a document): the unit's usearch
            key, the one the vectors use (I2 compares them)
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

What a unit's text is (``unit_texts``, from the served columns the log carries): the unit's span
of the embedded text (the embedded columns joined by the separator; a chunk's ``_chunk_start`` /
``_chunk_end`` offsets point into it), keeping only the characters of full-text columns, plus, on
a row's first chunk only, the full-text columns that are not embedded. With the default (the
full-text columns are the embedded ones) text and vectors index exactly the same units.

A served state is a snapshot's index plus an in-memory index of the segments after it (the
*delta*). BM25 weighs a term by its rarity in the index searched, and a small delta would make
every term look common (one of three documents) or rare; ``search(..., statistics=snapshot_index)``
scores the delta with the snapshot's term rarity, the one the snapshot's own hits are scored with,
so the same text scores the same on either side and one ranking of the two is fair. (Document
lengths are still normalized by each index's own average.)
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import tantivy

from quiver.resources.index.commitlog import CHUNK, CHUNK_END, CHUNK_START

KEY, WORDS, IDENTS = "key", "words", "idents"
IDENT_PATTERN = r"[^\W_]+(?:[-.+_/:@]+[^\W_]+)*\+*"  # word parts joined by - . + _ / : @; trailing ++
IDENT_BOOST = 2.0  # a whole identifier outranks the same words found apart
WRITER_HEAP = 64 * 2**20
GC_WRITER_HEAP = 15 * 2**20  # tantivy's smallest: a writer that only collects garbage


# What the warehouse counts as a blank column (DuckDB's regexp ``\s``, RE2's [\t\n\f\r ]): left out
# of the embedded text, so the chunk offsets are counted without it.
_BLANK = re.compile(r"[\t\n\f\r ]*")


def is_blank(value: str | None) -> bool:
    return value is None or _BLANK.fullmatch(value) is not None


class TextIndexError(ValueError):
    """A text index setting that cannot work (e.g. an unknown stemmer language)."""


@dataclass(frozen=True)
class TextConfig:
    """What a dataset's text index holds and how it analyzes text; recorded in the manifest and in
    each snapshot (``to_dict``), so a reader analyzes queries as the index was written."""

    columns: tuple[str, ...]  # the full-text columns (served, so the log carries them)
    embedded: tuple[str, ...]  # the embedded columns, which the chunk offsets point into
    separator: str = "\n"  # joins the embedded columns (the spec's embeddings.separator)
    stemmer: str | None = None

    @property
    def analyzer(self) -> Analyzer:
        return Analyzer(self.stemmer)

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "embedded": list(self.embedded), "separator": self.separator, "stemmer": self.stemmer}

    @classmethod
    def from_dict(cls, data: dict | None) -> TextConfig | None:
        if data is None:
            return None
        return cls(tuple(data["columns"]), tuple(data["embedded"]), data["separator"], data.get("stemmer"))


def unit_texts(rows: pa.Table, config: TextConfig) -> list[str | None]:
    """The text each unit (row of ``rows``: served columns, chunk columns where chunked) is indexed
    with; None when it has none (see the module docstring)."""
    n = rows.num_rows

    def column(name: str) -> list:
        return rows.column(name).to_pylist() if name in rows.column_names else [None] * n

    values = {name: column(name) for name in dict.fromkeys((*config.embedded, *config.columns))}
    numbers, starts, ends = column(CHUNK), column(CHUNK_START), column(CHUNK_END)
    full_text = set(config.columns)
    extra = [name for name in config.columns if name not in config.embedded]
    texts: list[str | None] = []
    for i in range(n):
        kept, at = [], 0
        start, end = starts[i] or 0, ends[i]
        for name in config.embedded:
            value = values[name][i]
            if is_blank(value):
                continue
            if at:
                at += len(config.separator)
            lo, hi = max(at, start), len(value) + at if end is None else min(at + len(value), end)
            if name in full_text and lo < hi:
                kept.append(value[lo - at : hi - at])
            at += len(value)
        if not numbers[i]:  # the row's first chunk (or the whole row) carries the other columns
            kept += [str(values[name][i]) for name in extra if values[name][i] is not None]
        text = config.separator.join(kept)
        texts.append(None if is_blank(text) else text)
    return texts


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
    builder.add_unsigned_field(KEY, stored=False, fast=True, indexed=True)
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
    _add(writer, keys, texts)
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return TextIndex(index, analyzer)


def update_text_index(
    path: Path, base: Path, removed: np.ndarray, keys: np.ndarray, texts: Iterable[str | None], analyzer: Analyzer
) -> TextIndex:
    """A new index at ``path`` (a directory that must not exist yet): ``base``'s documents less the
    ``removed`` keys, plus ``keys`` with their ``texts``, at the cost of the change. ``base`` is
    never written: its segment files, which tantivy never changes once written, are hard-linked
    (copied where links fail), and its small JSON files, which a commit replaces, are copied."""
    path = Path(path)
    path.mkdir(parents=True)
    for file in Path(base).iterdir():
        target = path / file.name
        if file.suffix == ".json" or file.name.startswith(".tantivy"):
            shutil.copyfile(file, target)
            continue
        try:
            os.link(file, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(file, target)
    index = tantivy.Index.open(str(path))
    analyzer.register(index)
    writer = index.writer(WRITER_HEAP, 1)
    if len(removed):
        writer.delete_documents_by_query(tantivy.Query.term_set_query(index.schema, KEY, [int(k) for k in removed]))
    _add(writer, keys, texts)
    writer.commit()
    writer.wait_merging_threads()  # consumes the writer; a second one removes what merges left behind
    cleaner = index.writer(GC_WRITER_HEAP, 1)
    cleaner.garbage_collect_files()  # only this directory's links and copies go
    cleaner.wait_merging_threads()
    index.reload()
    return TextIndex(index, analyzer)


def _add(writer: tantivy.IndexWriter, keys: np.ndarray, texts: Iterable[str | None]) -> None:
    for key, text in zip(keys.tolist(), texts):
        if text:
            document = tantivy.Document()
            document.add_unsigned(KEY, int(key))
            document.add_text(WORDS, text)
            document.add_text(IDENTS, text)
            writer.add_document(document)


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

    def keys(self) -> np.ndarray:
        """Every document's key, ascending (for checks: reads the whole key column)."""
        searcher = self._index.searcher()
        result = searcher.search(tantivy.Query.all_query(), limit=max(1, searcher.num_docs), count=False)
        return np.sort(np.asarray(searcher.fast_field_values(KEY, [address for _, address in result.hits]), np.uint64))

    def query(self, text: str) -> tantivy.Query | None:
        """The user's text as terms of both fields; None when it has no term at all."""
        clauses = []
        for field, term, boost in self.terms(text):
            term_query = tantivy.Query.term_query(self._schema, field, term)
            clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(term_query, boost) if boost != 1 else term_query))
        return tantivy.Query.boolean_query(clauses) if clauses else None

    def search(
        self,
        text: str,
        limit: int,
        live: Callable[[np.ndarray], np.ndarray] | None = None,
        statistics: TextIndex | None = None,
    ) -> TextHits:
        """The ``limit`` best keys for ``text`` whose ``live(keys)`` mask is true (all, when None).

        ``statistics``: another index whose term rarity scores the hits (the snapshot's, for a
        delta): each term is then searched alone, its scores re-weighted, and summed.
        """
        if limit <= 0:
            return _NO_HITS
        if statistics is not None:
            return self._search_with(statistics, text, limit, live)
        query = self.query(text)
        if query is None:
            return _NO_HITS
        searcher = self._index.searcher()
        fetch = limit
        while True:
            result = searcher.search(query, limit=fetch, count=False)
            scores = np.fromiter((score for score, _ in result.hits), np.float32, len(result.hits))
            keys = np.asarray(searcher.fast_field_values(KEY, [address for _, address in result.hits]), np.uint64)
            keep = live(keys) if live is not None and len(keys) else np.ones(len(keys), bool)
            if keep.sum() >= limit or len(result.hits) < fetch:
                return TextHits(keys[keep][:limit], scores[keep][:limit])
            fetch *= 4  # dead keys took places: look further down

    def terms(self, text: str) -> list[tuple[str, str, float]]:
        """(field, term, boost) of each distinct term ``text`` analyzes to, as ``query`` uses them."""
        return [
            (field, term, boost)
            for field, analyzer, boost in ((WORDS, self._words, 1.0), (IDENTS, self._idents, IDENT_BOOST))
            for term in dict.fromkeys(analyzer.analyze(text))
        ]

    def _search_with(self, other: TextIndex, text: str, limit: int, live) -> TextHits:
        """Every match, scored per term with BM25's idf taken from ``other``'s documents (tantivy's
        own formula: ln(1 + (N - n + 0.5) / (n + 0.5)))."""
        mine, theirs = self._index.searcher(), other._index.searcher()
        found_keys, found_scores = [], []
        for field, term, boost in self.terms(text):
            here = mine.doc_freq(field, term)
            if not here:
                continue
            scale = _idf(theirs.doc_freq(field, term), theirs.num_docs) / _idf(here, mine.num_docs)
            query = tantivy.Query.term_query(self._schema, field, term)
            result = mine.search(tantivy.Query.boost_query(query, boost), limit=here, count=False)
            found_keys.append(np.asarray(mine.fast_field_values(KEY, [address for _, address in result.hits]), np.uint64))
            found_scores.append(np.fromiter((score for score, _ in result.hits), np.float64, len(result.hits)) * scale)
        if not found_keys:
            return _NO_HITS
        keys, at = np.unique(np.concatenate(found_keys), return_inverse=True)
        scores = np.bincount(at, weights=np.concatenate(found_scores), minlength=len(keys))
        if live is not None:
            keep = live(keys)
            keys, scores = keys[keep], scores[keep]
        best = np.lexsort((keys, -scores))[:limit]
        return TextHits(keys[best], scores[best].astype(np.float32))


def _idf(documents_with_term: int, documents: int) -> float:
    return math.log(1.0 + (documents - documents_with_term + 0.5) / (documents_with_term + 0.5))


_NO_HITS = TextHits(np.empty(0, np.uint64), np.empty(0, np.float32))
