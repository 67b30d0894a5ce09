"""quiver, measured through its own engine code: the warehouse statements and the index store.

The rows and vectors go into DuckDB exactly as the embeddings asset commits them (load_source,
plan_changes, commit_changes, one connection per asset as the Dagster assets hold them), with the
corpus's precomputed vectors in place of the model: the benchmark compares storage and serving, and
embedding is measured on its own. The index side is the index and snapshot assets' engine calls
(changes_after, IndexStore.append_segment, IndexStore.take_snapshot). Queries go through the
Python helper ``quiver.search`` with a vector, as a user would call it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from quiver.resources import warehouse
from quiver.resources.index import HnswParams, IndexIdentity, IndexReader, IndexStore
from quiver.resources.spec import SnapshotsSpec
from tests.benchmarks.peers.corpus import ChangeRound, Corpus, Rows

DATASET = "bench"
LAYOUT = warehouse.TableLayout(DATASET, "pk", ("text",), served_columns=("text",))
PARAMS = HnswParams(m=16, ef_construction=128, ef_search=64)


def io_counters() -> dict:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"wchar": int(fields["wchar"]), "write_bytes": int(fields["write_bytes"])}


def measured(step: Callable[[], object]) -> tuple[object, dict]:
    """Run ``step``; return its result and seconds and bytes this process wrote meanwhile."""
    before, started = io_counters(), time.perf_counter()
    result = step()
    after = io_counters()
    return result, {"seconds": time.perf_counter() - started} | {k: after[k] - before[k] for k in before}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class QuiverSide:
    def __init__(self, home: Path, corpus: Corpus, dtype: str = "f32", keep_previous: bool = SnapshotsSpec().keep_previous):
        self.home, self.corpus = home, corpus
        self.db, self.source, self.index = home / "quiver.duckdb", home / "source.parquet", home / DATASET
        home.mkdir(parents=True, exist_ok=True)
        self.identity = IndexIdentity(
            dim=corpus.base.vectors.shape[1], metric="cosine", dtype=dtype, model=corpus.model
        )
        self.store = IndexStore(self.index, DATASET, self.identity, PARAMS, LAYOUT.primary_key, keep_previous)
        self.spec = home / "datasets.yaml"
        entry = {
            "name": DATASET,
            "from": str(self.source),
            "primary_key": "pk",
            "columns": ["text"],
            "embeddings": {"column": "text"},
            "vectors": {"metric": "cosine", "m": PARAMS.m, "ef_construction": PARAMS.ef_construction},
        }
        entry |= {"vectors": entry["vectors"] | {"dtype": dtype}, "snapshots": {"keep_previous": keep_previous}}
        self.spec.write_text(yaml.safe_dump({"datasets": [entry]}))
        self.current = pa.table({"pk": corpus.base.pks, "text": corpus.base.texts})

    @contextmanager
    def connection(self):
        conn = duckdb.connect(str(self.db))
        try:
            warehouse.writer_settings(conn)  # as every asset's connection (open_connection)
            yield conn
        finally:
            conn.close()  # counted: commits go to the WAL, a checkpoint once it passes 16 MiB

    def _refresh_duckdb(self, rows: Rows) -> dict:
        """The rows asset, then the embeddings asset's plan and commit, with ``rows``' vectors."""
        pq.write_table(self.current, self.source)  # the upstream's write: not counted
        counts = {}

        def rows_asset():
            with self.connection() as conn:
                warehouse.load_source(conn, LAYOUT, [str(self.source)])

        def embeddings_asset():
            with self.connection() as conn:
                plan = warehouse.plan_changes(conn, LAYOUT, self.corpus.model)
                embedded = warehouse.read_rows(conn, LAYOUT, plan, plan.to_embed)
            wanted = embedded.column("pk").to_numpy()
            order = np.argsort(rows.pks)
            vectors = rows.vectors[order[np.searchsorted(rows.pks, wanted, sorter=order)]]
            with self.connection() as conn:
                committed = warehouse.commit_changes(conn, LAYOUT, plan, embedded, vectors)
            counts.update(embedded=len(wanted), deleted=plan.deleted.num_rows, committed=committed is not None)

        _, rows_cost = measured(rows_asset)
        _, embeddings_cost = measured(embeddings_asset)
        return {"rows_asset": rows_cost, "embeddings_commit": embeddings_cost, "counts": counts}

    def _append_segment(self):
        with self.connection() as conn:
            changes, last = warehouse.changes_after(conn, LAYOUT, self.store.last_seq())
        return self.store.append_segment(changes, self.store.last_seq() + 1, last)

    def load(self) -> dict:
        """The base rows into DuckDB (not part of the build: "vectors already in DuckDB")."""
        return self._refresh_duckdb(self.corpus.base)

    def build(self) -> dict:
        """Segments + the first snapshot from what DuckDB holds."""
        self.store.open()
        segment, append = measured(self._append_segment)
        snapshot, snap = measured(self.store.take_snapshot)
        return {
            "build_s": append["seconds"] + snap["seconds"],
            "segment": append | {"bytes": segment.bytes},
            "snapshot": snap | {"bytes": snapshot.entry.total_bytes},
            "bytes": self.sizes(),
        }

    def sizes(self) -> dict:
        wal = self.db.with_name(self.db.name + ".wal")
        return {
            "duckdb": self.db.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            "index_dir": dir_bytes(self.index),
        }

    def update_round(self, change: ChangeRound) -> dict:
        """1 refresh: source changed upstream, then rows + embeddings commit + one log segment."""
        gone = pa.array(np.concatenate([change.deletes, change.updates.pks]))
        kept = self.current.filter(pc.invert(pc.is_in(self.current.column("pk"), gone)))
        upserted = [pa.table({"pk": r.pks, "text": r.texts}) for r in (change.updates, change.inserts)]
        self.current = pa.concat_tables([kept, *upserted])
        rows = Rows(
            np.concatenate([change.updates.pks, change.inserts.pks]),
            change.updates.texts + change.inserts.texts,
            np.concatenate([change.updates.vectors, change.inserts.vectors]),
        )
        duck = self._refresh_duckdb(rows)
        segment, append = measured(self._append_segment)
        parts = [duck["rows_asset"], duck["embeddings_commit"], append]
        total = {name: sum(p[name] for p in parts) for name in ("seconds", "wchar", "write_bytes")}
        return {
            "total": total,
            "duckdb": {name: total[name] - append[name] for name in total},
            "segment": append | {"bytes": segment.bytes},
            "counts": duck["counts"],
            "bytes": self.sizes(),
        }

    def snapshot_after_rounds(self) -> dict:
        """The snapshot the sensor asks for once the log passes 5% of the index: not per change."""
        snapshot, cost = measured(self.store.take_snapshot)
        return cost | {"snapshot_bytes": snapshot.entry.total_bytes if snapshot else 0, "bytes": self.sizes()}

    def use_env(self) -> None:
        os.environ["QUIVER_HOME"], os.environ["QUIVER_DATASETS"] = str(self.home), str(self.spec)

    def query(self, queries: np.ndarray, passes: int) -> dict:
        """Latency of ``quiver.search`` (rows with the served column) and of the reader (keys only).

        Each in a pass of its own over all the queries, as raw usearch is measured: right after one
        search of a vector, a second search of the same vector finds the graph's nodes in the CPU
        cache and takes about half the time."""
        from quiver.pipelines import search, search_batch

        self.use_env()
        reader = IndexReader(self.index)
        search(DATASET, queries[0], k=10, ef_search=PARAMS.ef_search)  # opens the index: cold start is measured apart
        helper, keys_only, batch, found = [], [], [], []
        for _ in range(passes):
            times, reader_times, found = [], [], []
            for vector in queries:
                started = time.perf_counter()
                hits = search(DATASET, vector, k=10, ef_search=PARAMS.ef_search)
                times.append(time.perf_counter() - started)
                found.append(hits.column("pk").to_pylist())
            for vector in queries:
                started = time.perf_counter()
                reader.search(vector, 10, ef_search=PARAMS.ef_search)
                reader_times.append(time.perf_counter() - started)
            helper.append(times)
            keys_only.append(reader_times)
            started = time.perf_counter()
            search_batch(DATASET, queries, k=10, ef_search=PARAMS.ef_search)  # one call for the pass
            batch.append((time.perf_counter() - started) / len(queries))
        return {"passes": helper, "reader_passes": keys_only, "batch_per_query_s": batch, "found": found}
