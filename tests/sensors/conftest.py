"""An index directory written through the engine with synthetic vectors: what the sensors read.

The sensors look only at the manifest, the log listing and segment footers, so these tests need no
model, no DuckDB and no Dagster run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from quiver.resources.index import IndexStore, commitlog
from quiver.resources.index.commitlog import KEY, OP, OP_DELETE, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.identity import HnswParams, IndexIdentity

DIM = 8


class SyntheticIndex:
    """One dataset's index directory; ``add``/``delete`` publish one segment each."""

    def __init__(self, root: Path, dataset: str):
        identity = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model="fake-model")
        self.store = IndexStore(root, dataset, identity, HnswParams(m=16, ef_construction=64, ef_search=64), "pkg_id")
        self.store.open()
        self.rng = np.random.default_rng(7)
        self.next_pk = 0

    def _segment(self, ops: list[tuple[str, int]]) -> commitlog.SegmentRef:
        first = self.store.last_seq() + 1
        vectors = self.rng.normal(size=(len(ops), DIM)).astype(np.float32)
        mask = pa.array([op == OP_DELETE for op, _ in ops])
        table = pa.table(
            {
                SEQ: pa.array(range(first, first + len(ops)), pa.int64()),
                OP: pa.array([op for op, _ in ops], pa.string()),
                KEY: pa.array([pk + 1 for _, pk in ops], pa.uint64()),
                "pkg_id": pa.array([pk for _, pk in ops], pa.int64()),
                VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM, mask=mask),
            }
        )
        return self.store.append_segment(table, first, first + len(ops) - 1)

    def add(self, rows: int) -> commitlog.SegmentRef:
        pks = range(self.next_pk, self.next_pk + rows)
        self.next_pk += rows
        return self._segment([(OP_UPSERT, pk) for pk in pks])

    def delete(self, pks: range) -> commitlog.SegmentRef:
        return self._segment([(OP_DELETE, pk) for pk in pks])

    def snapshot(self, rebuild_tombstone_percent: float = 20.0):
        return self.store.take_snapshot(rebuild_tombstone_percent)


@pytest.fixture
def synthetic_index():
    return SyntheticIndex
