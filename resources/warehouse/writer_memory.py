"""What a writer connection holds in memory and leaves in the WAL, for long refreshes. No Dagster.

- ``MemoryLimit``: DuckDB's memory limit while a refresh holds the database, raised for a
  statement that needs more and put back when the connection is handed back.
- ``checkpoint_a_big_wal``: one checkpoint after a refresh that left a big WAL behind.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

# DuckDB's buffer pool while a refresh holds the database. Unbounded (DuckDB's default is 80% of
# RAM) it keeps every block it reads, and each checkpoint of a growing table read more of it: a
# 1M-row first build peaked at 2.6 GB. Bounded, DuckDB evicts or spills instead.
REFRESH_MEMORY_LIMIT = os.environ.get("QUIVER_REFRESH_MEMORY_LIMIT", "64MB")
Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


# A commit stays in DuckDB's WAL until it passes ``checkpoint_threshold`` (16 MiB; see
# ``warehouse.writer_settings``), and every open of the database replays the WAL: 0.13 s for the
# 14 MB a 20,000-row first build leaves, paid by every later step, check and reader. A refresh
# that leaves more than this checkpoints once at its end; a small one leaves its few rows there.
WAL_CHECKPOINT_BYTES = 4 * 2**20


def checkpoint_a_big_wal(conn: duckdb.DuckDBPyConnection) -> None:
    path = conn.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    wal = Path(f"{path}.wal") if path else None
    if wal is not None and wal.exists() and wal.stat().st_size > WAL_CHECKPOINT_BYTES:
        try:
            conn.execute("CHECKPOINT")
        except duckdb.TransactionException:  # another connection is writing: DuckDB checkpoints later
            log.info("left the WAL to DuckDB: another connection of the database has a transaction open")


class MemoryLimit:
    """DuckDB's memory limit while the refresh holds the database: ``limit`` (a size like '64MB';
    None leaves DuckDB's own) at first, four times more each time a statement runs out of it (a
    batch of long texts or wide columns needs more than a batch of short ones), up to DuckDB's own
    limit. The limit is DuckDB's: it is set on each connection and put back before it closes,
    since another connection of the process may share the database."""

    def __init__(self, limit: str | None):
        self.limit = _size(limit) if limit is not None else None

    @contextmanager
    def connection(self, connect: Connect):
        with connect() as conn:
            setting = "SELECT current_setting('memory_limit')"
            before = conn.execute(setting).fetchone()[0]
            conn.execute("RESET memory_limit")
            self.default = conn.execute(setting).fetchone()[0]  # DuckDB's own
            # DuckDB shows the limit rounded: an unset limit is put back by RESET, exactly
            put_back = "RESET memory_limit" if before == self.default else f"SET memory_limit = '{before}'"
            if self.limit is not None:
                conn.execute(f"SET memory_limit = '{self.limit}'")
            try:
                yield conn
            finally:
                conn.execute(put_back)

    def retrying(self, conn: duckdb.DuckDBPyConnection, statement: Callable[[], object]):
        """``statement()``, run again with a larger limit while it runs out of memory (each
        statement here is a transaction of its own or read-only, so a rerun starts clean)."""
        while True:
            try:
                return statement()
            except duckdb.OutOfMemoryException:
                if self.limit is None:
                    raise
                grown = _bytes(self.limit) * 4
                self.limit = None if grown >= _bytes(self.default) else f"{grown // 2**20}MiB"
                log.info("DuckDB ran out of its refresh memory limit; running the statement again with %s", self.limit or self.default)
                conn.execute(f"SET memory_limit = '{self.limit or self.default}'")


_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _size(text: str) -> str:
    _bytes(text, "refresh memory limit (QUIVER_REFRESH_MEMORY_LIMIT)")
    return text.strip()


def _bytes(text: str, what: str = "memory limit") -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)", text.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"{what} {text!r} is not a size like '64MB' or '1GiB'")
    return int(float(match[1]) * _UNITS[match[2].upper()])
