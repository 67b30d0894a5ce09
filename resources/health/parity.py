"""Parity of the embedded table and the served index: the same key set, counted and fingerprinted. No Dagster.

``measure_parity``: the embedded table's key set against the served index's (counts, an XXH3
fingerprint of the sorted keys, the missing and extra primary keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import xxhash

from quiver.resources.index import IndexReader
from quiver.resources.warehouse import KEY, TableLayout, q, table_exists


def fingerprint(keys: np.ndarray) -> str:
    """XXH3-64 of the sorted uint64 keys (little endian): equal key sets, equal fingerprints."""
    ordered = np.sort(np.asarray(keys, dtype=np.uint64)).astype("<u8", copy=False)
    return xxhash.xxh3_64_hexdigest(ordered.tobytes())


def table_keys(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> pa.Table:
    """``_key`` and the primary key of every embedded row (empty before the first embedding)."""
    if not table_exists(conn, layout.embeddings):
        return pa.table({KEY: pa.array([], pa.uint64()), layout.primary_key: pa.array([])})
    return conn.sql(f"SELECT {KEY}, {q(layout.primary_key)} FROM {layout.embeddings} ORDER BY {KEY}").to_arrow_table()


@dataclass(frozen=True)
class ParityResult:
    table_count: int
    index_count: int
    table_fingerprint: str
    index_fingerprint: str
    table_seq: int  # DuckDB's last change seq
    served_seq: int  # the last seq the index serves
    missing: list  # primary keys in the table, not in the index (the first ``limit``)
    extra: list  # primary keys in the index, not in the table (the first ``limit``)
    missing_count: int
    extra_count: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.table_count == self.index_count and self.table_fingerprint == self.index_fingerprint


def measure_parity(table: pa.Table, reader: IndexReader, table_seq: int, limit: int = 20) -> ParityResult:
    """Compare the embedded table's keys (``table_keys``) with what ``reader`` serves."""
    pk = reader.manifest.primary_key
    t_keys = table.column(KEY).to_numpy() if table.num_rows else np.empty(0, dtype=np.uint64)
    i_keys = reader.live_keys()
    missing = np.setdiff1d(t_keys, i_keys)
    extra = np.setdiff1d(i_keys, t_keys)
    by_key = dict(zip(t_keys.tolist(), table.column(pk).to_pylist())) if missing.size else {}
    extra_pks = reader.rows(extra[:limit], columns=[]).column(pk).to_pylist() if extra.size else []
    return ParityResult(
        table_count=len(t_keys),
        index_count=len(i_keys),
        table_fingerprint=fingerprint(t_keys),
        index_fingerprint=fingerprint(i_keys),
        table_seq=int(table_seq),
        served_seq=reader.served_seq,
        missing=[by_key[k] for k in missing[:limit].tolist()],
        extra=extra_pks,
        missing_count=int(missing.size),
        extra_count=int(extra.size),
        problems=reader.problems,
    )
