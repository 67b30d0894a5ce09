"""Chunking benchmark: which chunk size and overlap should quiver use by default, on long real text.

    make bench-chunking
    BENCH_CHUNK_DOCS=200 BENCH_CHUNK_DISTRACTORS=1000 make bench-chunking   # a quicker run
    BENCH_CHUNK_SHORT=5000 BENCH_CHUNK_REPEATS=3 BENCH_CHUNK_SEED=0         # the other knobs
    BENCH_CHUNK_CONFIGS=254/0,128/16,64/8                                   # size/overlap pairs

all-MiniLM-L6-v2 reads 256 tokens (254 of text) and drops the rest, so without chunking the end
of a long text is never searchable. The task, from ../shared/data/debian_packages.parquet
(``BENCH_SOURCE``), seeded and deterministic:

- documents: every ``long_description`` over 300 tokens (about 590 rows; ``BENCH_CHUNK_DOCS``
  samples fewer), plus ``BENCH_CHUNK_DISTRACTORS`` (default 4,000) other non-empty ones sampled with the
  seed. A document's text is its ``long_description``, the same for every configuration.
- queries: for each long document one sentence (8 to 40 words) that starts in the second half of
  its text by character, and past its 300th token where it has such a sentence, picked with the
  seed. A sentence that also occurs verbatim in another document cannot name its own and is not
  used; a document left with no sentence stays in the index without a query.
- a query succeeds at k when its own document ranks within the top k. Search is exact (dot
  products of unit vectors) and a document's score is its best chunk's; a tie ranks the query's
  own document last (the pessimistic rank).

Each configuration (no chunking, today's behaviour, and the size/overlap pairs of
``BENCH_CHUNK_CONFIGS``: 254/0, 254/32, 128/0, 128/16, 64/0, 64/8, 32/0 unless set) chunks every
document with ``quiver.resources.embedding.chunking.Chunker`` and embeds the chunks with the
offline model (ONNX Runtime on CPU). The distractors' chunks are embedded once and cached by text
(most of them are one whole-text chunk, the same in every configuration); the long documents'
chunks are embedded afresh for every configuration and timed, in ``BENCH_CHUNK_REPEATS`` rounds
over thirds of the long documents, the configurations interleaved within each round so that load
from other processes falls on all of them alike. ``time x`` is the median over the rounds of a
configuration's seconds over no chunking's, on the same documents; ``tokens x`` is the tokens the
model runs for those documents' chunks (text cut at the window, plus [CLS] and [SEP]) over no
chunking's: exact, where the seconds are noisy. ``vectors, whole source`` counts the vectors every
non-empty text of the source would get: the benchmark's index holds far more long texts than the
source does, so its own vector counts overstate what chunking costs a real dataset.

A second check embeds ``BENCH_CHUNK_SHORT`` (default 5,000) ``short_description`` texts (a sentence
each) with the default chunking and with none, ``BENCH_CHUNK_REPEATS`` times, interleaved: the
vectors must be the same in number (and text), and the seconds (split + embed) are compared as the
ratio of the medians. Exits non-zero if the vectors differ in number.

Prints a markdown table and a one-line recommendation: the configuration with the best success@10,
ties broken by fewer vectors. Compare within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import bisect
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.embedding import get_embedder, resolve_model_path
from quiver.resources.embedding.chunking import SPECIAL_TOKENS, Chunker, ChunkSettings
from quiver.resources.spec import default_chunk_tokens

SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT.parent / "shared" / "data" / "debian_packages.parquet"))
MODEL = "all-MiniLM-L6-v2"
WINDOW = 256  # the model's max_seq_length in tokens, [CLS] and [SEP] included
DIM = 384
LONG_TOKENS = 300  # a document over this many tokens is a long document, with a query
QUERY_WORDS = (8, 40)  # a query sentence's length in words, both ends included
SEED = int(os.environ.get("BENCH_CHUNK_SEED", "0"))
N_DOCS = int(os.environ.get("BENCH_CHUNK_DOCS", "0"))  # 0: every long document
N_DISTRACTORS = int(os.environ.get("BENCH_CHUNK_DISTRACTORS", "4000"))
N_SHORT = int(os.environ.get("BENCH_CHUNK_SHORT", "5000"))
REPEATS = int(os.environ.get("BENCH_CHUNK_REPEATS", "3"))


@dataclass(frozen=True)
class Config:
    label: str
    settings: ChunkSettings


def parse_configs(text: str) -> tuple[Config, ...]:
    """No chunking (today's behaviour) and one config per ``size/overlap`` in a comma-separated list."""
    configs = [Config("none (today)", ChunkSettings(enabled=False))]
    for pair in text.split(","):
        size, overlap = (int(x) for x in pair.split("/"))
        configs.append(Config(f"{size} / {overlap}", ChunkSettings(size=size, overlap=overlap)))
    return tuple(configs)


# The README's table: the default (64/0) and its neighbours. 128/32 is left out to keep the run
# near ten minutes on two busy cores (it embeds the most tokens of all); BENCH_CHUNK_CONFIGS adds it.
CONFIGS = parse_configs(os.environ.get("BENCH_CHUNK_CONFIGS", "254/0,254/32,128/0,128/16,64/0,64/8,32/0"))


@dataclass(frozen=True)
class Corpus:
    texts: list[str]  # the long documents first, then the distractors
    n_long: int
    source_rows: int  # non-empty texts in the whole source
    over_window: list[str]  # the source's texts longer than the model's window (the ones chunking splits)


@dataclass(frozen=True)
class Query:
    doc: int  # position of its document in Corpus.texts
    text: str
    start_token: int  # where the sentence starts in its document, in tokens of text


@dataclass
class Result:
    config: Config
    ranks: np.ndarray  # the own document's rank per query, 1 = first
    vectors: int  # in the whole index
    long_vectors: int  # of the long documents
    long_tokens: int  # embedded for the long documents, special tokens included
    source_vectors: int  # the whole source would have, one per text within the window
    seconds: list[float] = field(default_factory=list)  # embedding the long documents' chunks, per round


# -- data ----------------------------------------------------------------------------------------


def load_corpus(tokenizer, rng: np.random.Generator) -> Corpus:
    """The long documents (over ``LONG_TOKENS``) and a seeded sample of other non-empty ones."""
    texts = pq.read_table(SOURCE, columns=["long_description"]).column("long_description").to_pylist()
    texts = [t for t in texts if t and t.strip()]
    counts = np.array([len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)])
    long_rows, other_rows = np.flatnonzero(counts > LONG_TOKENS), np.flatnonzero(counts <= LONG_TOKENS)
    long_rows = rng.permutation(long_rows)[: N_DOCS or None]
    other_rows = rng.choice(other_rows, min(N_DISTRACTORS, len(other_rows)), replace=False)
    over_window = [texts[i] for i in np.flatnonzero(counts > WINDOW - SPECIAL_TOKENS)]
    documents = [texts[i] for i in long_rows] + [texts[i] for i in other_rows]
    return Corpus(documents, len(long_rows), len(texts), over_window)


