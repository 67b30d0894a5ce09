"""Full-text search beside the vectors, through the real engine: quality, latency, build cost, refresh.

    make bench-hybrid                   # the full run (about 3 minutes on 2 shared cores)
    BENCH_HYBRID_ROWS=2000 BENCH_HYBRID_QUERIES=200 BENCH_HYBRID_LATENCY_ROWS=20000 \
        BENCH_HYBRID_LATENCY_QUERIES=100 make bench-hybrid              # a quick look

Environment:
    BENCH_HYBRID_ROWS              packages in the quality index (10,000, sampled with a fixed seed)
    BENCH_HYBRID_QUERIES           queries per quality task (1,000)
    BENCH_HYBRID_LATENCY_ROWS      rows of the latency, build and refresh index (100,000)
    BENCH_HYBRID_LATENCY_QUERIES   timed queries per mode (300: half names, half sentences)
    BENCH_HYBRID_REFRESH_PERCENT   the rows one refresh segment updates (1)

Source: ``../shared/data/debian_packages.parquet`` (63,666 Debian packages). Each row is embedded as
the demo does, "package: short_description" (embedded columns ``package``, ``short_description``,
separator ": ", all-MiniLM-L6-v2), and the full-text index holds the same columns
(``TextConfig(("package", "short_description"), ("package", "short_description"), ": ")``). Every
index is built through ``IndexStore`` (a segment, then a snapshot, default HNSW parameters) and
searched through ``IndexReader`` or ``Searcher``. Medians throughout; the machine is shared, so
compare the ratios within one run rather than the figures across runs.

Tables:

1. Quality. A known-item task over the sampled packages: the query is the package's name typed
   as it is (``python3-h5py``, ``libssl3``), the right answer is that package's row (package names
   are unique in the source: the benchmark checks, and would count any row of that name right if
   not). A paraphrase task: the query is the first sentence (5 words or more) of the package's long
   description, which says what the summary says in other words; the right answer is that package.
   Several packages share a long description (``0ad``, ``0ad-data``): the last column counts any
   row whose description starts with the same sentence as right, the others only the package asked
   for. success@1, success@10 and MRR@10 of ``search_rows`` (vector), ``search_text_rows`` (text)
   and ``search_hybrid_rows`` (hybrid: reciprocal rank fusion, k=60, of each pass's top
   ``HYBRID_DEPTH``), the query embedded once per query. The goal: hybrid success@10 on the
   paraphrase task within 0.02 of vector.
2. Weights. ``search_hybrid_rows(..., weights={"vector": 1, "text": w})`` for a few ``w`` on both
   tasks (only the ratio of the two weights matters to the fusion), to choose the default from
   data; the engine's default is equal weights (w = 1).
3. Latency at ``BENCH_HYBRID_LATENCY_ROWS`` rows: all 63,666 real packages plus copies of random
   real rows (package name with a ``-N`` suffix, so rows differ) to reach it. Vectors: the sampled
   rows keep their embeddings; every other row gets a random sampled row's embedding plus gaussian
   noise (sigma 0.02 per dimension, cosine about 0.93 to it), renormalized: graph search cost depends
   on the graph's size and the vectors' spread, not on what they mean, and embedding 100,000 texts
   here would take five minutes. End to end: ``Searcher.search(dataset, query, k=10, mode=m)`` with
   the query text embedded on each call, as users call it, over name and sentence queries of
   sampled rows (the modes in a random order per query, after a warm-up); p50, p99 and hybrid/vector at
   p50. Then the passes alone with a precomputed vector (``search_rows`` at k=10 and at the hybrid's
   depth, ``search_text_rows``, ``search_hybrid_rows``) and the query's embedding alone, so the
   cost of the second pass and of the fusion shows without the model.
4. Build cost and size at those rows: the snapshot's vector files (``index.usearch`` +
   ``rows.parquet``) against its ``text/`` files, from the manifest's entry; ``take_snapshot`` of
   the whole log into one directory with a text config and into another without (once each: a
   100,000-node graph takes about a minute here, and its time varies by seconds); the text index
   alone (``unit_texts`` + ``write_text_index`` into a new directory, median of three builds).
5. A refresh of ``BENCH_HYBRID_REFRESH_PERCENT`` % of the rows (new short descriptions, vectors
   moved a little), appended as one segment after the snapshot: a serving reader's ``refresh`` plus
   its first text query (which indexes the delta's rows in memory) against the whole text index's
   build (table 4), and the next snapshot's time in the directory with text against the one
   without (a snapshot rewrites the whole text index, the graph only changes). Three rounds of
   segment, refresh and snapshot (another 1% each), medians.

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.embedding import get_embedder
from quiver.resources.index.commitlog import KEY, OP, OP_UPSERT, SEQ, VECTOR, vector_type
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.reader import HYBRID_DEPTH, IndexReader
from quiver.resources.index.snapshot import INDEX_FILE, ROWS_FILE, TEXT_DIR
from quiver.resources.index.store import IndexStore
from quiver.resources.index.text_index import TextConfig, unit_texts, write_text_index
from quiver.resources.search import Searcher
from quiver.resources.values import md_table

SOURCE = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
MODEL = "all-MiniLM-L6-v2"
DATASET = "packages"
PK = "pkg_id"
SERVED = ("package", "section", "short_description")
TEXT = TextConfig(("package", "short_description"), ("package", "short_description"), ": ")
MODES = ("vector", "text", "hybrid")
TEXT_WEIGHTS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)  # text pass weight, vector pass weight 1
NOISE = 0.02  # per dimension, for the vectors of rows that were not embedded
WARMUP = 20
REFRESH_ROUNDS = 3  # refreshes, each followed by a snapshot in both directories
TEXT_BUILDS = 3  # builds of the whole text index alone
_GOLDEN, _U64 = 0x9E3779B97F4A7C15, (1 << 64) - 1


def main() -> None:
    rows = int(os.environ.get("BENCH_HYBRID_ROWS", "10000"))
    queries = int(os.environ.get("BENCH_HYBRID_QUERIES", "1000"))
    latency_rows = int(os.environ.get("BENCH_HYBRID_LATENCY_ROWS", "100000"))
    latency_queries = int(os.environ.get("BENCH_HYBRID_LATENCY_QUERIES", "300"))
    refresh_percent = float(os.environ.get("BENCH_HYBRID_REFRESH_PERCENT", "1"))
    started = time.perf_counter()
    source = pq.read_table(SOURCE, columns=[PK, *SERVED, "long_description"])
    work = Path(tempfile.mkdtemp(prefix="quiver-bench-hybrid-"))
    try:
        sample = np.sort(
            np.random.default_rng(7).choice(source.num_rows, size=min(rows, source.num_rows), replace=False)
        )
        sampled = source.take(sample)
        texts = [f"{n}: {s}" for n, s in zip(sampled["package"].to_pylist(), sampled["short_description"].to_pylist())]
        step(f"embedding {len(texts):,} packages")
        embedder = get_embedder(MODEL)
        clock = time.perf_counter()
        vectors = embedder.embed(texts)
        embed_seconds = time.perf_counter() - clock
        quality_out = quality(work / "quality", sampled, vectors, queries)
        latency_out = at_scale(work, source, sample, vectors, latency_rows, latency_queries, refresh_percent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nquiver hybrid search: {MODEL}, default HNSW {HnswParams()}, RRF k=60, depth {HYBRID_DEPTH}; "
        f"{len(texts):,} packages embedded in {embed_seconds:.0f} s; whole run {time.perf_counter() - started:.0f} s\n"
    )
    print(quality_out)
    print(latency_out)


def step(message: str) -> None:
    print(f"-- {message} ...", file=sys.stderr, flush=True)


def key_of(pk: int) -> int:
    """A stable u64 key per primary key, spread over the whole u64 range (as the tests' keys)."""
    return (pk * _GOLDEN + 0x632BE59BD9B4E019) & _U64


def changes(first: int, table: pa.Table, vectors: np.ndarray) -> pa.Table:
    """Upserts of ``table``'s rows (primary key and served columns) in the segment format."""
    n = table.num_rows
    keys = np.array([key_of(pk) for pk in table[PK].to_pylist()], dtype=np.uint64)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    columns = {
        SEQ: pa.array(np.arange(first, first + n, dtype=np.int64)),
        OP: pa.array([OP_UPSERT] * n, pa.string()),
        KEY: pa.array(keys, pa.uint64()),
        PK: table[PK],
        VECTOR: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]).cast(vector_type(vectors.shape[1])),
    }
    columns |= {name: table[name] for name in SERVED}
    return pa.table(columns)


