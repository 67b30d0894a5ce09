"""The crash tests' world: a seeded evolving source, the real writers, and independent read-backs.

The writers are the code the Dagster assets run, minus Dagster: ``warehouse.load_source``,
``plan_changes``, ``commit_changes`` (rows and embeddings assets), ``log_sync.sync_log`` (index
asset) and ``IndexStore.take_snapshot`` (snapshot asset). Text is embedded by a deterministic hash
embedder: the model is not under test, and it keeps each subprocess under a second.

``python -m tests.crash.writer refresh|snapshot <workdir>`` runs one writer in a fresh process;
the tests set ``QUIVER_KILL_AT`` to make it SIGKILL itself at a named point.
"""

from __future__ import annotations

import hashlib
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

from resources import warehouse
from resources.index import HnswParams, IndexIdentity, IndexReader, IndexStore, commitlog, snapshot
from resources.index.commitlog import KEY, VECTOR
from resources.index.files import TEMP_MARKER
from resources.index.manifest import read_manifest
from resources.log_sync import sync_log
from tests.crash.hash_embedder import DIM, MODEL, embed

REPO = Path(__file__).resolve().parents[2]
DATASET = "crashy"
PK = "id"
LAYOUT = warehouse.TableLayout(DATASET, PK, ("text",), served_columns=("name",))
PARAMS = HnswParams(m=16, ef_construction=64, ef_search=64)
REBUILD_TOMBSTONE_PERCENT = 20.0


# -- the world on disk -------------------------------------------------------------------------
def source_path(work: Path) -> Path:
    return work / "source.parquet"


def database_path(work: Path) -> Path:
    return work / "quiver.duckdb"


def index_root(work: Path) -> Path:
    return work / "index" / DATASET


def store_for(work: Path) -> IndexStore:
    identity = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model=MODEL)
    return IndexStore(index_root(work), DATASET, identity, PARAMS, PK)


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
            self.rows[pk] = (self.rows[pk][0], f"text of {pk}, edited in round {self.round}")
        for pk in picked[edits : edits + renames]:
            self.rows[pk] = (f"name {pk} r{self.round}", self.rows[pk][1])
        for pk in picked[edits + renames :]:
            del self.rows[pk]
        for _ in range(inserts):
            self.rows[self.next_pk] = (f"name {self.next_pk}", f"text of {self.next_pk}, born in round {self.round}")
            self.next_pk += 1

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
def refresh(work: Path) -> None:
    """rows -> embeddings -> index, as the three assets do it (the connection closed while embedding)."""
    with writer_connection(work) as conn:
        warehouse.load_source(conn, LAYOUT, [str(source_path(work))])
        plan = warehouse.plan_changes(conn, LAYOUT, MODEL)
    vectors = embed(plan.to_embed.column(warehouse.TEXT).to_pylist())
    with writer_connection(work) as conn:
        warehouse.commit_changes(conn, LAYOUT, plan, vectors)

    def read_changes(after: int):
        with writer_connection(work) as conn:
            return warehouse.changes_after(conn, LAYOUT, after)

    sync_log(store_for(work), read_changes)


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


def prepare(work, seed: int) -> Source:
    """Two snapshots (a current and a previous) and one segment after the current one."""
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


# -- independent read-backs ----------------------------------------------------------------------
def duckdb_state(work: Path) -> dict[int, tuple[int, str, np.ndarray]]:
    """What DuckDB committed: key -> (pk, name, vector)."""
    with duckdb.connect(str(database_path(work)), read_only=True) as conn:
        table = warehouse.embedded_state(conn, LAYOUT)
    vectors = commitlog.vectors_of(table, DIM) if table.num_rows else np.empty((0, DIM))
    return {
        key: (pk, name, vector)
        for key, pk, name, vector in zip(
            table.column(KEY).to_pylist(), table.column(PK).to_pylist(), table.column("name").to_pylist(), vectors
        )
    }


