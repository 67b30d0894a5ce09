"""chunking.py: token-counted chunks with exact offsets; a text that fits is one chunk, whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.resources.embedding import resolve_model_path
from quiver.resources.embedding.chunking import Chunk, Chunker, ChunkingError, ChunkSettings

TOKENIZER = resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json"
WINDOW = 256
SENTENCES = [f"Sentence number {i} talks about topic {i % 7} and the package foo-bar{i}." for i in range(120)]
LONG = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(TOKENIZER, WINDOW, ChunkSettings(size=64, overlap=0))


def test_a_text_that_fits_the_window_is_one_whole_chunk(chunker):
    text = "  A short text, with its own whitespace kept.  "
    assert chunker.split(text) == [Chunk(0, 0, len(text), text)]
    within = " ".join(SENTENCES[:12])  # over the chunk size (64) but within the window (254)
    assert 64 < chunker.token_counts([within])[0] <= 254
    assert [(c.start, c.end) for c in chunker.split(within)] == [(0, len(within))]


def test_a_long_text_is_split_within_the_size_at_sentence_ends(chunker):
    chunks = chunker.split(LONG)
    assert len(chunks) > 10 and [c.number for c in chunks] == list(range(len(chunks)))
    counts = chunker.token_counts([c.text for c in chunks])
    assert max(counts) <= 64
    assert all(c.text.endswith(".") for c in chunks), "cut at sentence ends, not mid-sentence"
    assert all(LONG[c.start : c.end] == c.text for c in chunks)
    # without overlap the chunks cover the text in order, only whitespace between them
    assert all(LONG[a.end : b.start].strip() == "" for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1].text.endswith(SENTENCES[-1]), "the last word is in a chunk"


def test_overlap_repeats_the_end_of_the_previous_chunk():
    chunks = Chunker(TOKENIZER, WINDOW, ChunkSettings(size=64, overlap=24)).split(LONG)
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))
    assert all(LONG[c.start : c.end] == c.text for c in chunks)


def test_disabled_keeps_one_chunk_per_text_and_empty_text_has_none():
    off = Chunker(TOKENIZER, WINDOW, ChunkSettings(enabled=False))
    assert [len(c) for c in off.split_many([LONG, "x", "   "])] == [1, 1, 0]


def test_offsets_are_string_indices_with_non_ascii_text():
    text = "Grüße aus Köln ✓ — 東京の天気は晴れです。 " * 80
    chunks = Chunker(TOKENIZER, WINDOW, ChunkSettings(size=40)).split(text)
    assert len(chunks) > 1 and all(text[c.start : c.end] == c.text for c in chunks)


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [(7, 0, "outside 8..254"), (255, 0, "outside 8..254"), (64, 64, "smaller than target_chunk_size 64"), (64, -1, "at least 0")],
)
def test_sizes_a_model_cannot_use_are_refused(size, overlap, message):
    with pytest.raises(ChunkingError, match=message):
        Chunker(TOKENIZER, WINDOW, ChunkSettings(size=size, overlap=overlap))


@settings(max_examples=30, deadline=None)
@given(
    words=st.lists(st.sampled_from(["alpha", "beta.", "gamma,", "δέλτα", "\n\n", "x86_64", "py-spy", "..."]), max_size=400),
    size=st.integers(8, 120),
)
def test_every_chunk_is_its_slice_and_within_the_size(words, size):
    text = " ".join(words)
    chunker = Chunker(TOKENIZER, WINDOW, ChunkSettings(size=size, overlap=size // 4))
    chunks = chunker.split(text)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    if chunker.token_counts([text])[0] > 254:
        assert max(chunker.token_counts([c.text for c in chunks])) <= size
    elif text.strip():
        assert len(chunks) == 1
    assert bool(chunks) == bool(text.strip())


def test_the_default_size_is_a_quarter_of_the_window_and_counting_is_skipped_for_short_text():
    chunker = Chunker(TOKENIZER, WINDOW)
    assert (chunker.size, chunker.overlap) == (64, 0)
    chunks = chunker.split(LONG)
    assert max(chunker.token_counts([c.text for c in chunks])) <= 64
    hangul = "한국어 문장입니다 " * 9  # 90 characters, 189 word pieces: more pieces than characters
    assert len(hangul) * 3 > chunker.capacity and chunker.token_counts([hangul])[0] > len(hangul)
    assert len(chunker.split("x" * 80)) == 1
