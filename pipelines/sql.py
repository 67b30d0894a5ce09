"""Vector, full-text and hybrid search from SQL, on the user's own DuckDB connection.

    import duckdb
    from quiver.pipelines.sql import register

    conn = duckdb.connect()
    register(conn)  # QUIVER_DATASETS / QUIVER_HOME, or register(conn, home=..., spec_path=...)
    conn.sql("SELECT * FROM vector_search('packages', 'text editor', 5)")
    conn.sql("SELECT * FROM vector_search('packages', 'text editor', 5, filter := 'section = ''editors''')")
    conn.sql("SELECT * FROM text_search('packages', 'vim', 5)")                  # BM25 alone
    conn.sql("SELECT * FROM rrf('packages', 'vim text editor', 5)")              # both, fused
    conn.sql("SELECT q, quiver_search('packages', q, 3) AS hits FROM my_queries")  # a list per row
    conn.sql("SELECT product_id, name, score FROM vector_search(products, 'headphones') ORDER BY score DESC LIMIT 10")

DuckDB 1.5's Python API registers scalar functions only (``create_function``; its
``table_function`` calls existing ones), so the search is a vectorized (Arrow) scalar UDF that
returns a list of structs, and the table functions are table macros that unnest it. A scalar
function has one return type for every dataset, so the served columns come back as one JSON
object, ``data``, and the primary key as text (``primary_key``). The table macros also return each
dataset's primary key and served columns as columns of their own types (read from the index when
``register`` runs; register again after a new dataset is built), so Spice's own example,
``SELECT product_id, name, score FROM vector_search(products, '...')``, runs as written. Their
columns are the union over the spec's datasets (a column another dataset has is NULL; a name two
datasets type differently is VARCHAR; lists, structs and blobs stay JSON).

The dataset is named as Spice names it, a bare table name (``vector_search(products, ...)``), or as
a string (``'products'``): ``register`` makes a TEMP view per dataset (one row: its name) that the
macros resolve with ``query_table``. An unknown name is DuckDB's "Table with name ... does not
exist". A table of the user's with a dataset's name is never shadowed (a warning says so; that
dataset is then searched from another connection, or through ``quiver_search``).

``vector_search(dataset, query, k := 10, filter := NULL, ef_search := NULL)``: the vectors alone
(mode ``vector``, whatever the dataset's default).
``text_search(dataset, query, k := 10, filter := NULL)``: the full-text index alone (mode ``text``,
BM25; the query is words, never query syntax). Both return, best first:

    rank         INTEGER  1 = best
    primary_key  VARCHAR  the row's primary key, as text
    score        DOUBLE   higher is better: the vector similarity, or BM25 in text_search
    distance     DOUBLE   in the index's metric (NULL in text_search)
    data         JSON     the served columns

``rrf(dataset, query, k := 10, filter := NULL, rrf_k := 60, vector_weight := 1.0, text_weight :=
1.0)``: reciprocal rank fusion, as Spice's SQL ``rrf(vector_search(...), text_search(...))``.
DuckDB cannot pass a table function as an argument, so ``rrf`` takes the query and is itself
written in SQL over the two macros above: each is asked for ``greatest(k, 50)`` rows (the depth of
the Python hybrid search, so both give the same ranks), the lists are joined on ``primary_key``
(FULL OUTER JOIN: a row found by one pass counts once), and

    fused_score = coalesce(vector_weight / (rrf_k + v.rank), 0) + coalesce(text_weight / (rrf_k + t.rank), 0)

orders them (ties: the better best rank, then the text pass's order, as in Python), ``k`` rows. Its columns:
``rank``, ``primary_key``, ``fused_score``, ``score`` and ``distance`` (the vector pass's, NULL for a
row only the text pass found; Python's hybrid search computes them for that row too),
``text_score`` (BM25), ``vector_rank``, ``text_rank`` (NULL where that pass did not rank the row),
``data``. To fuse other lists, or with another formula, write the join yourself:

    SELECT coalesce(v.primary_key, t.primary_key) AS primary_key,
           coalesce(1 / (60 + v.rank), 0) + coalesce(2 / (60 + t.rank), 0) AS fused_score
    FROM vector_search('packages', 'text editor', 50) AS v
    FULL OUTER JOIN text_search('packages', 'vim', 50) AS t USING (primary_key)
    ORDER BY fused_score DESC LIMIT 10

``quiver_search(dataset, query, k := 10, filter := NULL, ef_search := NULL, mode := NULL)``: one
list of hits per row, in ``mode`` (``hybrid``, ``vector`` or ``text``; NULL: the searcher's
default, hybrid when the dataset has a full-text index). Each hit is a struct of ``rank``,
``primary_key``, ``fused_score``, ``score``, ``distance``, ``text_score``, ``vector_rank``,
``text_rank`` and ``data``; the fields the mode does not fill are NULL (as in the tables above).

Arguments: ``dataset``, ``query`` (text), ``k`` (default 10), ``filter`` (a SQL predicate over the
served columns, like ``where=`` in Python; default none), ``ef_search`` (default: the spec's).
Macros are TEMP, so nothing is written into the user's database file. Queries read only the index
directories, never quiver's DuckDB file.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa

from quiver.pipelines.query import searcher as default_searcher
from quiver.resources.fusion import RRF_K
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.reader import HYBRID_DEPTH
from quiver.resources.search import HYBRID_COLUMNS, Searcher
from quiver.resources.spec import default_home, load_spec
from quiver.resources.values import dumps, jsonable

log = logging.getLogger(__name__)
UDF = "_quiver_search"
HIT = pa.struct(
    [
        ("rank", pa.int32()),
        ("primary_key", pa.string()),
        ("fused_score", pa.float64()),
        ("score", pa.float64()),
        ("distance", pa.float64()),
        ("text_score", pa.float64()),
        ("vector_rank", pa.int32()),
        ("text_rank", pa.int32()),
        ("data", pa.string()),
        ("key_column", pa.string()),
    ]
)
RETURN_TYPE = (
    "STRUCT(rank INTEGER, primary_key VARCHAR, fused_score DOUBLE, score DOUBLE, distance DOUBLE, "
    "text_score DOUBLE, vector_rank INTEGER, text_rank INTEGER, data JSON, key_column VARCHAR)[]"
)
# The first columns of vector_search and text_search; the typed columns of the datasets follow.
HIT_COLUMNS = ("rank", "primary_key", "score", "distance", "data")
RESERVED = {*HIT_COLUMNS, *HYBRID_COLUMNS, "key_column"}
DATASET_COLUMN = "__quiver_dataset"
ERROR_MARK = "__quiver_error__"  # key_column of the one hit that carries a refused request's message
# DuckDB types a JSON text value casts to exactly; other columns (lists, structs, blobs, ...) stay JSON.
_CASTABLE = re.compile(
    r"(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE"
    r"|DECIMAL\(\d+,\d+\)|VARCHAR|DATE|TIME|TIMESTAMP|TIMESTAMP WITH TIME ZONE|TIMESTAMP_S|TIMESTAMP_MS|TIMESTAMP_NS|UUID)"
)
# The score columns each mode's answer has after the primary key (the searcher's column order).
SCORES = {"vector": ("score", "distance"), "text": ("score",), "hybrid": HYBRID_COLUMNS}


def _typed(name: str, kind: str) -> str:
    """The served column ``name`` out of a hit, as its own type: the primary key's text when the
    hit's dataset keys by it, else the value in ``data``."""
    value = f"CASE WHEN hit.key_column = '{name}' THEN to_json(hit.primary_key) ELSE hit.data->'{name}' END"
    if _CASTABLE.fullmatch(kind):
        return f"CAST(json_extract_string({value}, '$') AS {kind}) AS \"{name}\""
    return f'{value} AS "{name}"'