def new_store(root: Path, dim: int, text: TextConfig | None) -> IndexStore:
    store = IndexStore(root, DATASET, IndexIdentity(dim, "cosine", "f32", MODEL), HnswParams(), PK, text=text)
    store.open()
    return store


def first_sentence(text: str | None) -> str:
    """The long description's first sentence (Debian's: lines, ``.`` lines between paragraphs)."""
    words = " ".join((text or "").split())
    return words.split(". ")[0][:300]


# -- 1 and 2: quality ------------------------------------------------------------------------------
def quality(root: Path, sampled: pa.Table, vectors: np.ndarray, queries: int) -> str:
    step(f"building the quality index ({sampled.num_rows:,} rows, text and vectors)")
    store = new_store(root, vectors.shape[1], TEXT)
    store.append_segment(changes(1, sampled, vectors), 1, sampled.num_rows)
    store.take_snapshot()
    reader = IndexReader(root)

    ids = sampled[PK].to_pylist()
    names = sampled["package"].to_pylist()
    sentences = [first_sentence(d) for d in sampled["long_description"].to_pylist()]
    by_name: dict[str, set[int]] = {}
    by_sentence: dict[str, set[int]] = {}
    for pk, name, sentence in zip(ids, names, sentences):
        by_name.setdefault(name, set()).add(pk)
        by_sentence.setdefault(sentence, set()).add(pk)
    shared_names = sum(1 for owners in by_name.values() if len(owners) > 1)
    described = np.array([i for i, s in enumerate(sentences) if len(s.split()) >= 5])
    asked = np.random.default_rng(11).choice(described, size=min(queries, len(described)), replace=False)

    tasks = {
        # query text, the right answers (strict), the right answers (lenient: any row with that text)
        "name": [(names[i], by_name[names[i]], by_name[names[i]]) for i in asked],
        "paraphrase": [(sentences[i], {ids[i]}, by_sentence[sentences[i]]) for i in asked],
    }
    shared_sentences = sum(1 for i in asked if len(by_sentence[sentences[i]]) > 1)
    embedder = get_embedder(MODEL)
    ranks: dict[tuple[str, str], list] = {}  # (task, run) -> (strict rank, lenient rank) per query
    for task, cases in tasks.items():
        step(f"{task} task: {len(cases):,} queries x {len(MODES) + len(TEXT_WEIGHTS) - 1} searches")
        query_vectors = embedder.embed([text for text, _, _ in cases])
        for (text, right, lenient), vector in zip(cases, query_vectors):
            found = {
                "vector": reader.search_rows(vector, 10, columns=[]),
                "text": reader.search_text_rows(text, 10, columns=[]),
                "hybrid": reader.search_hybrid_rows(vector, text, 10, columns=[]),
            }
            for w in TEXT_WEIGHTS:
                found[f"w{w}"] = (
                    found["hybrid"]
                    if w == 1.0
                    else reader.search_hybrid_rows(vector, text, 10, columns=[], weights={"vector": 1.0, "text": w})
                )
            for run, table in found.items():
                got = table[PK].to_pylist()
                ranks.setdefault((task, run), []).append((rank_of(got, right), rank_of(got, lenient)))

    out = [f"## 1. Quality: {sampled.num_rows:,} packages, {len(asked):,} queries per task\n"]
    rows = []
    for task in tasks:
        for mode in MODES:
            strict, lenient = zip(*ranks[(task, mode)])
            rows.append([task, mode, *metrics(strict), metrics(lenient)[1]])
    out.append(
        md_table(["task", "mode", "success@1", "success@10", "MRR@10", "success@10, any row with that text"], rows)
    )
    gap = float(metrics([r for r, _ in ranks[("paraphrase", "hybrid")]])[1]) - float(
        metrics([r for r, _ in ranks[("paraphrase", "vector")]])[1]
    )
    out.append(
        f"\nPackage names in the index: {len(by_name):,} distinct of {len(ids):,} rows "
        f"({shared_names} shared by several rows). Paraphrase queries whose sentence starts another "
        f"indexed package's description too: {shared_sentences} of {len(asked)}. Paraphrase, hybrid minus "
        f"vector success@10: {gap:+.3f} (goal: >= -0.02).\n"
    )
    out.append("## 2. Hybrid weights: vector 1, text w (only the ratio matters)\n")
    rows = []
    for w in TEXT_WEIGHTS:
        cells = []
        for task in tasks:
            cells += metrics([r for r, _ in ranks[(task, f"w{w}")]])
        rows.append([f"{w:g}" + (" (default)" if w == 1.0 else ""), *cells])
    rows.append(
        [
            "(vector alone)",
            *metrics([r for r, _ in ranks[("name", "vector")]]),
            *metrics([r for r, _ in ranks[("paraphrase", "vector")]]),
        ]
    )
    header = [
        "text weight",
        "name s@1",
        "name s@10",
        "name MRR@10",
        "paraphrase s@1",
        "paraphrase s@10",
        "paraphrase MRR@10",
    ]
    out.append(md_table(header, rows) + "\n")
    return "\n".join(out)


