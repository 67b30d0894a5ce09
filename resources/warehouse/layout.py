"""The warehouse layout: table names, internal columns, errors, connection settings. No Dagster.

Tables per dataset ``<ds>`` (identifiers come validated from the spec and are quoted here; values
are bound as parameters):

    <ds>_rows        the source as last read: primary key + served columns + embedded columns
    <ds>_keys        (primary key, ``_chunk``) -> ``_key`` UBIGINT, given on first sight and never
                     reused, so an updated (or deleted and re-added) row keeps its usearch keys;
                     chunk 0 is the row's first (often only) chunk
    <ds>_embeddings  one row per chunk: primary key, ``_chunk`` (0, 1, ...), ``_chunk_start`` and
                     ``_chunk_end`` (the chunk's [start, end) character offsets into the embedded
                     text), ``_key``, ``_seq`` (the seq of the chunk's latest change),
                     ``_content_hash`` (md5 of model identity + NUL + the embedded text; the same on
                     every chunk of a row), ``_served_hash`` (md5 of the served columns),
                     ``_vector`` FLOAT[dim], served columns. Tables from before chunking get the
                     three chunk columns on the next commit (chunk 0, the whole text).
    <ds>_changes     one record per change (I1): ``_seq`` BIGINT (monotonic), ``_op`` upsert|delete,
                     ``_key``, primary key, ``_at`` — written in the same transaction as the change
    <ds>_rebuilds    one record per full rebuild: ``_seq`` (the first seq of the rebuilt state), ``_at``,
                     ``dim``, ``model``, ``rows``. A rebuild replaces ``<ds>_embeddings`` and
                     ``<ds>_changes`` in one transaction; seqs keep growing across it, so an index
                     whose log ends before ``_seq`` predates the rebuild (``log_sync.predates_rebuild``)
    <ds>_staged_commits  the fan-out's ledger (``embed_fanout``): ``plan_id``, ``part``, ``first_seq``,
                     ``last_seq``, ``_at`` of each staged part committed, written in the part's
                     transaction, so a part is committed once however often its commit runs
    <ds>_watermark   append mode with a ``time_column``: ``time_column`` (its name) and ``watermark``
                     (the largest value read so far, in the column's own type); the next refresh
                     reads only rows above it

``source`` writes ``<ds>_rows`` and ``<ds>_watermark``; ``changes`` writes the rest in one
transaction per refresh and reads back what the commit log needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from quiver.resources.index.commitlog import CHUNK_COLUMNS  # the log's format names the chunk columns
from quiver.resources.spec import DatasetSpec

KEY, SEQ, OP, VECTOR = "_key", "_seq", "_op", "_vector"
CONTENT_HASH, SERVED_HASH, TEXT = "_content_hash", "_served_hash", "_text"
INTERNAL = (KEY, SEQ, OP, VECTOR, CONTENT_HASH, SERVED_HASH, *CHUNK_COLUMNS)


class WarehouseError(ValueError):
    """Bad source data or a state the warehouse refuses to write; nothing was committed."""


class SourceNotFoundError(WarehouseError, FileNotFoundError):
    pass


class ConcurrentWriteError(WarehouseError, RuntimeError):
    pass


class DimensionMismatchError(WarehouseError):
    """The model's vectors have another dimension than the embedded table's; only a rebuild crosses."""


def q(identifier: str) -> str:
    """Quote an identifier (already validated as plain by the spec; quoting is the second guard)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableLayout:
    dataset: str
    primary_key: str
    text_columns: tuple[str, ...]
    separator: str = "\n"
    served_columns: tuple[str, ...] | None = None  # None: every source column
    refresh_mode: str = "full"  # full | append

    def table(self, stage: str) -> str:
        return q(f"{self.dataset}_{stage}")

    @property
    def rows(self) -> str:
        return self.table("rows")

    @property
    def embeddings(self) -> str:
        return self.table("embeddings")

    @property
    def keys(self) -> str:
        return self.table("keys")

    @property
    def changes(self) -> str:
        return self.table("changes")

    @property
    def rebuilds(self) -> str:
        return self.table("rebuilds")

    @property
    def watermark(self) -> str:
        return self.table("watermark")


def writer_settings(conn: duckdb.DuckDBPyConnection) -> None:
    """Settings for every connection that writes the database file (``open_connection`` applies them).

    - Small commits stay in DuckDB's WAL when the connection closes, instead of a checkpoint at
      every close: a checkpoint rewrites the partly filled blocks of every column a commit touched,
      so at 100,000 rows a refresh of 3,000 changed rows wrote 3.8x their raw bytes to the database
      file (``make bench``, update rounds); with the WAL kept, 1.15x between checkpoints and 1.8x
      counting the checkpoint that comes every few refreshes. The WAL is DuckDB's own
      durability (replayed on open, read-only opens included); DuckDB checkpoints once it passes
      ``checkpoint_threshold`` (16 MiB), and a commit too big for it is checkpointed directly.
    - No ALP/ALPRD compression: embedding floats do not compress, and ALPRD stored a FLOAT[384]
      column at 1.57x its raw bytes (blocks two-thirds full); uncompressed it takes 1.0x, and
      checkpoints write it faster. Other DOUBLE/FLOAT columns are stored uncompressed too.
      Data written with them stays readable.
    """
    conn.execute("PRAGMA disable_checkpoint_on_shutdown")
    conn.execute("SET disabled_compression_methods = 'alp,alprd'")


def table_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name.strip('"')]
        ).fetchone()[0]
    )


def columns_of(conn: duckdb.DuckDBPyConnection, relation: str, params: list | None = None) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE {relation}", params).fetchall()}



def layout_for(spec: DatasetSpec) -> TableLayout:
    """The tables of a dataset, from its spec: every stage (assets, sensors, checks) agrees on them."""
    return TableLayout(
        dataset=spec.name,
        primary_key=spec.primary_key,
        text_columns=tuple(spec.embeddings.columns),
        separator=spec.embeddings.separator,
        served_columns=spec.served_columns,
        refresh_mode=spec.refresh_mode,
    )
