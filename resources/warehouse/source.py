"""Reading the source Parquet into ``<ds>_rows``: resolve the files, validate, merge or append. No Dagster."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import duckdb

from quiver.resources.warehouse.layout import (
    INTERNAL,
    SourceNotFoundError,
    TableLayout,
    WarehouseError,
    columns_of,
    q,
    table_exists,
)


def resolve_source_files(dataset: str, path: Path) -> list[str]:
    """A Parquet file, a directory of them (recursively) or a glob; sorted; at least one."""
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
    elif any(ch in str(path) for ch in "*?["):
        files = sorted(glob.glob(str(path), recursive=True))
    else:
        files = [str(path)] if path.is_file() else []
    if not files:
        raise SourceNotFoundError(
            f"dataset {dataset!r}: no Parquet file at {path} (a file, a directory of .parquet files, "
            "or a glob). Fix `from:` in the dataset spec or create the file."
        )
    return files


@dataclass(frozen=True)
class LoadResult:
    rows_read: int  # rows read from the source (in append mode with a time column: above the watermark)
    rows_in_table: int
    columns: tuple[str, ...]
    watermark: object = None  # append mode with a time column: the largest time value read so far


def load_source(
    conn: duckdb.DuckDBPyConnection, layout: TableLayout, files: list[str], time_column: str | None = None
) -> LoadResult:
    """Validate the source and replace (full) or extend (append) ``<ds>_rows`` in one transaction.

    Full mode writes only the difference (``_merge_rows``) when the table's columns are unchanged,
    so a refresh that changes 1% of a table writes about 1% of it, not the whole table again.
    Append mode adds only primary keys the table does not hold yet; with ``time_column`` it reads
    only rows whose time is above the watermark (the largest time read by earlier refreshes).
    """
    append = layout.refresh_mode == "append" and table_exists(conn, layout.rows)
    time_column = time_column if layout.refresh_mode == "append" else None
    # DuckDB 1.5's external file cache served a source rewritten in place at the same size from its
    # old bytes ("Snappy decompression failure" on a connection that had read it before; a quieter
    # case would be stale rows). A refresh reads each file once: the cache buys nothing here.
    conn.execute("SET enable_external_file_cache = false")
    conn.execute("BEGIN")
    try:
        source = "read_parquet(?, union_by_name = true)"
        source_columns = columns_of(conn, f"SELECT * FROM {source}", [files])
        _validate_time_column(layout, source_columns, time_column)
        only_newer = append and _has_watermark(conn, layout, time_column)
        newer = f" WHERE {q(time_column)} > (SELECT watermark FROM {layout.watermark})" if only_newer else ""
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _source AS SELECT * FROM {source}{newer}", [files])
        _validate_source(conn, layout, source_columns)
        served = layout.served_columns or tuple(c for c in source_columns if c != layout.primary_key)
        keep = [layout.primary_key] + [c for c in dict.fromkeys([*served, *layout.text_columns]) if c != layout.primary_key]
        select = ", ".join(q(c) for c in keep)
        rows_read = conn.execute("SELECT count(*) FROM _source").fetchone()[0]
        if append:
            conn.execute(
                f"INSERT INTO {layout.rows} BY NAME SELECT {select} FROM _source s "
                f"WHERE s.{q(layout.primary_key)} NOT IN (SELECT {q(layout.primary_key)} FROM {layout.rows})"
            )
        elif _same_columns(conn, layout.rows, f"SELECT {select} FROM _source"):
            _merge_rows(conn, layout, keep)
        else:
            conn.execute(f"CREATE OR REPLACE TABLE {layout.rows} AS SELECT {select} FROM _source")
        watermark = _advance_watermark(conn, layout, time_column, only_newer) if time_column else None
        total = conn.execute(f"SELECT count(*) FROM {layout.rows}").fetchone()[0]
        conn.execute("DROP TABLE _source")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return LoadResult(rows_read=rows_read, rows_in_table=total, columns=tuple(keep), watermark=watermark)


def _same_columns(conn: duckdb.DuckDBPyConnection, table: str, select: str) -> bool:
    """``table`` exists with exactly the names and types, in order, that ``select`` gives."""
    return table_exists(conn, table) and list(columns_of(conn, table).items()) == list(columns_of(conn, select).items())


def _merge_rows(conn: duckdb.DuckDBPyConnection, layout: TableLayout, columns: list[str]) -> None:
    """Make ``<ds>_rows`` equal ``_source`` by deleting the rows that are gone or differ and
    inserting the new and changed ones: the rows that did not change are not written again."""
    pk = q(layout.primary_key)
    same = " AND ".join(f"s.{q(c)} IS NOT DISTINCT FROM r.{q(c)}" for c in columns)
    conn.execute(f"DELETE FROM {layout.rows} r WHERE NOT EXISTS (SELECT 1 FROM _source s WHERE {same})")
    select = ", ".join(f"s.{q(c)}" for c in columns)
    conn.execute(
        f"INSERT INTO {layout.rows} SELECT {select} FROM _source s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {layout.rows} r WHERE r.{pk} = s.{pk})"
    )


def _validate_time_column(layout: TableLayout, columns: dict[str, str], time_column: str | None) -> None:
    if time_column is not None and time_column not in columns:
        raise WarehouseError(
            f"dataset {layout.dataset!r}: time column {time_column!r} is not in the source "
            f"(columns: {', '.join(columns)}); fix `time_column`"
        )


def _has_watermark(conn: duckdb.DuckDBPyConnection, layout: TableLayout, time_column: str | None) -> bool:
    """A watermark of this very column (one left by another time column does not count)."""
    if time_column is None or not table_exists(conn, layout.watermark):
        return False
    row = conn.execute(f"SELECT time_column, watermark IS NOT NULL FROM {layout.watermark}").fetchone()
    return row is not None and row[0] == time_column and row[1]


def _advance_watermark(conn: duckdb.DuckDBPyConnection, layout: TableLayout, time_column: str, above: bool):
    """Keep the largest time read so far, in the column's own type; rows without a time never move it.

    ``above``: only rows above the old watermark were read, so their maximum (if any) is the new one.
    """
    read_max = f"(SELECT max({q(time_column)}) FROM _source)"
    if above:
        conn.execute(f"UPDATE {layout.watermark} SET watermark = coalesce({read_max}, watermark)")
    else:
        conn.execute(f"CREATE OR REPLACE TABLE {layout.watermark} AS SELECT ?::VARCHAR AS time_column, {read_max} AS watermark", [time_column])
    return conn.execute(f"SELECT watermark FROM {layout.watermark}").fetchone()[0]


def schema_problems(layout: TableLayout, columns: dict[str, str], time_column: str | None = None) -> list[str]:
    """What the source's columns (name -> DuckDB type) lack for the spec, one line per problem."""
    ds, pk = layout.dataset, layout.primary_key
    available = ", ".join(columns)
    problems = []
    if pk not in columns:
        problems.append(f"dataset {ds!r}: primary key column {pk!r} is not in the source (columns: {available}); fix `primary_key`")
    for name in layout.text_columns:
        if name not in columns:
            problems.append(f"dataset {ds!r}: embedded column {name!r} is not in the source (columns: {available}); fix `embeddings`")
        elif columns[name] != "VARCHAR":
            problems.append(f"dataset {ds!r}: embedded column {name!r} is {columns[name]}, not a string; embed a text column")
    for name in layout.served_columns or ():
        if name not in columns and name not in layout.text_columns:
            problems.append(f"dataset {ds!r}: served column {name!r} is not in the source (columns: {available}); fix `columns` (or `full_text.columns`)")
    if time_column is not None and time_column not in columns:
        problems.append(f"dataset {ds!r}: time_column {time_column!r} is not in the source (columns: {available}); fix `time_column`")
    clash = [c for c in columns if c in INTERNAL]
    if clash:
        problems.append(f"dataset {ds!r}: source columns {clash} use names quiver reserves; rename them in the source")
    return problems


def _validate_source(conn: duckdb.DuckDBPyConnection, layout: TableLayout, columns: dict[str, str]) -> None:
    ds, pk = layout.dataset, layout.primary_key
    problems = schema_problems(layout, columns)
    if problems:
        raise WarehouseError("; ".join(problems))
    nulls = conn.execute(f"SELECT count(*) FROM _source WHERE {q(pk)} IS NULL").fetchone()[0]
    if nulls:
        raise WarehouseError(f"dataset {ds!r}: {nulls} rows have a null primary key {pk!r}; every row needs one")
    dupes = conn.execute(
        f"SELECT {q(pk)}, count(*) AS n FROM _source GROUP BY ALL HAVING n > 1 ORDER BY n DESC, 1 LIMIT 5"
    ).fetchall()
    if dupes:
        shown = ", ".join(f"{value!r} ({n}x)" for value, n in dupes)
        raise WarehouseError(f"dataset {ds!r}: primary key {pk!r} is not unique: {shown}; make it unique in the source")