def load_short_texts(rng: np.random.Generator) -> list[str]:
    texts = pq.read_table(SOURCE, columns=["short_description"]).column("short_description").to_pylist()
    texts = [t for t in texts if t and t.strip()]
    return [texts[i] for i in rng.choice(len(texts), min(N_SHORT, len(texts)), replace=False)]


# -- queries -------------------------------------------------------------------------------------

# Sentence ends, paragraph breaks, and the starts of list items ("* item", "- item", "1. item").
BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n\s*(?=[-*+o]\s|\d+[.)]\s)")


def sentences(text: str) -> list[tuple[int, str]]:
    """(character offset, sentence with whitespace collapsed) for each sentence of ``text``."""
    out, start = [], 0
    for match in [*BOUNDARY.finditer(text), None]:
        piece = text[start : match.start() if match else len(text)]
        if piece.strip():
            out.append((start + len(piece) - len(piece.lstrip()), " ".join(piece.split())))
        start = match.end() if match else len(text)
    return out


def candidate_sentences(text: str, tokenizer) -> list[tuple[int, str]]:
    """(start token, sentence) for sentences of a query's length starting in the text's second half;
    those past ``LONG_TOKENS`` only, where there are any."""
    token_starts = [a for a, _ in tokenizer.encode(text, add_special_tokens=False).offsets]
    found = [
        (bisect.bisect_left(token_starts, offset), sentence)
        for offset, sentence in sentences(text)
        if offset >= len(text) / 2 and QUERY_WORDS[0] <= len(sentence.split()) <= QUERY_WORDS[1]
    ]
    late = [c for c in found if c[0] >= LONG_TOKENS]
    return late or found