def rank_of(found: list[int], right: set[int]) -> int | None:
    """The 1-based place of the first right answer, None when none is in ``found``."""
    return next((place for place, pk in enumerate(found, start=1) if pk in right), None)


def metrics(ranks) -> list[str]:
    """success@1, success@10, MRR@10, as text with three decimals."""
    at1 = np.mean([r == 1 for r in ranks])
    at10 = np.mean([r is not None and r <= 10 for r in ranks])
    mrr = np.mean([1.0 / r if r is not None and r <= 10 else 0.0 for r in ranks])
    return [f"{at1:.3f}", f"{at10:.3f}", f"{mrr:.3f}"]


# -- 3, 4 and 5: at scale --------------------------------------------------------------------------
def at_scale(
    work: Path,
    source: pa.Table,
    sample: np.ndarray,
    sample_vectors: np.ndarray,
    size: int,
    queries: int,
    refresh_percent: float,
) -> str:
    rng = np.random.default_rng(13)
    table, vectors = scaled_rows(rng, source, sample, sample_vectors, size)
    dim = vectors.shape[1]
    home, bare = work / "home", work / "bare"
    with_text, without_text = new_store(home / DATASET, dim, TEXT), new_store(bare / DATASET, dim, None)
    step(f"writing the {table.num_rows:,}-row segment into two directories")
    segment = changes(1, table, vectors)
    for store in (with_text, without_text):
        store.append_segment(segment, 1, table.num_rows)
    del segment
    build = {}
    for label, store in (("without text", without_text), ("with text", with_text)):
        step(f"first snapshot, {label} (the whole graph)")
        clock = time.perf_counter()
        result = store.take_snapshot()
        build[label] = (time.perf_counter() - clock, result.entry)
    step(f"the text index alone, {TEXT_BUILDS} times")
    snapshot_rows = pq.read_table(home / DATASET / build["with text"][1].dir / ROWS_FILE)
    builds = []
    for n in range(TEXT_BUILDS):
        clock = time.perf_counter()
        alone = write_text_index(
            work / f"text-alone-{n}", snapshot_rows[KEY].to_numpy(), unit_texts(snapshot_rows, TEXT), TEXT.analyzer
        )
        builds.append(time.perf_counter() - clock)
        assert alone.documents == table.num_rows, (alone.documents, table.num_rows)
    text_alone = statistics.median(builds)
    del alone, snapshot_rows

    latency = time_queries(home, source, sample, queries)
    refresh = time_refresh(rng, home / DATASET, with_text, without_text, table, vectors, refresh_percent, text_alone)

    out = [latency, f"## 4. Build cost and size at {table.num_rows:,} rows\n"]
    files = build["with text"][1].files
    vector_bytes = sum(files[name].bytes for name in (INDEX_FILE, ROWS_FILE))
    text_files = {name: entry.bytes for name, entry in files.items() if name.startswith(f"{TEXT_DIR}/")}
    text_bytes = sum(text_files.values())
    rows = [
        ["vector files (index.usearch + rows.parquet)", mib(vector_bytes), ""],
        [f"text/ ({len(text_files)} files)", mib(text_bytes), f"{text_bytes / vector_bytes:.2f}x the vector files"],
        ["  of which rows.parquet alone", mib(files[ROWS_FILE].bytes), ""],
    ]
    out.append(md_table(["snapshot files", "MiB", ""], rows) + "\n")
    plain, full = build["without text"][0], build["with text"][0]
    rows = [
        ["take_snapshot without text (graph, rows, checksums)", f"{plain:.1f}", ""],
        ["take_snapshot with text", f"{full:.1f}", f"{full - plain:+.1f} s ({full / plain:.2f}x)"],
        [
            f"text index alone (unit_texts + write_text_index, median of {TEXT_BUILDS})",
            f"{text_alone:.1f}",
            f"{text_alone / plain:.2f}x the snapshot without text",
        ],
    ]
    out.append(md_table(["build", "seconds", ""], rows))
    out.append(
        "\nThe graph's build varies by seconds from run to run on a shared machine: the text index alone "
        "is the cleaner figure of what text adds.\n"
    )
    out.append(refresh)
    return "\n".join(out)


