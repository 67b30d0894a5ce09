"""The rows every system is measured on: primary keys, texts and unit vectors, then change rounds.

Two sources:
- ``real``: ../shared/data/debian_packages.parquet, text ``package: short_description`` embedded
  with the project's model once and cached under ``$QUIVER_HOME/bench/`` (keyed by model and row
  count). Inserted and updated rows of the change rounds take their text and vector from rows held
  back from the base, so every change is a real text with its real embedding; queries are
  embeddings of further held-back rows.
- ``synthetic``: 1,000 gaussian cluster centres plus noise, normalised, 384 dims, seeded (uniform
  random vectors are adversarial for every HNSW and make recall meaningless), with short texts.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.benchmarks.churn_workload import unit_rows

ROOT = Path(__file__).resolve().parents[3]
DEBIAN = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
DIM = 384
CENTRES = 1000
SPREAD = 0.5  # norm of a vector's offset from its (unit) cluster centre
WORDS = np.array(["data", "index", "vector", "query", "fast", "small", "tool", "library", "server", "client", "file"])


@dataclass
class Rows:
    pks: np.ndarray  # int64
    texts: list[str]
    vectors: np.ndarray  # float32, unit rows

    def __len__(self) -> int:
        return len(self.pks)

    def text_bytes(self) -> int:
        return sum(len(t.encode()) for t in self.texts)

    def to_arrow(self) -> pa.Table:
        dim = self.vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(self.vectors, dtype=np.float32).reshape(-1))
        return pa.table(
            {
                "pk": pa.array(self.pks, pa.int64()),
                "text": pa.array(self.texts, pa.string()),
                "vec": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )


@dataclass
class ChangeRound:
    inserts: Rows  # new primary keys
    updates: Rows  # live primary keys with a new text and vector
    deletes: np.ndarray  # live primary keys

    @property
    def changed(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)

    def raw_bytes(self) -> int:
        """Text plus float32 vector bytes of what changed (a delete counts its 8-byte key)."""
        upserted = [self.inserts, self.updates]
        return sum(r.text_bytes() + r.vectors.nbytes for r in upserted) + 8 * len(self.deletes)


@dataclass
class Corpus:
    label: str
    model: str  # the identity recorded in quiver's index
    base: Rows
    rounds: list[ChangeRound]
    queries: np.ndarray
    embedding: dict  # how the vectors were made: rows, seconds, cached

    def raw_bytes(self) -> int:
        return self.base.text_bytes() + self.base.vectors.nbytes

    def live_after_rounds(self) -> Rows:
        """The rows every system should hold once all change rounds are applied."""
        live = self.base
        for change in self.rounds:
            keep = ~np.isin(live.pks, np.concatenate([change.deletes, change.updates.pks]))
            texts = [t for t, kept in zip(live.texts, keep.tolist()) if kept]
            live = Rows(
                np.concatenate([live.pks[keep], change.updates.pks, change.inserts.pks]),
                texts + change.updates.texts + change.inserts.texts,
                np.concatenate([live.vectors[keep], change.updates.vectors, change.inserts.vectors]),
            )
        return live


def make_corpus(source: str, rows: int, changes: int, rounds: int, queries: int, cache: Path) -> Corpus:
    """``rows`` base rows, ``rounds`` rounds of ``changes`` inserts + updates + deletes each."""
    held_back = rounds * 2 * changes + queries
    if source == "real":
        pks, texts, vectors, embedding = _debian(rows + held_back, cache)
        model = embedding["model"]
    else:
        pks, texts, vectors = _synthetic(rows + held_back)
        model, embedding = "synthetic", {}
    base = Rows(pks[:rows], texts[:rows], vectors[:rows])
    reserve = Rows(pks[rows:], texts[rows:], vectors[rows:])
    change_rounds = _rounds(base.pks, reserve, changes, rounds, np.random.default_rng(rows))
    label = f"{DEBIAN.name} ({model})" if source == "real" else f"synthetic clustered ({CENTRES} centres)"
    return Corpus(label, model, base, change_rounds, vectors[-queries:], embedding)


def _rounds(
    base_pks: np.ndarray, reserve: Rows, changes: int, rounds: int, rng: np.random.Generator
) -> list[ChangeRound]:
    """Inserts take held-back rows whole; updates give live keys a held-back row's text and vector."""
    live = base_pks.copy()
    out, at = [], 0
    for _ in range(rounds):
        inserts = _slice(reserve, at, at + changes)
        donors = _slice(reserve, at + changes, at + 2 * changes)
        at += 2 * changes
        picked = rng.choice(len(live), 2 * changes, replace=False)
        updates = Rows(np.sort(live[picked[:changes]]), donors.texts, donors.vectors)
        deletes = np.sort(live[picked[changes:]])
        out.append(ChangeRound(inserts, updates, deletes))
        live = np.concatenate([np.setdiff1d(live, deletes), inserts.pks])
    return out


def _slice(rows: Rows, start: int, stop: int) -> Rows:
    return Rows(rows.pks[start:stop], rows.texts[start:stop], rows.vectors[start:stop])


def _debian(count: int, cache: Path) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    table = pq.read_table(DEBIAN, columns=["pkg_id", "package", "short_description"]).slice(0, count)
    if table.num_rows < count:
        raise ValueError(f"{DEBIAN} has {table.num_rows} rows; this size needs {count}: use a smaller BENCH_ROWS")
    texts = [
        f"{p}: {d}" for p, d in zip(table.column("package").to_pylist(), table.column("short_description").to_pylist())
    ]
    from quiver.resources.embedding import get_embedder

    embedder = get_embedder()
    path = cache / f"{DEBIAN.stem}-{embedder.model}-{count}.npy"
    embedding = {"model": embedder.model, "rows": count, "cached": path.exists(), "cache": str(path)}
    if path.exists():
        vectors = np.load(path)
    else:
        print(f"embedding {count:,} rows of {DEBIAN.name} once (cached at {path}) ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        vectors = embedder.embed(texts).astype(np.float32)
        embedding["seconds"] = time.perf_counter() - started
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return table.column("pkg_id").to_numpy().astype(np.int64), texts, vectors.astype(np.float32), embedding


def _synthetic(count: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CENTRES, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):  # bounds the float64 noise a batch holds
        stop = min(count, start + 100_000)
        vectors[start:stop] = unit_rows(centres, SPREAD, stop - start, rng)
    words = WORDS[rng.integers(len(WORDS), size=(count, 6))]
    texts = [f"row {i}: " + " ".join(w) for i, w in enumerate(words.tolist())]
    return np.arange(count, dtype=np.int64), texts, vectors


def exact_top_k(base: Rows, queries: np.ndarray, k: int) -> np.ndarray:
    """The primary keys of the ``k`` nearest base rows per query by cosine (all rows are unit)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        similarity = queries[start : start + 64] @ base.vectors.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        out[start : start + 64] = base.pks[top]
    return out


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth)) / (k * len(truth))