def pick_queries(corpus: Corpus, tokenizer, rng: np.random.Generator) -> list[Query]:
    """One sentence per long document, in random (seeded) order of its candidates, that occurs in
    no other document of the corpus."""
    flat = [" ".join(t.split()) for t in corpus.texts]
    queries = []
    for doc in range(corpus.n_long):
        candidates = candidate_sentences(corpus.texts[doc], tokenizer)
        for i in rng.permutation(len(candidates)):
            start_token, sentence = candidates[i]
            if sum(sentence in text for text in flat) == 1:
                queries.append(Query(doc, sentence, start_token))
                break
    return queries


# -- embedding and search ------------------------------------------------------------------------


def chunk_texts(chunker: Chunker, texts: list[str]) -> list[list[str]]:
    return [[c.text for c in chunks] for chunks in chunker.split_many(texts)]


def embed_cached(model, texts: list[str], cache: dict[str, np.ndarray]) -> np.ndarray:
    """Vectors of ``texts``, embedding only those not in ``cache`` (and adding them)."""
    new = list(dict.fromkeys(t for t in texts if t not in cache))
    if new:
        cache.update(zip(new, model.embed(new)))
    return np.stack([cache[t] for t in texts]) if texts else np.empty((0, DIM), np.float32)


def index_tokens(chunker: Chunker, chunks: list[str]) -> int:
    """Tokens the model runs for these chunks: text cut at the window, plus [CLS] and [SEP] each."""
    capacity = WINDOW - SPECIAL_TOKENS
    return sum(min(n, capacity) + SPECIAL_TOKENS for n in chunker.token_counts(chunks))


def source_vectors(chunker: Chunker, corpus: Corpus) -> int:
    """Vectors of the whole source: one per text within the window, its chunks for the others."""
    split = sum(len(cs) for cs in chunker.split_many(corpus.over_window))
    return corpus.source_rows - len(corpus.over_window) + split


def ranks_of(query_vectors: np.ndarray, targets: np.ndarray, vectors: np.ndarray, per_doc: list[int]) -> np.ndarray:
    """Rank of each query's own document, documents scored by their best chunk (ties: pessimistic)."""
    offsets = np.concatenate([[0], np.cumsum(per_doc)[:-1]])
    scores = np.maximum.reduceat(query_vectors @ vectors.T, offsets, axis=1)  # (queries, documents)
    own = scores[np.arange(len(targets)), targets][:, None]
    return (scores >= own).sum(axis=1)  # the own document counts itself: rank 1 when nothing ties or beats it


# -- the long-text task --------------------------------------------------------------------------


