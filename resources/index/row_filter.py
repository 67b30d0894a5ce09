"""``where=`` predicates: which served rows match, evaluated by an in-memory DuckDB. No Dagster.

The predicate is plain SQL over the served columns and the primary key, for example
``section = 'python' AND name LIKE 'py%'``. DuckDB parses it as the WHERE clause of
``SELECT _key FROM rows WHERE <predicate>`` (``json_serialize_sql``), and anything but one plain
SELECT over ``rows`` with a WHERE clause is refused: no second statement, no subquery, no ORDER
BY/LIMIT/GROUP BY tail, no column the index does not serve. It then runs on a private in-memory
connection with external access switched off, over the index's own rows tables (Arrow, zero
copy), never over the DuckDB database file. DuckDB is imported only when a filter is used, so
readers that never filter never load it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from quiver.resources.index.commitlog import KEY

_TABLE = "rows"
_CACHE_SIZE = 64  # predicates remembered per served state (apps repeat a handful of filters)


class FilterError(ValueError):
    """A ``where`` predicate that cannot be used; the message says what to change."""


def _walk(node) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def check_predicate(conn, where: str, columns: Iterable[str]) -> None:
    """Raise FilterError unless ``where`` is one plain predicate over ``columns``."""
    if not isinstance(where, str) or not where.strip():
        raise FilterError("where must be a non-empty SQL predicate, for example: section = 'python'")
    sql = f"SELECT {KEY} FROM {_TABLE} WHERE {where}"
    parsed = json.loads(conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if parsed.get("error"):
        raise FilterError(f"where {where!r} is not a SQL predicate: {parsed.get('error_message', 'parse error')}")
    statements = parsed["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    plain = (
        node.get("type") == "SELECT_NODE"
        and node.get("from_table", {}).get("type") == "BASE_TABLE"
        and node["from_table"].get("table_name") == _TABLE
        and not node.get("modifiers")
        and not node.get("group_expressions")
        and not node.get("having")
        and not node.get("qualify")
        and not node.get("sample")
        and not node.get("cte_map", {}).get("map")
    )
    if not plain:
        raise FilterError(
            f"where {where!r} is not a plain predicate: give only a condition over the served columns "
            "(no ORDER BY, LIMIT, GROUP BY, set operation or second statement)"
        )
    allowed = set(columns)
    referenced = set()
    for item in _walk(node.get("where_clause")):
        if item.get("class") == "SUBQUERY" or item.get("type") == "SUBQUERY":
            raise FilterError(f"where {where!r} has a subquery; filters are conditions over the served columns only")
        if item.get("class") == "COLUMN_REF":
            referenced.add(item["column_names"][-1])
    unknown = sorted(referenced - allowed)
    if unknown:
        raise FilterError(
            f"where {where!r} names columns that are not served: {', '.join(unknown)}; "
            f"served columns: {', '.join(sorted(allowed))}"
        )


class RowFilter:
    """Matching keys of one served state: (snapshot keys, delta keys), each sorted ascending."""

    def __init__(self, snapshot_rows: pa.Table | None, delta_rows: pa.Table | None, columns: Iterable[str]):
        import duckdb

        self._conn = duckdb.connect(":memory:", config={"enable_external_access": False, "threads": 1})
        self._columns = list(columns)
        self._tables = {"snapshot_rows": snapshot_rows, "delta_rows": delta_rows}
        for name, table in self._tables.items():
            if table is not None:
                self._conn.register(name, table)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # one DuckDB connection: one statement at a time

    def matching(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if where in self._cache:
                self._cache.move_to_end(where)
                return self._cache[where]
            check_predicate(self._conn, where, self._columns)
            found = tuple(self._keys(name, where) for name in self._tables)
            self._cache[where] = found
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return found

    def _keys(self, table: str, where: str) -> np.ndarray:
        if self._tables[table] is None:
            return np.empty(0, dtype=np.uint64)
        import duckdb

        try:
            result = self._conn.execute(f"SELECT {KEY} FROM {table} AS {_TABLE} WHERE {where}").fetchnumpy()
        except duckdb.Error as error:
            raise FilterError(f"where {where!r} cannot be evaluated: {error}") from error
        return np.sort(np.asarray(result[KEY], dtype=np.uint64))

    def close(self) -> None:
        self._conn.close()