def committed_seq(work: Path) -> int:
    with duckdb.connect(str(database_path(work)), read_only=True) as conn:
        return warehouse.last_seq(conn, LAYOUT)


def index_state(root: Path) -> dict[int, tuple[int, str, np.ndarray]]:
    """What the index directory serves, read without the reader: snapshot + folded segments after it."""
    from usearch.index import Index

    manifest = read_manifest(root)
    state: dict[int, tuple[int, str, np.ndarray]] = {}
    if manifest.snapshot is not None:
        snapshot.verify_snapshot(root, manifest.snapshot)
        directory = root / manifest.snapshot.dir
        rows = pq.read_table(directory / snapshot.ROWS_FILE)
        keys = rows.column(KEY).to_numpy()
        index = Index.restore(str(directory / snapshot.INDEX_FILE), view=False)
        vectors = np.vstack(index.get(keys, dtype=np.float32)) if len(keys) else np.empty((0, DIM))
        for key, pk, name, vector in zip(
            keys.tolist(), rows.column(PK).to_pylist(), rows.column("name").to_pylist(), vectors
        ):
            state[key] = (pk, name, vector)
    records, chain = commitlog.read_chain(commitlog.list_segments(root), manifest.snapshot_seq, manifest.identity)
    assert chain.problem is None, chain.problem
    folded = commitlog.fold(records)
    for rec in folded.to_pylist() if folded is not None else []:
        if rec["_op"] == commitlog.OP_DELETE:
            state.pop(rec[KEY], None)
        else:
            state[rec[KEY]] = (rec[PK], rec["name"], np.asarray(rec[VECTOR], dtype=np.float32))
    return state


def assert_same_state(got: dict, want: dict, what: str) -> None:
    """Same key set, primary keys, served columns and vectors (f32 stored as f32: exact)."""
    assert set(got) == set(want), (
        f"{what}: missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}"
    )
    for key, (pk, name, vector) in want.items():
        assert got[key][:2] == (pk, name), f"{what}: key {key}: {got[key][:2]} != {(pk, name)}"
        np.testing.assert_array_equal(got[key][2], vector, err_msg=f"{what}: key {key}")


def files_with_checksums(root: Path) -> dict[str, bytes]:
    """Every published file under ``root`` (not the lock) -> its bytes' digest."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != ".writer.lock":
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).digest()
    return out


def temp_leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if TEMP_MARKER in path.name]


def assert_reader_serves(reader: IndexReader, state: dict) -> None:
    """The reader's key set, primary keys, served columns and vectors are ``state``'s."""
    assert len(reader) == len(state)
    everything = reader.search(np.ones(DIM, np.float32), k=len(state) + 5)
    assert set(everything.keys.tolist()) == set(state)
    keys = np.array(sorted(state), dtype=np.uint64)
    rows = reader.rows(keys, ["name"])
    assert list(zip(rows.column(PK).to_pylist(), rows.column("name").to_pylist())) == [state[int(k)][:2] for k in keys]
    for key, (_pk, _name, vector) in state.items():
        hits = reader.search(vector, k=3, exact=True)  # the data, not the graph's recall, is under test
        assert key in hits.keys.tolist() and float(hits.distances.min()) < 1e-5, (
            f"key {key} is not found by its own vector"
        )


def assert_index_equals_source(work: Path, source: Source) -> dict:
    """No committed change lost: DuckDB holds the source, and the index equals DuckDB (I2)."""
    committed = duckdb_state(work)
    assert {pk: name for pk, name, _ in committed.values()} == {pk: row[0] for pk, row in source.rows.items()}
    texts = {pk: row[1] for pk, row in source.rows.items()}
    for pk, _name, vector in committed.values():
        np.testing.assert_array_equal(vector, embed([texts[pk]])[0])
    assert_same_state(index_state(index_root(work)), committed, "index vs DuckDB")
    return committed
