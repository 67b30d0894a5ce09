"""The engine's refresh loop (``embed_refresh.refresh_embeddings``): a plan of keys, batches that
are commits of their own, what a rerun finds already embedded, and DuckDB's memory limit."""

from __future__ import annotations

import contextlib
import hashlib

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.resources import warehouse
from quiver.resources.embed_refresh import refresh_embeddings
from quiver.resources.embedding.chunking import Chunker, ChunkSettings
from quiver.resources.embedding.model import resolve_model_path
from quiver.resources.warehouse import writer_memory

LAYOUT = warehouse.TableLayout(dataset="t", primary_key="id", text_columns=("text",), served_columns=("text", "tag"))
MODEL = "hash-model"


class HashModel:
    """Vectors from a hash of each text; the real tokenizer's chunker (short texts: one chunk)."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.embedded: list[str] = []

    def chunker(self, settings: ChunkSettings) -> Chunker:
        return Chunker(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json", 256, settings)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds]).astype(np.float32)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "w.duckdb"

    @contextlib.contextmanager
    def connect():
        conn = duckdb.connect(str(path))
        try:
            yield conn
        finally:
            conn.close()

    connect.tmp_path = tmp_path
    return connect


def load(connect, rows: dict[int, tuple[str, str]]) -> None:
    path = connect.tmp_path / "source.parquet"
    pq.write_table(
        pa.table({"id": list(rows), "text": [r[0] for r in rows.values()], "tag": [r[1] for r in rows.values()]}), path
    )
    with connect() as conn:
        warehouse.load_source(conn, LAYOUT, [str(path)])


def refresh(connect, model, **options):
    return refresh_embeddings(connect, LAYOUT, MODEL, lambda: model, ChunkSettings(), **options)


def embedded(connect) -> dict[int, tuple[str, str]]:
    with connect() as conn:
        return {i: (h, t) for i, h, t in conn.execute("SELECT id, _content_hash, tag FROM t_embeddings").fetchall()}


def test_each_batch_is_a_commit_of_its_own_and_the_plan_holds_keys_only(db):
    load(db, {i: (f"text number {i}", "a") for i in range(10)})
    plans, progress = [], []
    result = refresh(db, HashModel(), batch_rows=3, planned=plans.append, progress=lambda d, t: progress.append((d, t)))
    assert plans == [result.plan]
    assert result.plan.to_embed.column_names == ["id", warehouse.ROWID], "keys and rowids, no text"
    assert result.batches == 4 and progress == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert result.committed.first_seq == 1 and result.committed.last_seq == 10
    assert len(embedded(db)) == 10
    with db() as conn:  # one upsert per row, seqs in four runs of at most three
        assert conn.execute("SELECT count(*), count(DISTINCT _seq) FROM t_changes").fetchone() == (10, 10)


def test_a_rerun_after_a_stop_between_batches_embeds_only_the_rest_and_says_so(db):
    load(db, {i: (f"text number {i}", "a") for i in range(10)})

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 6:
            raise Stop

    with pytest.raises(Stop):
        refresh(db, HashModel(), batch_rows=3, progress=stop_after_two)
    assert len(embedded(db)) == 6

    model, lines = HashModel(), []
    refresh(db, model, batch_rows=3, planned=lambda plan: lines.append(warehouse.describe_plan(plan, 3)))
    assert len(model.embedded) == 4 and len(embedded(db)) == 10
    assert lines == ["6 of 10 rows already embedded; embedding 4 rows (4 new, 0 changed) in 2 batches"]
    again = refresh(db, HashModel(), planned=lambda plan: lines.append(warehouse.describe_plan(plan, 3)))
    assert again.committed is None and lines[-1] == "nothing changed: 10 of 10 rows already embedded"
    assert warehouse.describe_refresh(again.plan, None).startswith("nothing changed: 10 rows read")


def test_deletes_and_served_column_changes_are_batched_too(db):
    load(db, {i: (f"text number {i}", "a") for i in range(10)})
    refresh(db, HashModel())
    load(db, {i: (f"text number {i}", "b" if i < 5 else "a") for i in range(8)} | {20: ("a new row", "a")})
    model = HashModel()
    result = refresh(db, model, batch_rows=2)
    assert model.embedded == ["a new row"], "served columns alone changed: the vectors are kept"
    assert (result.plan.served_only.num_rows, result.plan.deleted.num_rows, result.batches) == (5, 2, 3)
    state = embedded(db)
    assert sorted(state) == [*range(8), 20] and {state[i][1] for i in range(5)} == {"b"}


def test_a_text_changed_after_the_plan_is_embedded_as_read_and_hashed_as_embedded(db):
    load(db, {1: ("first text", "a"), 2: ("second text", "a")})

    def change_row_2(plan):  # another writer between the plan and the batch's read
        with db() as conn:
            conn.execute("UPDATE t_rows SET text = 'second text, edited' WHERE id = 2")

    model = HashModel()
    refresh(db, model, planned=change_row_2)
    assert sorted(model.embedded) == ["first text", "second text, edited"]
    model = HashModel()
    assert refresh(db, model).plan.is_empty and model.embedded == [], "the hash recorded is the text embedded"


def test_a_batch_that_needs_more_than_the_memory_limit_raises_it_and_puts_it_back(db):
    load(db, {i: (f"text number {i} " + "word " * 40, "a" * 2000) for i in range(400)})
    with db() as other:  # another connection of the process: it shares the database, and its limit
        before = other.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        model = HashModel(dim=2048)  # 400 x 8 KiB vectors and 2 KB served columns: more than 1 MiB in one commit
        result = refresh(db, model, memory_limit="1MiB")
        assert len(embedded(db)) == 400
        assert result.memory_limit not in (None, "1MiB"), "the limit was raised"
        assert other.execute("SELECT current_setting('memory_limit')").fetchone()[0] == before


def test_a_memory_limit_that_is_not_a_size_is_refused_by_name(db):
    load(db, {1: ("text", "a")})
    with pytest.raises(ValueError, match="QUIVER_REFRESH_MEMORY_LIMIT.*'lots'.*like '64MB'"):
        refresh(db, HashModel(), memory_limit="lots")


def test_a_refresh_that_leaves_a_big_wal_checkpoints_it_and_a_small_one_leaves_it(db, monkeypatch):
    path = db.tmp_path / "w.duckdb"

    @contextlib.contextmanager
    def writer():  # as the Dagster layer opens them: small commits stay in the WAL
        conn = duckdb.connect(str(path))
        warehouse.writer_settings(conn)
        try:
            yield conn
        finally:
            conn.close()

    writer.tmp_path = db.tmp_path
    load(writer, {i: (f"text number {i}", "a") for i in range(50)})
    refresh(writer, HashModel())
    wal = path.with_name("w.duckdb.wal")
    assert wal.exists() and wal.stat().st_size < writer_memory.WAL_CHECKPOINT_BYTES, "a small refresh stays in the WAL"
    monkeypatch.setattr(writer_memory, "WAL_CHECKPOINT_BYTES", 1024)
    load(writer, {i: (f"text number {i}, edited", "a") for i in range(50)})
    refresh(writer, HashModel())
    assert not wal.exists() or wal.stat().st_size == 0, "checkpointed"
    assert len(embedded(writer)) == 50


def test_rows_whose_rowids_moved_since_the_plan_are_still_read(db):
    load(db, {i: (f"text number {i}", "a") for i in range(20)})
    with db() as conn:
        plan = warehouse.plan_changes(conn, LAYOUT, MODEL)
        keys = plan.to_embed.slice(10, 10)  # rows 10..19, their rowids as a vacuum would have moved them
        moved = keys.set_column(1, warehouse.ROWID, pa.array([0] * keys.num_rows, keys.schema.field(1).type))
        rows = warehouse.read_rows(conn, LAYOUT, plan, moved)
    assert sorted(rows.column("id").to_pylist()) == list(range(10, 20))
    assert rows.column(warehouse.TEXT).to_pylist()[0].startswith("text number")
