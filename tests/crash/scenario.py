"""The crash tests' world: a seeded evolving source, the real writers, and independent read-backs.

The writers are the code the Dagster assets run, minus Dagster: ``warehouse.load_source``,
``plan_changes``, ``commit_changes`` (rows and embeddings assets), ``log_sync.sync_log`` (index
asset) and ``IndexStore.take_snapshot`` (snapshot asset). Text is embedded by a deterministic hash
embedder: the model is not under test, and it keeps each subprocess under a second.

``python -m tests.crash.writer refresh|snapshot <workdir>`` runs one writer in a fresh process;
the tests set ``QUIVER_KILL_AT`` to make it SIGKILL itself at a named point.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quiver.resources import warehouse
from quiver.resources.embed_refresh import RefreshResult, refresh_embeddings
from quiver.resources.embedding import resolve_model_path
from quiver.resources.embedding.chunking import Chunker, ChunkSettings
from quiver.resources.index import HnswParams, IndexIdentity, IndexStore
from quiver.resources.index.remote import RemoteIndexStore
from quiver.resources.index.text_index import TextConfig
from quiver.resources.log_sync import sync_log
from tests.crash.hash_embedder import DIM, MODEL, embed
from tests.invariants import State, check_derived_and_exact, table_state

REPO = Path(__file__).resolve().parents[2]
DATASET = "crashy"
PK = "id"
LAYOUT = warehouse.TableLayout(DATASET, PK, ("text",), served_columns=("name",))
PARAMS = HnswParams(m=16, ef_construction=64, ef_search=64)
REBUILD_TOMBSTONE_PERCENT = 20.0
BATCH_ROWS = 16  # small, so a refresh of the scenario's changes is several batches


# -- the world on disk -------------------------------------------------------------------------
def source_path(work: Path) -> Path:
    return work / "source.parquet"


def database_path(work: Path) -> Path:
    return work / "quiver.duckdb"


def index_root(work: Path) -> Path:
    return work / "index" / DATASET


def store_for(work: Path) -> IndexStore:
    identity = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model=MODEL)
    # full text over the served name (not the embedded text): a snapshot writes a text index too
    settings = {
        "dataset": DATASET, "identity": identity, "params": PARAMS, "primary_key": PK,
        "keep_previous": not (work / NO_FALLBACK_MARKER).exists(), "text": TextConfig(("name",), ("text",)),
    }
    if (work / REMOTE_MARKER).exists():  # the index published to this bucket URL, index_root its local copy
        return RemoteIndexStore((work / REMOTE_MARKER).read_text().strip(), index_root(work), **settings)
    return IndexStore(index_root(work), **settings)


# Holds an s3:// URL in a world whose index lives on a bucket (the writers' index_root is its local copy).
REMOTE_MARKER = "remote-url"


# Present in a world prepared with keep_previous=False: every writer process's store keeps no
# fallback snapshot (the spec's snapshots.keep_previous: false).
NO_FALLBACK_MARKER = "keep_previous-false"


class Source:
    """A seeded source table that changes a little each round: inserts, edits, renames, deletes."""

    def __init__(self, seed: int, rows: int = 120):
        self.rng = np.random.default_rng(seed)
        self.rows: dict[int, tuple[str, str]] = {}
        self.next_pk = 0
        self.round = 0
        self.change(inserts=rows)

    @staticmethod
    def load(work: Path) -> Source:
        return pickle.loads((work / "source.pickle").read_bytes())

    def change(self, inserts: int = 0, edits: int = 0, renames: int = 0, deletes: int = 0) -> None:
        self.round += 1
        live = sorted(self.rows)
        picked = [live[i] for i in self.rng.permutation(len(live))[: edits + renames + deletes]]
        for pk in picked[:edits]:
            self.rows[pk] = (self.rows[pk][0], self.text(pk, f"edited in round {self.round}"))
        for pk in picked[edits : edits + renames]:
            self.rows[pk] = (f"name {pk} r{self.round}", self.rows[pk][1])
        for pk in picked[edits + renames :]:
            del self.rows[pk]
        for _ in range(inserts):
            self.rows[self.next_pk] = (f"name {self.next_pk}", self.text(self.next_pk, f"born in round {self.round}"))
            self.next_pk += 1

    def text(self, pk: int, event: str) -> str:
        """Short, or long enough for several chunks: an edit can grow or shrink a row's chunks."""
        words = int(self.rng.choice([0, 0, 20, 60]))
        return f"text of {pk}, {event}." + "".join(f" Word {pk}-{i} of the row." for i in range(words))

    def step(self) -> None:
        """One round of mixed changes (sizes drawn from the seed)."""
        n = len(self.rows)
        self.change(
            inserts=int(self.rng.integers(5, 25)),
            edits=int(self.rng.integers(1, max(2, n // 10))),
            renames=int(self.rng.integers(1, max(2, n // 20))),
            deletes=int(self.rng.integers(1, max(2, n // 10))),
        )

    def write(self, work: Path) -> None:
        """The source Parquet, and this object beside it (``load`` picks the history up again)."""
        (work / "source.pickle").write_bytes(pickle.dumps(self))
        pks = sorted(self.rows)
        table = pa.table(
            {
                PK: pa.array(pks, pa.int64()),
                "name": [self.rows[pk][0] for pk in pks],
                "text": [self.rows[pk][1] for pk in pks],
            }
        )
        pq.write_table(table, source_path(work))


# -- the writers ---------------------------------------------------------------------------------
def chunker() -> Chunker:
    """The real tokenizer with a small window (40 tokens), so that long rows span several chunks."""
    return Chunker(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json", 40, ChunkSettings(size=16, overlap=4))


class HashModel:
    """The embedder interface the refresh loop uses, over the hash embedder and the small chunker."""

    dim = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed(texts)

    def chunker(self, settings: ChunkSettings) -> Chunker:
        return chunker()


def refresh(work: Path) -> RefreshResult:
    """rows -> embeddings -> index, as the three assets do it: the engine's refresh loop, batches of
    ``BATCH_ROWS`` rows each committed on their own (the connection closed while embedding)."""
    with writer_connection(work) as conn:
        warehouse.load_source(conn, LAYOUT, [str(source_path(work))])
    result = refresh_embeddings(
        lambda: writer_connection(work), LAYOUT, MODEL, HashModel, ChunkSettings(), batch_rows=BATCH_ROWS
    )

    def read_changes(after: int):
        with writer_connection(work) as conn:
            return warehouse.changes_after(conn, LAYOUT, after)

    sync_log(store_for(work), read_changes)
    return result


@contextmanager
def writer_connection(work: Path):
    """A writer's connection as the assets open it (``open_connection``: small commits stay in the WAL)."""
    with duckdb.connect(str(database_path(work))) as conn:
        warehouse.writer_settings(conn)
        yield conn


def take_snapshot(work: Path) -> None:
    store_for(work).take_snapshot(REBUILD_TOMBSTONE_PERCENT)


def run_writer(command: str, work: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """Run one writer in a fresh Python process (optionally killed at a named point)."""
    return subprocess.run(
        writer_command(command, work),
        env=writer_env(kill_at),
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def prepare(work, seed: int, keep_previous: bool = True) -> Source:
    """Two snapshots (a current and a previous, unless ``keep_previous`` is false) and one segment
    after the current one."""
    if not keep_previous:
        (work / NO_FALLBACK_MARKER).touch()
    source = Source(seed)
    for round_ in range(3):
        if round_:
            source.step()
        source.write(work)
        refresh(work)
        if round_ < 2:
            take_snapshot(work)
    return source


def writer_command(command: str, work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.crash.writer", command, str(work), *args]


def writer_env(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QUIVER_KILL_AT"}
    if kill_at:
        env["QUIVER_KILL_AT"] = kill_at
    return env


# -- read-backs (tests/invariants.py) ---------------------------------------------------------------
def duckdb_state(work: Path) -> State:
    """What DuckDB committed: key -> Entry(pk, {"name": ...}, vector)."""
    return table_state(database_path(work), DATASET)


def committed_seq(work: Path) -> int:
    with duckdb.connect(str(database_path(work)), read_only=True) as conn:
        return warehouse.last_seq(conn, LAYOUT)


def assert_index_equals_source(work: Path, source: Source) -> State:
    """No committed change lost: DuckDB holds the source (I1), and the index equals DuckDB (I2)."""
    committed = duckdb_state(work)
    assert {e.pk: e.columns["name"] for e in committed.values()} == {pk: row[0] for pk, row in source.rows.items()}
    texts = {pk: row[1] for pk, row in source.rows.items()}
    for entry in committed.values():  # each chunk's vector is its own slice of the row's text
        chunk = texts[entry.pk][entry.columns["_chunk_start"] : entry.columns["_chunk_end"]]
        np.testing.assert_array_equal(entry.vector, embed([chunk])[0])
    chunks = {pk: [c.number for c in cs] for pk, cs in zip(texts, chunker().split_many(texts.values()))}
    held: dict[int, list[int]] = {}
    for entry in committed.values():
        held.setdefault(entry.pk, []).append(entry.columns["_chunk"])
    assert {pk: sorted(numbers) for pk, numbers in held.items()} == chunks, "every chunk of each row, no stale one"
    check_derived_and_exact(index_root(work), database_path(work), DATASET)
    return committed