def scaled_rows(
    rng: np.random.Generator, source: pa.Table, sample: np.ndarray, sample_vectors: np.ndarray, size: int
) -> tuple[pa.Table, np.ndarray]:
    """``size`` rows: the sampled ones with their embeddings, then the other real rows, then copies
    of random real rows with a ``-N`` suffix on the name; those get a sampled embedding plus noise."""
    size = max(size, len(sample))
    step(f"making {size:,} rows")
    others = np.setdiff1d(np.arange(source.num_rows), sample)
    others = rng.permutation(others)[: max(0, size - len(sample))]
    real = source.take(np.concatenate([sample, others])).select([PK, *SERVED])
    parts = [real]
    copies = size - real.num_rows
    if copies > 0:
        picked = source.take(rng.integers(source.num_rows, size=copies)).select([PK, *SERVED])
        suffix = np.arange(1, copies + 1)
        parts.append(
            pa.table(
                {
                    PK: pa.array(source.num_rows + suffix, pa.int64()),
                    "package": pa.array(
                        [f"{name}-{n}" for name, n in zip(picked["package"].to_pylist(), suffix.tolist())]
                    ),
                    "section": picked["section"],
                    "short_description": picked["short_description"],
                }
            )
        )
    table = pa.concat_tables(parts).combine_chunks()
    made = size - len(sample)
    noisy = sample_vectors[rng.integers(len(sample_vectors), size=made)] + rng.normal(
        0, NOISE, (made, sample_vectors.shape[1])
    )
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return table, np.vstack([sample_vectors, noisy.astype(np.float32)])