def run_long_task(model, tokenizer_file: Path, corpus: Corpus, queries: list[Query]) -> list[Result]:
    query_vectors = model.embed([q.text for q in queries])  # also warms the model up before any timing
    targets = np.array([q.doc for q in queries])
    chunkers = {c.label: Chunker(tokenizer_file, WINDOW, c.settings) for c in CONFIGS}
    chunks = {label: chunk_texts(chunker, corpus.texts) for label, chunker in chunkers.items()}

    long_vectors = {c.label: [None] * corpus.n_long for c in CONFIGS}
    seconds = {c.label: [] for c in CONFIGS}
    rounds = np.array_split(np.arange(corpus.n_long), REPEATS)
    for r, docs in enumerate(rounds):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]  # a different config first each round
        for config in order:
            texts = [t for d in docs for t in chunks[config.label][d]]
            started = time.perf_counter()
            vectors = model.embed(texts)
            seconds[config.label].append(time.perf_counter() - started)
            split_at = np.cumsum([len(chunks[config.label][d]) for d in docs])[:-1]
            for d, v in zip(docs, np.split(vectors, split_at)):
                long_vectors[config.label][d] = v
        print(
            f"  round {r + 1}/{len(rounds)}: " + ", ".join(f"{c.label} {seconds[c.label][-1]:.1f}s" for c in CONFIGS),
            file=sys.stderr,
            flush=True,
        )

    cache: dict[str, np.ndarray] = {}
    results = []
    for config in CONFIGS:
        doc_chunks = chunks[config.label]
        distractor_texts = [t for cs in doc_chunks[corpus.n_long :] for t in cs]
        vectors = np.concatenate(long_vectors[config.label] + [embed_cached(model, distractor_texts, cache)])
        per_doc = [len(cs) for cs in doc_chunks]
        results.append(
            Result(
                config,
                ranks_of(query_vectors, targets, vectors, per_doc),
                vectors=len(vectors),
                long_vectors=sum(per_doc[: corpus.n_long]),
                long_tokens=index_tokens(chunkers[config.label], [t for cs in doc_chunks[: corpus.n_long] for t in cs]),
                source_vectors=source_vectors(chunkers[config.label], corpus),
                seconds=seconds[config.label],
            )
        )
    return results


# -- the short-text check ------------------------------------------------------------------------


@dataclass
class ShortCheck:
    vectors: dict[str, int]
    same_texts: bool
    max_difference: float  # largest absolute difference between the two runs' vectors
    seconds: dict[str, list[float]]  # split + embed, per repeat


def run_short_check(model, tokenizer_file: Path, texts: list[str]) -> ShortCheck:
    """The default chunking against none on one-sentence texts: same vectors, same time."""
    configs = {"default": ChunkSettings(), "none": ChunkSettings(enabled=False)}
    chunkers = {label: Chunker(tokenizer_file, WINDOW, s) for label, s in configs.items()}
    seconds = {label: [] for label in configs}
    chunks, vectors = {}, {}
    for r in range(REPEATS):
        for label in list(configs) if r % 2 == 0 else list(configs)[::-1]:
            started = time.perf_counter()
            chunks[label] = [t for cs in chunk_texts(chunkers[label], texts) for t in cs]
            vectors[label] = model.embed(chunks[label])
            seconds[label].append(time.perf_counter() - started)
    same_shape = vectors["default"].shape == vectors["none"].shape
    return ShortCheck(
        {label: len(v) for label, v in vectors.items()},
        chunks["default"] == chunks["none"],
        float(np.abs(vectors["default"] - vectors["none"]).max()) if same_shape else float("nan"),
        seconds,
    )


# -- report --------------------------------------------------------------------------------------


def success(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks <= k))


def mrr(ranks: np.ndarray, k: int = 10) -> float:
    return float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0)))


