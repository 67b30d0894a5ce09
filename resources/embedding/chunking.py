"""Long text -> token-counted chunks at semantic boundaries, with their character offsets. No Dagster.

A model reads a fixed window of word pieces (all-MiniLM-L6-v2: 256, two of them [CLS] and [SEP])
and drops the rest, so a row's text past the window is never searchable unless it is split. The
split is ``semantic-text-splitter`` (the Rust crate Spice uses) counting tokens with the model's
own tokenizer: it cuts at the largest boundary that keeps a chunk within ``size`` tokens
(paragraphs, then sentences, then words), and repeats up to ``overlap`` tokens of the previous
chunk at the start of the next.

``Chunker.split(text)`` returns ``Chunk``s: the chunk's number (0, 1, ...), its text, and its
``[start, end)`` character offsets into ``text`` (Python string indices, so
``text[start:end] == chunk.text``). A text that fits the model's window is one chunk, the whole
text, whatever ``size`` says: short-text datasets embed exactly what they embedded before.
An empty or whitespace-only text has no chunk (the warehouse skips such rows before they get here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from quiver.resources.index.commitlog import CHUNK, CHUNK_END, CHUNK_START
from quiver.resources.spec import MIN_CHUNK_TOKENS, ChunkingSpec, default_chunk_tokens

SPECIAL_TOKENS = 2  # [CLS] and [SEP] take two places in every window


@dataclass(frozen=True)
class Chunk:
    number: int
    start: int  # character offset of the chunk's first character in the row's text
    end: int  # one past its last character
    text: str


@dataclass(frozen=True)
class ChunkSettings:
    """What a dataset's ``chunking`` block asks for, in tokens of its model."""

    enabled: bool = True
    size: int | None = None  # None: the default for the model's window (``spec.default_chunk_tokens``)
    overlap: int | None = None
    trim: bool = True

    @classmethod
    def from_spec(cls, block: ChunkingSpec) -> ChunkSettings:
        return cls(block.enabled, block.target_chunk_size, block.overlap_size, block.trim_whitespace)


class Chunker:
    """Splits texts for one model: ``window`` is the model's ``max_seq_length`` in tokens."""

    def __init__(self, tokenizer_file: Path, window: int, settings: ChunkSettings = ChunkSettings()):
        from semantic_text_splitter import TextSplitter
        from tokenizers import Tokenizer

        self.window = int(window)
        self.capacity = self.window - SPECIAL_TOKENS  # tokens of text a window holds
        self.size = settings.size if settings.size is not None else default_chunk_tokens(self.window)
        self.overlap = settings.overlap if settings.overlap is not None else 0  # overlap never helped (bench-chunking)
        self.enabled = settings.enabled
        check_sizes(self.size, self.overlap, self.window)
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()  # count every token, not the first window's
        self._tokenizer = tokenizer
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, capacity=self.size, overlap=self.overlap, trim=settings.trim
        )

    def token_counts(self, texts: list[str]) -> list[int]:
        """Word pieces of each text, without the special tokens."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def split(self, text: str) -> list[Chunk]:
        return next(iter(self.split_many([text])))

    def split_many(self, texts: Iterable[str]) -> Iterator[list[Chunk]]:
        """The chunks of each text, in order. A text within the window is one chunk, whole."""
        texts = list(texts)
        # A character becomes at most three word pieces (a Hangul syllable decomposes into three
        # jamo), so a text of at most capacity/3 characters fits without counting: short-text
        # datasets skip the tokenizer pass (it cost them 2% in bench-chunking).
        long = [i for i, text in enumerate(texts) if self.enabled and 3 * len(text) > self.capacity]
        tokens = dict(zip(long, self.token_counts([texts[i] for i in long])))
        for i, text in enumerate(texts):
            if not text.strip():
                yield []
            elif tokens.get(i, 0) <= self.capacity:
                yield [Chunk(0, 0, len(text), text)]
            else:
                yield [
                    Chunk(number, start, start + len(piece), piece)
                    for number, (start, piece) in enumerate(self._splitter.chunk_indices(text))
                ]


@dataclass(frozen=True)
class RowChunks:
    """The chunks of many rows: ``table`` (primary key, ``_chunk``, ``_chunk_start``, ``_chunk_end``)
    and ``texts``, one per row of it, in the same order: what to embed and what to commit."""

    table: pa.Table
    texts: list[str]
    rows_split: int  # rows that became more than one chunk
    rows_cut: int  # rows longer than the window embedded whole anyway (chunking off): their tail is lost


def chunk_rows(primary_key: str, primary_keys: pa.Array, texts: list[str], chunker: Chunker) -> RowChunks:
    """Every row's chunks, in row order, numbered from 0 per row; ``primary_key`` names the key column."""
    owners, numbers, starts, ends, pieces = [], [], [], [], []
    split = 0
    for row, chunks in enumerate(chunker.split_many(texts)):
        split += len(chunks) > 1
        for chunk in chunks:
            owners.append(row)
            numbers.append(chunk.number)
            starts.append(chunk.start)
            ends.append(chunk.end)
            pieces.append(chunk.text)
    cut = 0 if chunker.enabled else sum(n > chunker.capacity for n in chunker.token_counts(texts))
    table = pa.table(
        {
            primary_key: primary_keys.take(pa.array(np.asarray(owners, dtype=np.int64))),
            CHUNK: pa.array(numbers, pa.int32()),
            CHUNK_START: pa.array(starts, pa.int32()),
            CHUNK_END: pa.array(ends, pa.int32()),
        }
    )
    return RowChunks(table, pieces, split, cut)


class ChunkingError(ValueError):
    """Chunk sizes a model cannot use; the message names the allowed range."""


def check_sizes(size: int, overlap: int, window: int) -> None:
    capacity = window - SPECIAL_TOKENS
    if not MIN_CHUNK_TOKENS <= size <= capacity:
        raise ChunkingError(
            f"target_chunk_size {size} is outside {MIN_CHUNK_TOKENS}..{capacity}: the model reads {window} tokens, "
            f"{SPECIAL_TOKENS} of them its own markers"
        )
    if not 0 <= overlap < size:
        raise ChunkingError(f"overlap_size {overlap} must be at least 0 and smaller than target_chunk_size {size}")
