"""Running every asset of a spec, and reading state back for assertions: the DuckDB table and the
index directory, as plain dicts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
from dagster import DagsterInstance, materialize
from usearch.index import Index

from assets import dataset_assets
from pipelines.definitions import build_resources
from pipelines.spec import load_spec
from resources.index import commitlog
from resources.index.manifest import read_manifest


def materialize_all(spec_path: Path, home: Path, instance=None):
    """Materialize every asset of the spec at ``spec_path`` in this process (an ephemeral instance by default)."""
    spec = load_spec(spec_path)
    assets = [asset for dataset in spec.datasets for asset in dataset_assets(dataset)]
    return materialize(assets, resources=build_resources(spec, home), instance=instance or DagsterInstance.ephemeral())


def metadata_of(result, key: list[str]) -> dict:
    """The materialization metadata of one asset, values unwrapped."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.path == key:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise KeyError(key)


def duckdb_state(database: Path, dataset: str) -> dict:
    """key -> (vector, primary key, served columns...) from the embedded table."""
    conn = duckdb.connect(str(database), read_only=True)
    try:
        rows = conn.execute(
            f"SELECT _key, _vector, pkg_id, * EXCLUDE (_key, _vector, pkg_id, _seq, _content_hash, _served_hash) "
            f'FROM "{dataset}_embeddings"'
        ).fetchall()
    finally:
        conn.close()
    return _State({row[0]: (np.asarray(row[1], dtype=np.float32), *row[2:]) for row in rows})


class _State(dict):
    """Compares vectors exactly (f32) and the rest by value."""

    def __eq__(self, other):
        if set(self) != set(other):
            return False
        return all(np.array_equal(self[k][0], other[k][0]) and self[k][1:] == other[k][1:] for k in self)

    __hash__ = None


def index_state(root: Path) -> _State:
    """key -> (vector, primary key, served columns...) from snapshot + the segments after it."""
    manifest = read_manifest(root)
    state = _State()
    if manifest.snapshot:
        import pyarrow.parquet as pq

        directory = root / manifest.snapshot.dir
        index = Index.restore(str(directory / "index.usearch"))
        rows = pq.read_table(directory / "rows.parquet").to_pylist()
        keys = np.array([r["_key"] for r in rows], dtype=np.uint64)
        vectors = np.vstack(index.get(keys)) if len(keys) else []
        for row, vector in zip(rows, vectors):
            state[row["_key"]] = (np.asarray(vector, dtype=np.float32), *[v for k, v in row.items() if k != "_key"])
    refs = [r for r in commitlog.list_segments(root) if r.last > manifest.snapshot_seq]
    folded = commitlog.fold(commitlog.read_segments(refs, manifest.identity))
    for record in folded.to_pylist() if folded is not None else []:
        key = record.pop("_key")
        if record.pop("_op") == "delete":
            state.pop(key, None)
        else:
            record.pop("_seq")
            vector = np.asarray(record.pop("_vector"), dtype=np.float32)
            state[key] = (vector, *record.values())
    return state