def print_table(corpus: Corpus, queries: list[Query], results: list[Result]) -> None:
    late = np.array([q.start_token >= WINDOW - SPECIAL_TOKENS for q in queries])
    base = results[0]
    print(
        f"\nchunking on {SOURCE.name}: {len(corpus.texts):,} documents ({corpus.n_long:,} over {LONG_TOKENS} tokens, "
        f"{len(corpus.texts) - corpus.n_long:,} distractors), {len(queries):,} queries "
        f"({late.sum():,} start past the model's {WINDOW - SPECIAL_TOKENS}-token window), {MODEL}, "
        f"seed {SEED}, {os.cpu_count()} cores\n"
    )
    print(
        "| size / overlap (tokens) | success@1 | success@10 | MRR@10 | success@10, query past the window "
        "| vectors | vectors / long doc | index MB | vectors, whole source | tokens x | embed s | time x |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = statistics.median(s / b for s, b in zip(r.seconds, base.seconds))
        print(
            f"| {r.config.label} | {success(r.ranks, 1):.3f} | {success(r.ranks, 10):.3f} | {mrr(r.ranks):.3f} "
            f"| {success(r.ranks[late], 10):.3f} | {r.vectors:,} | {r.long_vectors / corpus.n_long:.2f} "
            f"| {r.vectors * DIM * 4 / 1e6:.1f} | {r.source_vectors:,} | {r.long_tokens / base.long_tokens:.2f} "
            f"| {sum(r.seconds):.1f} | {ratio:.2f} |"
        )
    print(
        f"\nvectors, whole source: all {corpus.source_rows:,} non-empty texts of the source "
        f"({len(corpus.over_window):,} of them over the window) chunked the same way.\ntokens x, embed s, time x: the long documents only, "
        "their chunks embedded afresh for each config (the distractors' are embedded once and\ncached by text). "
        "tokens x: tokens embedded (cut at the window, [CLS] and [SEP] counted) over no chunking's, exact. "
        f"time x: median over\n{REPEATS} interleaved rounds of a config's seconds over no chunking's "
        "on the same documents."
    )


def print_short_check(check: ShortCheck, n_texts: int) -> bool:
    medians = {label: statistics.median(s) for label, s in check.seconds.items()}
    ratios = [d / n for d, n in zip(check.seconds["default"], check.seconds["none"])]
    same = check.vectors["default"] == check.vectors["none"]
    print(
        f"\nshort texts ({n_texts:,} short_description, split + embed, {REPEATS} repeats interleaved): "
        f"vectors {check.vectors['default']:,} with the default chunking ({default_chunk_tokens(WINDOW)} / 0) vs {check.vectors['none']:,} without "
        f"({'same' if same else 'DIFFERENT'}; texts {'identical' if check.same_texts else 'DIFFERENT'}; "
        f"max |difference| {check.max_difference:.1e}); median s {medians['default']:.2f} vs {medians['none']:.2f}, "
        f"ratio of medians {medians['default'] / medians['none']:.3f} "
        f"(per-repeat ratios {min(ratios):.3f}..{max(ratios):.3f})"
    )
    return same


def recommend(results: list[Result]) -> Result:
    """The best success@10; ties broken by fewer vectors."""
    return max(results, key=lambda r: (int((r.ranks <= 10).sum()), -r.vectors))


def main() -> int:
    started = time.perf_counter()
    from tokenizers import Tokenizer

    tokenizer_file = resolve_model_path(MODEL) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rng = np.random.default_rng(SEED)

    print(f"loading {SOURCE.name} and counting tokens ...", file=sys.stderr, flush=True)
    corpus = load_corpus(tokenizer, rng)
    queries = pick_queries(corpus, tokenizer, rng)
    short_texts = load_short_texts(rng)
    model = get_embedder(MODEL, None)

    print(
        f"long-text task: {len(corpus.texts):,} documents, {len(queries):,} queries, {len(CONFIGS)} configs ...",
        file=sys.stderr,
        flush=True,
    )
    results = run_long_task(model, tokenizer_file, corpus, queries)
    print(f"short-text check: {len(short_texts):,} texts ...", file=sys.stderr, flush=True)
    check = run_short_check(model, tokenizer_file, short_texts)

    print_table(corpus, queries, results)
    same = print_short_check(check, len(short_texts))
    best = recommend(results)
    print(
        f"\nrecommendation (best success@10, ties broken by fewer vectors): size / overlap {best.config.label}, "
        f"success@10 {success(best.ranks, 10):.3f} with {best.vectors:,} vectors; quiver's default today is "
        f"{default_chunk_tokens(WINDOW)} / 0"
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"wall time {time.perf_counter() - started:.0f}s, load average {load} (1, 5, 15 minutes)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