def _unnest(call: str, typed: dict[str, str]) -> str:
    """A table of one pass's hits: what vector_search and text_search return (a refused request
    raises its message through DuckDB's error())."""
    columns = ", ".join([*(f"hit.{c}" for c in HIT_COLUMNS), *(_typed(n, t) for n, t in typed.items())])
    refused = f"CASE WHEN hit.key_column = '{ERROR_MARK}' THEN error(hit.primary_key) ELSE true END"
    return f"SELECT {columns} FROM (SELECT unnest({call}) AS hit) WHERE {refused} ORDER BY hit.rank"


# ``dataset`` as the table macros take it: a name ('products') or a bare identifier (products),
# both resolved through the TEMP view ``register`` makes for each dataset.
DATASET = f"(SELECT {DATASET_COLUMN} FROM query_table(dataset))"


def _macros(typed: dict[str, str]) -> dict[str, tuple[str, str]]:
    typed_fused = "".join(f', coalesce(v."{n}", t."{n}") AS "{n}"' for n in typed)
    typed_out = "".join(f', "{n}"' for n in typed)
    return {
        "quiver_search": (
            "dataset, query, k := 10, filter := NULL, ef_search := NULL, mode := NULL",
            (
                f"list_filter({UDF}(dataset, query, k, filter, ef_search, mode), "
                f"hit -> CASE WHEN hit.key_column = '{ERROR_MARK}' THEN error(hit.primary_key) ELSE true END)"
            ),
        ),
        "vector_search": (
            "dataset, query, k := 10, filter := NULL, ef_search := NULL",
            "TABLE " + _unnest(f"{UDF}({DATASET}, query, k, filter, ef_search, 'vector')", typed),
        ),
        "text_search": (
            "dataset, query, k := 10, filter := NULL",
            "TABLE " + _unnest(f"{UDF}({DATASET}, query, k, filter, NULL, 'text')", typed),
        ),
        "rrf": (
            f"dataset, query, k := 10, filter := NULL, rrf_k := {RRF_K}, vector_weight := 1.0, text_weight := 1.0",
            f"""TABLE
        WITH fused AS (
            SELECT coalesce(v.primary_key, t.primary_key) AS primary_key,
                   coalesce(CAST(vector_weight AS DOUBLE) / (rrf_k + v.rank), 0)
                     + coalesce(CAST(text_weight AS DOUBLE) / (rrf_k + t.rank), 0) AS fused_score,
                   v.score, v.distance, t.score AS text_score, v.rank AS vector_rank, t.rank AS text_rank,
                   coalesce(v.data, t.data) AS data{typed_fused}
            FROM vector_search(dataset, query, greatest(k, {HYBRID_DEPTH}), filter := filter) AS v
            FULL OUTER JOIN text_search(dataset, query, greatest(k, {HYBRID_DEPTH}), filter := filter) AS t
              ON v.primary_key = t.primary_key
        )
        SELECT CAST(row_number() OVER (
                   ORDER BY fused_score DESC, least(vector_rank, text_rank), text_rank IS NULL,
                            coalesce(text_rank, vector_rank)
               ) AS INTEGER) AS rank,
               primary_key, fused_score, score, distance, text_score, vector_rank, text_rank, data{typed_out}
        FROM fused
        ORDER BY rank
        LIMIT CASE
            WHEN k IS NULL OR k <= 0 THEN
                error('rrf: k must be a positive integer, got ' || coalesce(k::VARCHAR, 'NULL'))
            WHEN rrf_k IS NULL OR rrf_k < 0 THEN
                error('rrf: rrf_k must be 0 or more, got ' || coalesce(rrf_k::VARCHAR, 'NULL'))
            WHEN NOT (vector_weight >= 0 AND text_weight >= 0) THEN
                error('rrf: vector_weight and text_weight must be numbers >= 0, got '
                      || coalesce(vector_weight::VARCHAR, 'NULL') || ' and ' || coalesce(text_weight::VARCHAR, 'NULL'))
            ELSE k
        END""",
        ),
    }


