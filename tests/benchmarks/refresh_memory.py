"""Peak RSS of the embedding step at one table size, in a process of its own (``bench_refresh_cost`` runs it).

    python tests/benchmarks/refresh_memory.py build ROWS WORKDIR    # the table, in a process of its own
    python tests/benchmarks/refresh_memory.py refresh WORKDIR       # prints one JSON line

``build`` writes ``ROWS`` synthetic rows (short sentences from a fixed vocabulary, about 80
characters, the length of Debian's short descriptions) straight into ``<ds>_rows`` with DuckDB;
``refresh``, in a fresh process, runs the engine's refresh (``embed_refresh.refresh_embeddings``: plan, chunk, embed, commit batch by batch)
with a stand-in model: the real tokenizer and chunker, vectors of the real model's dimension (384)
from a hash of each text. The stand-in keeps 1M rows within minutes on two cores; what is measured
is what the pipeline holds, which does not depend on how the vectors were computed (the model's own
memory is a constant, reported by ``bench-embedding``).

Reports the refresh process's peak RSS after its imports (the baseline) and after the refresh
(``VmHWM`` from ``/proc/self/status``; Linux).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from functools import partial
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quiver.resources.embed_refresh import refresh_embeddings
from quiver.resources.embedding.chunking import Chunker, ChunkSettings
from quiver.resources.embedding.model import resolve_model_path
from quiver.resources.warehouse.layout import TableLayout, writer_settings

DIM = 384
WORDS = ["library", "tool", "python", "data", "server", "client", "network", "file", "system", "package", "module", "driver", "kernel", "font", "theme", "audio", "video", "image", "text", "parser", "compiler", "runtime", "database", "query", "index", "graph", "plugin", "editor"]


class StandInModel:
    """The embedder interface the refresh uses: the real chunker, vectors from a hash of each text."""

    dim = DIM

    def chunker(self, settings: ChunkSettings) -> Chunker:
        return Chunker(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json", 256, settings)

    def embed(self, texts: list[str]) -> np.ndarray:
        seeds = np.array([hash(t) & 0xFFFFFFFF for t in texts], dtype=np.uint64)
        vectors = np.sin(np.outer(seeds, np.arange(1, DIM + 1, dtype=np.float64))).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def peak_mib() -> float:
    """The process's peak RSS (``VmHWM``). Not ``getrusage``'s ``ru_maxrss``: Linux carries it
    across ``exec``, so a child of a big process reports its parent's size at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


LAYOUT = TableLayout(dataset="mem", primary_key="id", text_columns=("title", "body"), separator=": ")


def build(rows: int, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    database = work / "memory.duckdb"
    database.unlink(missing_ok=True)
    words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    with duckdb.connect(str(database)) as conn:  # about 80 characters a row, every row different
        conn.execute(
            f"""CREATE TABLE mem_rows AS
                SELECT i AS id, 'pkg-' || i AS title,
                       list_aggregate(list_transform(range(11), j -> {words}[1 + ((i * 7 + j * 13 + i // (j + 1)) % {len(WORDS)})]),
                                      'string_agg', ' ') AS body,
                       (i % 50)::INTEGER AS section
                FROM range({rows}) t(i)"""
        )


@contextlib.contextmanager
def writer_connection(database: Path):
    """A connection to ``database`` as the Dagster layer's writer connections have it, closed after."""
    conn = duckdb.connect(str(database))
    writer_settings(conn)
    try:
        yield conn
    finally:
        conn.close()


def refresh(work: Path) -> None:
    database = work / "memory.duckdb"
    baseline = peak_mib()

    connect = partial(writer_connection, database)

    started = time.perf_counter()
    result = refresh_embeddings(connect, LAYOUT, "stand-in", StandInModel, ChunkSettings())
    seconds = time.perf_counter() - started
    print(json.dumps({
        "rows": result.plan.rows_read,
        "embedded": result.plan.to_embed.num_rows,
        "batches": result.batches,
        "baseline_peak_mib": round(baseline, 1),
        "peak_mib": round(peak_mib(), 1),
        "seconds": round(seconds, 1),
    }))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        refresh(Path(sys.argv[2]))