def time_queries(home: Path, source: pa.Table, sample: np.ndarray, count: int) -> str:
    rng = np.random.default_rng(17)
    sampled = source.take(sample)
    names = sampled["package"].to_pylist()
    sentences = [first_sentence(d) for d in sampled["long_description"].to_pylist()]
    described = [i for i, s in enumerate(sentences) if len(s.split()) >= 5]
    queries = [names[i] for i in rng.choice(len(names), count // 2, replace=False)]
    queries += [sentences[i] for i in rng.choice(described, count - count // 2, replace=False)]
    searcher = Searcher(home, [DATASET])
    step(f"latency: warm-up, then {len(queries)} queries x {len(MODES)} modes end to end")
    for query in queries[:WARMUP] + queries[-WARMUP:]:
        for mode in MODES:
            searcher.search(DATASET, query, k=10, mode=mode)
    ms: dict[str, list[float]] = {name: [] for name in MODES}
    for query in queries:
        # A new order per query: no mode always runs right after another (or after the embedding).
        for mode in [MODES[i] for i in rng.permutation(len(MODES))]:
            clock = time.perf_counter()
            searcher.search(DATASET, query, k=10, mode=mode)
            ms[mode].append((time.perf_counter() - clock) * 1000)

    step("latency: the passes alone")
    reader = searcher.reader(DATASET)
    embedder = get_embedder(MODEL)
    vectors = embedder.embed(queries)
    passes = {
        "embed the query (Embedder.embed, one text)": lambda q, v: embedder.embed([q]),
        "search_rows, k=10": lambda q, v: reader.search_rows(v, 10),
        f"search_rows, k={HYBRID_DEPTH} (the hybrid's vector pass)": lambda q, v: reader.search_rows(v, HYBRID_DEPTH),
        "search_text_rows, k=10": lambda q, v: reader.search_text_rows(q, 10),
        f"search_text_rows, k={HYBRID_DEPTH} (the hybrid's text pass)": lambda q, v: reader.search_text_rows(
            q, HYBRID_DEPTH
        ),
        "search_hybrid_rows, k=10": lambda q, v: reader.search_hybrid_rows(v, q, 10),
    }
    alone: dict[str, list[float]] = {name: [] for name in passes}
    for query, vector in list(zip(queries, vectors))[:WARMUP]:
        for run in passes.values():
            run(query, vector)
    for query, vector in zip(queries, vectors):
        for name in [list(passes)[i] for i in rng.permutation(len(passes))]:  # as above
            run = passes[name]
            clock = time.perf_counter()
            run(query, vector)
            alone[name].append((time.perf_counter() - clock) * 1000)

    title = f"## 3. Latency at {len(reader):,} rows: {len(queries)} queries ({count // 2} names, {count - count // 2} sentences), k=10, ms\n"
    out = [title]
    vector_p50 = statistics.median(ms["vector"])
    rows = [
        [f"Searcher.search, mode={mode}", *percentiles(ms[mode]), f"{statistics.median(ms[mode]) / vector_p50:.2f}x"]
        for mode in MODES
    ]
    out.append(md_table(["end to end (query embedded each call)", "p50", "p99", "p50 / vector"], rows))
    out.append(f"\nhybrid / vector at p50: {statistics.median(ms['hybrid']) / vector_p50:.2f}x (goal: <= 1.5x)\n")
    base = statistics.median(alone["search_rows, k=10"])
    rows = [[name, *percentiles(values), f"{statistics.median(values) / base:.2f}x"] for name, values in alone.items()]
    out.append(md_table(["passes alone (vector precomputed)", "p50", "p99", "p50 / search_rows k=10"], rows) + "\n")
    return "\n".join(out)


def percentiles(ms: list[float]) -> list[str]:
    return [f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}"]


def time_refresh(
    rng: np.random.Generator,
    root: Path,
    with_text: IndexStore,
    without_text: IndexStore,
    table: pa.Table,
    vectors: np.ndarray,
    percent: float,
    text_alone: float,
) -> str:
    count = max(1, round(table.num_rows * percent / 100))
    runs: dict[str, list[float]] = {}
    for round_number in range(REFRESH_ROUNDS):
        step(f"refresh {round_number + 1} of {REFRESH_ROUNDS}: {count:,} updated rows appended as one segment")
        reader = IndexReader(root)
        reader.search_text_rows(table["package"][0].as_py(), 10)  # the snapshot served, its text index opened
        chosen = np.sort(rng.choice(table.num_rows, count, replace=False))
        updated = table.take(chosen)
        replacement = table.take(rng.integers(table.num_rows, size=count))["short_description"]
        where = updated.schema.get_field_index("short_description")
        updated = updated.set_column(where, "short_description", replacement)
        moved = vectors[chosen] + rng.normal(0, NOISE, (count, vectors.shape[1]))
        moved = (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)
        first_seq = with_text.last_seq() + 1
        segment = changes(first_seq, updated, moved)
        for store in (with_text, without_text):
            store.append_segment(segment, first_seq, first_seq + count - 1)

        clock = time.perf_counter()
        reader.refresh()
        refreshed = time.perf_counter() - clock
        clock = time.perf_counter()
        hits = reader.search_text_rows(updated["package"][0].as_py(), 10)
        first = time.perf_counter() - clock
        assert reader.served_seq == first_seq + count - 1 and len(hits), reader.served_seq
        clock = time.perf_counter()
        reader.search_text_rows(updated["package"][1 % count].as_py(), 10)
        second = time.perf_counter() - clock
        for name, seconds in (("refresh", refreshed), ("first", first), ("both", refreshed + first), ("next", second)):
            runs.setdefault(name, []).append(seconds)

        stores = [("without text", without_text), ("with text", with_text)]
        for label, store in stores if round_number % 2 == 0 else stores[::-1]:  # alternate which goes first
            clock = time.perf_counter()
            store.take_snapshot()
            runs.setdefault(label, []).append(time.perf_counter() - clock)

    ms = {name: statistics.median(values) * 1000 for name, values in runs.items()}
    title = (
        f"## 5. A {percent:g}% refresh: {count:,} of {table.num_rows:,} rows updated in one segment, then a snapshot"
    )
    out = [f"{title}; median of {REFRESH_ROUNDS} rounds\n"]
    rows = [
        ["reader.refresh() (read and fold the segment)", f"{ms['refresh']:.1f}", ""],
        ["first text query after it (indexes the delta in memory)", f"{ms['first']:.1f}", ""],
        [
            "refresh + first text query",
            f"{ms['both']:.1f}",
            f"{ms['both'] / 1000 / text_alone:.3f}x the whole text index's build",
        ],
        ["the next text query", f"{ms['next']:.1f}", ""],
        [f"the whole text index of {table.num_rows:,} rows (table 4)", f"{text_alone * 1000:.0f}", ""],
    ]
    out.append(md_table(["serving reader", "ms", ""], rows) + "\n")
    plain, full = ms["without text"] / 1000, ms["with text"] / 1000
    rows = [
        ["next take_snapshot without text", f"{plain:.1f}", ""],
        [
            "next take_snapshot with text (updates text/: the changed keys only)",
            f"{full:.1f}",
            f"{full - plain:+.1f} s ({full / plain:.2f}x)",
        ],
    ]
    out.append(md_table(["snapshot after the refresh", "seconds", ""], rows) + "\n")
    return "\n".join(out)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


if __name__ == "__main__":
    main()