def register(conn: duckdb.DuckDBPyConnection, home=None, spec_path=None, searcher=None) -> None:
    """Add ``quiver_search(...)`` (a list of hits), ``vector_search(...)``, ``text_search(...)``
    and ``rrf(...)`` (tables) to ``conn``.

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
        ["VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", "INTEGER", "VARCHAR"],
        duckdb.sqltype(RETURN_TYPE),
        type="arrow",
        null_handling="special",  # NULL filter/ef_search/mode mean "none"/the default; a NULL query gives NULL
    )
    names = _datasets(searcher)
    for name in names:
        _dataset_view(conn, name)
    for name, (args, body) in _macros(_typed_columns(searcher, names)).items():  # in order: rrf uses the two before it
        conn.execute(f"CREATE OR REPLACE TEMP MACRO {name}({args}) AS {body}")


def _datasets(searcher) -> list[str]:
    if searcher.datasets is not None:
        return list(searcher.datasets)
    return (
        sorted(p.name for p in Path(searcher.home).iterdir() if manifest_path(p).exists())
        if Path(searcher.home).is_dir()
        else []
    )


def _dataset_view(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """A TEMP view named after the dataset, so ``vector_search(products, ...)`` (Spice's form, a bare
    table name) and ``vector_search('products', ...)`` both find it. A table or view of the user's
    with that name is never shadowed: the dataset is then not searchable from this connection."""
    taken = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $1 AND NOT temporary "
        "UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = $1 AND NOT temporary",
        [name],
    ).fetchall()
    if any(count for (count,) in taken):
        log.warning(
            "quiver: this connection has its own table %r, so vector_search(%s, ...) reads it and not the dataset; "
            "use another connection to search the dataset",
            name,
            name,
        )
        return
    quoted = '"' + name.replace('"', '""') + '"'
    literal = "'" + name.replace("'", "''") + "'"
    conn.execute(f"CREATE OR REPLACE TEMP VIEW {quoted} AS SELECT {literal} AS {DATASET_COLUMN}")


def _typed_columns(searcher, names: list[str]) -> dict[str, str]:
    """Each built dataset's primary key and served columns with their DuckDB types, so the table
    macros return them as columns (``SELECT product_id, name, score FROM vector_search(...)``).
    A name two datasets type differently comes back as VARCHAR."""
    typed: dict[str, str] = {}
    probe = duckdb.connect()
    try:
        for dataset in names:
            try:
                reader = searcher.reader(dataset)
            except (IndexNotBuiltError, LookupError, ValueError):
                continue  # not built yet: register again once it is
            state = reader.state
            rows = next((t for t in (state.snap.rows if state.snap else None, state.delta_rows) if t is not None), None)
            if rows is None:
                continue
            wanted = [
                c
                for c in (reader.manifest.primary_key, *reader.served_columns)
                if c in rows.column_names and c not in RESERVED
            ]
            kinds = probe.from_arrow(rows.select(wanted).schema.empty_table()).types
            for column, kind in zip(wanted, kinds):
                typed[column] = str(kind) if typed.get(column, str(kind)) == str(kind) else "VARCHAR"
    finally:
        probe.close()
    return typed


def _searcher(home, spec_path):
    if home is None and spec_path is None:
        return default_searcher()
    return Searcher.for_spec(Path(home) if home is not None else default_home(), load_spec(spec_path))


def _batch_search(searcher):
    lock = threading.Lock()  # DuckDB may call from several threads; the reader refreshes between queries

    def search(datasets, queries, ks, filters, ef_searches, modes) -> pa.Array:
        # DuckDB hands over a chunk of rows at once: rows asking the same thing of the same dataset
        # become one search_batch, so their texts are embedded together.
        columns = [c.to_pylist() for c in (datasets, queries, ks, filters, ef_searches, modes)]
        out: list[list[dict] | None] = [None] * len(columns[0])
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (dataset, query, k, where, ef, mode) in enumerate(zip(*columns)):
            if dataset is not None and query is not None:
                groups[(dataset, k, where, ef, mode)].append(i)
        for (dataset, k, where, ef, mode), rows in groups.items():
            try:
                with lock:
                    table = searcher.search_batch(
                        dataset, [columns[1][i] for i in rows], k=k, where=where, ef_search=ef, mode=mode
                    )
            except (ValueError, LookupError, FileNotFoundError) as error:
                # A bad request. DuckDB wraps an exception raised here in "Python exception occurred
                # while executing the UDF" and frames; the macros raise this one-hit answer instead
                # with DuckDB's own error(), which prints the message alone.
                message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
                for row in rows:
                    out[row] = [{"rank": 0, "primary_key": str(message), "key_column": ERROR_MARK}]
                continue
            pk = table.column_names[1]  # query, then the primary key under its own name
            # The mode the searcher ran in: left to its default, hybrid or vector, told apart by the
            # first score column (hybrid's is fused_score, vector's score).
            scores = SCORES[mode or ("hybrid" if table.column_names[2] == "fused_score" else "vector")]
            for row in rows:
                out[row] = []
            for hit in table.to_pylist():
                hits = out[rows[hit.pop("query")]]
                found = {name: hit.pop(name) for name in scores}
                hits.append(
                    {
                        "rank": len(hits) + 1,
                        "primary_key": str(jsonable(hit.pop(pk))),
                        **{name: found.get(name) for name in HYBRID_COLUMNS},
                        "data": dumps(hit),
                        "key_column": pk,
                    }
                )
        return pa.array(out, type=pa.list_(HIT))

    return search
