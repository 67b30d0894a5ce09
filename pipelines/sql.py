"""Vector search from SQL, on the user's own DuckDB connection.

    import duckdb
    from quiver.pipelines.sql import register

    conn = duckdb.connect()
    register(conn)  # QUIVER_DATASETS / QUIVER_HOME, or register(conn, home=..., spec_path=...)
    conn.sql("SELECT * FROM vector_search('packages', 'text editor', 5)")
    conn.sql("SELECT * FROM vector_search('packages', 'text editor', 5, filter := 'section = ''editors''')")
    conn.sql("SELECT q, quiver_search('packages', q, 3) AS hits FROM my_queries")  # a list per row

DuckDB 1.5's Python API registers scalar functions only (``create_function``; its
``table_function`` calls existing ones), so the search is a vectorized (Arrow) scalar UDF that
returns a list of structs, and ``vector_search`` is a table macro that unnests it. A scalar
function has one return type for every dataset, so the served columns come back as one JSON
object, ``data`` (read them with ``data->>'column'``), and the primary key as text
(``primary_key``; cast it to join: ``ON t.id = v.primary_key::BIGINT``).

    rank         INTEGER  1 = best
    primary_key  VARCHAR  the row's primary key, as text
    score        DOUBLE   higher is better
    distance     DOUBLE   in the index's metric
    data         JSON     the served columns

Arguments: ``dataset``, ``query`` (text), ``k`` (default 10), ``filter`` (a SQL predicate over the
served columns, like ``where=`` in Python; default none), ``ef_search`` (default: the spec's).
Macros are TEMP, so nothing is written into the user's database file. Queries read only the index
directories, never quiver's DuckDB file.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa

from quiver.pipelines.query import searcher as default_searcher
from quiver.resources.search import Searcher
from quiver.resources.spec import default_home, load_spec
from quiver.resources.values import dumps, jsonable

UDF = "_quiver_search"
HIT = pa.struct(
    [
        ("rank", pa.int32()),
        ("primary_key", pa.string()),
        ("score", pa.float64()),
        ("distance", pa.float64()),
        ("data", pa.string()),
    ]
)
RETURN_TYPE = "STRUCT(rank INTEGER, primary_key VARCHAR, score DOUBLE, distance DOUBLE, data JSON)[]"
ARGS = "dataset, query, k := 10, filter := NULL, ef_search := NULL"
CALL = f"{UDF}(dataset, query, k, filter, ef_search)"


def register(conn: duckdb.DuckDBPyConnection, home=None, spec_path=None, searcher=None) -> None:
    """Add ``quiver_search(...)`` (a list of hits) and ``vector_search(...)`` (a table) to ``conn``.

    With neither ``home`` nor ``spec_path`` it serves from the process-wide searcher of
    ``quiver.pipelines.query`` (``QUIVER_HOME``, ``QUIVER_DATASETS``). Registering again replaces them.
    """
    searcher = searcher or _searcher(home, spec_path)
    try:
        conn.remove_function(UDF)
    except duckdb.InvalidInputException:
        pass  # not registered yet
    conn.create_function(
        UDF,
        _batch_search(searcher),
        ["VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", "INTEGER"],
        duckdb.sqltype(RETURN_TYPE),
        type="arrow",
        null_handling="special",  # NULL filter/ef_search mean "none"; a NULL query gives NULL
    )
    conn.execute(f"CREATE OR REPLACE TEMP MACRO quiver_search({ARGS}) AS {CALL}")
    conn.execute(
        f"CREATE OR REPLACE TEMP MACRO vector_search({ARGS}) AS TABLE "
        f"SELECT hit.* FROM (SELECT unnest({CALL}) AS hit) ORDER BY hit.rank"
    )


def _searcher(home, spec_path):
    if home is None and spec_path is None:
        return default_searcher()
    return Searcher.for_spec(Path(home) if home is not None else default_home(), load_spec(spec_path))


def _batch_search(searcher):
    lock = threading.Lock()  # DuckDB may call from several threads; the reader refreshes between queries

    def search(datasets, queries, ks, filters, ef_searches) -> pa.Array:
        # DuckDB hands over a chunk of rows at once: rows asking the same thing of the same dataset
        # become one search_batch, so their texts are embedded together.
        columns = [c.to_pylist() for c in (datasets, queries, ks, filters, ef_searches)]
        out: list[list[dict] | None] = [None] * len(columns[0])
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (dataset, query, k, where, ef) in enumerate(zip(*columns)):
            if dataset is not None and query is not None:
                groups[(dataset, k, where, ef)].append(i)
        for (dataset, k, where, ef), rows in groups.items():
            try:
                with lock:
                    table = searcher.search_batch(
                        dataset, [columns[1][i] for i in rows], k=k, where=where, ef_search=ef
                    )
            except (ValueError, LookupError, FileNotFoundError) as error:
                # A bad request: DuckDB prints the message with the traceback, so drop quiver's frames.
                raise error.with_traceback(None) from None
            pk = table.column_names[1]  # query, then the primary key under its own name
            for row in rows:
                out[row] = []
            for hit in table.to_pylist():
                hits = out[rows[hit.pop("query")]]
                hits.append(
                    {
                        "rank": len(hits) + 1,
                        "primary_key": str(jsonable(hit.pop(pk))),
                        "score": hit.pop("score"),
                        "distance": hit.pop("distance"),
                        "data": dumps(hit),
                    }
                )
        return pa.array(out, type=pa.list_(HIT))

    return search
