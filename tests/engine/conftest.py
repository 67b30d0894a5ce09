"""Shared helpers for the index-engine tests: changes tables, a plain-Python model, and a read-back.

The model is the truth the engine is checked against (I2): a dict ``key -> Row`` that applies the
same changes as the commit log, one record at a time, in ``_seq`` order. ``read_state`` reads an
index directory back *without* the reader: the snapshot's rows file and its usearch vectors, then
``commitlog.fold`` of the segments after the snapshot.

Test modules reach these through the ``kit`` fixture (conftest modules are not importable by name
when several test folders each have one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from quiver.resources.index import commitlog
from quiver.resources.index.commitlog import KEY, OP, OP_DELETE, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.store import IndexStore
from tests.invariants import index_state

PK = "id"
SERVED = ("name",)
MODEL_NAME = "fake-embedder-v1"
FAST_PARAMS = HnswParams(m=16, ef_construction=64, ef_search=64)
_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1


def key_of(pk: int) -> int:
    """A stable u64 key per primary key, spread over the whole u64 range (high bit included)."""
    return (pk * _GOLDEN + 0x632BE59BD9B4E019) & _U64


def make_identity(dim: int = 8, metric: str = "cosine", dtype: str = "f32", model: str = MODEL_NAME) -> IndexIdentity:
    return IndexIdentity(dim=dim, metric=metric, dtype=dtype, model=model)


@dataclass(frozen=True)
class Record:
    seq: int
    op: str
    key: int
    pk: int
    vector: np.ndarray | None
    name: str | None


def changes_table(records: list[Record], dim: int) -> pa.Table:
    """A changes table in the segment format (commitlog.py): reserved columns, pk, served columns."""
    flat = np.zeros(len(records) * dim, dtype=np.float32)
    for i, rec in enumerate(records):
        if rec.vector is not None:
            flat[i * dim : (i + 1) * dim] = rec.vector
    mask = pa.array([rec.vector is None for rec in records], pa.bool_())
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim, mask=mask)
    assert vectors.type == commitlog.vector_type(dim)
    return pa.table(
        {
            SEQ: pa.array([rec.seq for rec in records], pa.int64()),
            OP: pa.array([rec.op for rec in records], pa.string()),
            KEY: pa.array([rec.key for rec in records], pa.uint64()),
            PK: pa.array([rec.pk for rec in records], pa.int64()),
            VECTOR: vectors,
            "name": pa.array([rec.name for rec in records], pa.string()),
        }
    )


@dataclass(frozen=True)
class Row:
    pk: int
    vector: np.ndarray
    name: str | None


@dataclass
class Model:
    """The plain truth: key -> Row, applying changes one record at a time in seq order."""

    rows: dict[int, Row] = field(default_factory=dict)

    def apply(self, changes: pa.Table) -> None:
        for rec in changes.sort_by(SEQ).to_pylist():
            if rec[OP] == OP_DELETE:
                self.rows.pop(rec[KEY], None)
            else:
                self.rows[rec[KEY]] = Row(rec[PK], np.asarray(rec[VECTOR], dtype=np.float32), rec["name"])

    def keys(self) -> set[int]:
        return set(self.rows)

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.array(sorted(self.rows), dtype=np.uint64)
        return keys, np.stack([self.rows[int(k)].vector for k in keys]) if len(keys) else np.empty((0, 0))


def random_unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.normal(size=dim).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class Workload:
    """Seeded random changes with monotonic seqs, applied to a ``Model`` as they are made.

    ``batch`` makes one segment's worth: new keys, updates of live keys (new vector and name) and
    deletes of live keys, one record per key, in a shuffled seq order.
    """

    def __init__(self, seed: int, dim: int, centers: np.ndarray | None = None):
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.centers = centers
        self.model = Model()
        self.last_seq = 0
        self.next_pk = 0
        self.version = 0

    def vector(self) -> np.ndarray:
        if self.centers is None:
            return random_unit(self.rng, self.dim)
        center = self.centers[self.rng.integers(len(self.centers))]
        vector = center + 0.15 * self.rng.normal(size=self.dim)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def batch(self, inserts: int = 0, updates: int = 0, deletes: int = 0) -> tuple[pa.Table, int, int]:
        live = sorted(self.model.rows)
        chosen = self.rng.permutation(len(live))
        updated = [live[i] for i in chosen[:updates]]
        deleted = [live[i] for i in chosen[updates : updates + deletes]]
        assert len(updated) == updates and len(deleted) == deletes, "not enough live keys for this batch"
        self.version += 1
        ops: list[tuple[str, int, int]] = []
        for _ in range(inserts):
            ops.append((OP_UPSERT, key_of(self.next_pk), self.next_pk))
            self.next_pk += 1
        ops += [(OP_UPSERT, key, self.model.rows[key].pk) for key in updated]
        ops += [(OP_DELETE, key, self.model.rows[key].pk) for key in deleted]
        order = self.rng.permutation(len(ops))
        records = []
        first = self.last_seq + 1
        for offset, i in enumerate(order):
            op, key, pk = ops[i]
            vector = self.vector() if op == OP_UPSERT else None
            name = f"row-{pk}-v{self.version}" if op == OP_UPSERT else None
            records.append(Record(first + offset, op, key, pk, vector, name))
        self.last_seq = first + len(records) - 1
        table = changes_table(records, self.dim)
        self.model.apply(table)
        return table, first, self.last_seq


def read_state(root: Path) -> dict[int, Row]:
    """The full state of an index directory (snapshot files, then the folded log), read back by
    ``tests/invariants.index_state``, as Rows."""
    return {key: Row(e.pk, e.vector, e.columns.get("name")) for key, e in index_state(root).items()}


def assert_state_matches(state: dict[int, Row], model: Model, atol: float = 0.0) -> None:
    """Same key set, same primary keys and served columns, same vectors (exactly when atol == 0)."""
    assert set(state) == model.keys()
    for key, want in model.rows.items():
        got = state[key]
        assert got.pk == want.pk, key
        assert got.name == want.name, key
        if atol == 0.0:
            np.testing.assert_array_equal(got.vector, want.vector)
        else:
            np.testing.assert_allclose(got.vector, want.vector, atol=atol)


def new_store(root: Path, identity: IndexIdentity | None = None, params: HnswParams = FAST_PARAMS) -> IndexStore:
    store = IndexStore(root, "products", identity or make_identity(), params, PK)
    store.open()
    return store


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture
def kit() -> SimpleNamespace:
    """This module's helpers (Workload, Model, read_state, ...) as one namespace."""
    return SimpleNamespace(**{name: globals()[name] for name in __all__})


__all__ = [
    "FAST_PARAMS",
    "MODEL_NAME",
    "PK",
    "SERVED",
    "Model",
    "Record",
    "Row",
    "Workload",
    "assert_state_matches",
    "changes_table",
    "files_under",
    "key_of",
    "make_identity",
    "new_store",
    "random_unit",
    "read_state",
]
