"""DuckDB statements: the system of record for rows, embeddings and change records. No Dagster.

Tables per dataset ``<ds>`` (identifiers come validated from the spec and are quoted here; values
are bound with ``?``):

    <ds>_rows        the source as last read: primary key + served columns + embedded columns
    <ds>_keys        primary key -> ``_key`` UBIGINT, given on first sight and never reused, so an
                     updated (or deleted and re-added) row keeps its usearch key
    <ds>_embeddings  primary key, ``_key``, ``_seq`` (the seq of the row's latest change),
                     ``_content_hash`` (md5 of model identity + NUL + the embedded text),
                     ``_served_hash`` (md5 of the served columns), ``_vector`` FLOAT[dim], served columns
    <ds>_changes     one record per change (I1): ``_seq`` BIGINT (monotonic), ``_op`` upsert|delete,
                     ``_key``, primary key, ``_at`` — written in the same transaction as the change

The commit log is derived from these: the changes after a seq, one per key (its latest), joined
with the current embedded row for upserts.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

KEY, SEQ, OP, VECTOR = "_key", "_seq", "_op", "_vector"
CONTENT_HASH, SERVED_HASH, TEXT = "_content_hash", "_served_hash", "_text"
INTERNAL = (KEY, SEQ, OP, VECTOR, CONTENT_HASH, SERVED_HASH)


class WarehouseError(ValueError):
    """Bad source data or a state the warehouse refuses to write; nothing was committed."""


class SourceNotFoundError(WarehouseError, FileNotFoundError):
    pass


class ConcurrentWriteError(WarehouseError, RuntimeError):
    pass


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


def table_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name.strip('"')]
        ).fetchone()[0]
    )


def _columns(conn: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE {relation}").fetchall()}


# -- source --------------------------------------------------------------------------------------
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
    rows_read: int
    rows_in_table: int
    columns: tuple[str, ...]


def load_source(conn: duckdb.DuckDBPyConnection, layout: TableLayout, files: list[str]) -> LoadResult:
    """Validate the source and replace (full) or extend (append) ``<ds>_rows`` in one transaction."""
    conn.execute("BEGIN")
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE _source AS SELECT * FROM read_parquet(?, union_by_name = true)", [files])
        source_columns = _columns(conn, "_source")
        _validate_source(conn, layout, source_columns)
        served = layout.served_columns or tuple(c for c in source_columns if c != layout.primary_key)
        keep = [layout.primary_key] + [c for c in dict.fromkeys([*served, *layout.text_columns]) if c != layout.primary_key]
        select = ", ".join(q(c) for c in keep)
        rows_read = conn.execute("SELECT count(*) FROM _source").fetchone()[0]
        if layout.refresh_mode == "append" and table_exists(conn, layout.rows):
            conn.execute(
                f"INSERT INTO {layout.rows} BY NAME SELECT {select} FROM _source s "
                f"WHERE s.{q(layout.primary_key)} NOT IN (SELECT {q(layout.primary_key)} FROM {layout.rows})"
            )
        else:
            conn.execute(f"CREATE OR REPLACE TABLE {layout.rows} AS SELECT {select} FROM _source")
        total = conn.execute(f"SELECT count(*) FROM {layout.rows}").fetchone()[0]
        conn.execute("DROP TABLE _source")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return LoadResult(rows_read=rows_read, rows_in_table=total, columns=tuple(keep))


def _validate_source(conn: duckdb.DuckDBPyConnection, layout: TableLayout, columns: dict[str, str]) -> None:
    ds, pk = layout.dataset, layout.primary_key
    available = ", ".join(columns)
    if pk not in columns:
        raise WarehouseError(f"dataset {ds!r}: primary key column {pk!r} is not in the source (columns: {available}); fix `primary_key`")
    for name in layout.text_columns:
        if name not in columns:
            raise WarehouseError(f"dataset {ds!r}: embedded column {name!r} is not in the source (columns: {available}); fix `embeddings`")
        if columns[name] != "VARCHAR":
            raise WarehouseError(f"dataset {ds!r}: embedded column {name!r} is {columns[name]}, not a string; embed a text column")
    for name in layout.served_columns or ():
        if name not in columns:
            raise WarehouseError(f"dataset {ds!r}: served column {name!r} is not in the source (columns: {available}); fix `columns`")
    clash = [c for c in columns if c in INTERNAL]
    if clash:
        raise WarehouseError(f"dataset {ds!r}: source columns {clash} use names quiver reserves; rename them in the source")
    nulls = conn.execute(f"SELECT count(*) FROM _source WHERE {q(pk)} IS NULL").fetchone()[0]
    if nulls:
        raise WarehouseError(f"dataset {ds!r}: {nulls} rows have a null primary key {pk!r}; every row needs one")
    dupes = conn.execute(
        f"SELECT {q(pk)}, count(*) AS n FROM _source GROUP BY ALL HAVING n > 1 ORDER BY n DESC, 1 LIMIT 5"
    ).fetchall()
    if dupes:
        shown = ", ".join(f"{value!r} ({n}x)" for value, n in dupes)
        raise WarehouseError(f"dataset {ds!r}: primary key {pk!r} is not unique: {shown}; make it unique in the source")


# -- the embedding diff --------------------------------------------------------------------------
@dataclass
class ChangePlan:
    """What one refresh must change, decided under a connection, applied under another."""

    base_seq: int  # the last seq when planned; commit refuses if it moved
    served: tuple[str, ...]
    to_embed: pa.Table  # pk, _text, _content_hash, _served_hash, served columns
    served_only: pa.Table  # pk, _content_hash, _served_hash, served columns (vector kept)
    deleted: pa.Table  # pk
    rows_read: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    skipped_empty: int = 0
    skipped_examples: list = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.to_embed.num_rows or self.served_only.num_rows or self.deleted.num_rows)


def last_seq(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int:
    if not table_exists(conn, layout.changes):
        return 0
    return conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {layout.changes}").fetchone()[0]


def plan_changes(conn: duckdb.DuckDBPyConnection, layout: TableLayout, model_identity: str) -> ChangePlan:
    """Diff ``<ds>_rows`` against ``<ds>_embeddings`` by primary key and content hash."""
    if not table_exists(conn, layout.rows):
        raise WarehouseError(f"dataset {layout.dataset!r}: table {layout.rows} does not exist; materialize the rows asset first")
    pk = q(layout.primary_key)
    served = tuple(c for c in (layout.served_columns or _columns(conn, layout.rows)) if c != layout.primary_key)
    # A blank column contributes nothing (no dangling separator); all blank means no text.
    texts = [f"CASE WHEN trim({q(c)}) = '' THEN NULL ELSE {q(c)} END" for c in layout.text_columns]
    text_expr = texts[0] if len(texts) == 1 else f"concat_ws(?, {', '.join(texts)})"
    params = [] if len(texts) == 1 else [layout.separator]
    served_list = ", ".join(q(c) for c in served)
    served_hash = f"md5(CAST(struct_pack({served_list}) AS VARCHAR))" if served else "md5('')"
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _src AS
            SELECT {pk}, t.{TEXT}, md5(? || chr(0) || t.{TEXT}) AS {CONTENT_HASH}, {served_hash} AS {SERVED_HASH}
                   {', ' + served_list if served else ''}
            FROM (SELECT *, {text_expr} AS {TEXT} FROM {layout.rows}) t""",
        [*params, model_identity],
    )
    skipped = conn.execute(f"SELECT {pk} FROM _src WHERE {TEXT} IS NULL OR trim({TEXT}) = '' ORDER BY 1").fetchall()
    conn.execute(f"DELETE FROM _src WHERE {TEXT} IS NULL OR trim({TEXT}) = ''")
    rows_read = conn.execute(f"SELECT count(*) FROM {layout.rows}").fetchone()[0]
    served_cols = f", {served_list}" if served else ""
    if table_exists(conn, layout.embeddings):
        emb = layout.embeddings
        hashes_and_served = f"s.{CONTENT_HASH}, s.{SERVED_HASH}" + "".join(f", s.{q(c)}" for c in served)
        to_embed = _arrow(
            conn,
            f"SELECT s.{pk}, s.{TEXT}, {hashes_and_served}, e.{KEY} IS NULL AS _is_new FROM _src s LEFT JOIN {emb} e ON s.{pk} = e.{pk} "
            f"WHERE e.{KEY} IS NULL OR s.{CONTENT_HASH} <> e.{CONTENT_HASH}",
        )
        served_only = _arrow(
            conn,
            f"SELECT s.{pk}, {hashes_and_served} FROM _src s JOIN {emb} e ON s.{pk} = e.{pk} "
            f"WHERE s.{CONTENT_HASH} = e.{CONTENT_HASH} AND s.{SERVED_HASH} <> e.{SERVED_HASH}",
        )
        deleted = _arrow(conn, f"SELECT {pk} FROM {emb} WHERE {pk} NOT IN (SELECT {pk} FROM _src)")
    else:
        to_embed = _arrow(conn, f"SELECT {pk}, {TEXT}, {CONTENT_HASH}, {SERVED_HASH}{served_cols}, true AS _is_new FROM _src")
        served_only = to_embed.select([layout.primary_key, CONTENT_HASH, SERVED_HASH, *served]).slice(0, 0)
        deleted = to_embed.select([layout.primary_key]).slice(0, 0)
    conn.execute("DROP TABLE _src")
    new = int(np.sum(to_embed.column("_is_new").to_numpy(zero_copy_only=False))) if to_embed.num_rows else 0
    if layout.refresh_mode == "append":  # append: known keys are never touched, nothing leaves
        to_embed = to_embed.filter(to_embed.column("_is_new"))
        served_only, deleted = served_only.slice(0, 0), deleted.slice(0, 0)
    return ChangePlan(
        base_seq=last_seq(conn, layout),
        served=served,
        to_embed=to_embed.drop_columns(["_is_new"]),
        served_only=served_only,
        deleted=deleted,
        rows_read=rows_read,
        new=new,
        changed=to_embed.num_rows - new,
        unchanged=rows_read - len(skipped) - to_embed.num_rows - served_only.num_rows,
        skipped_empty=len(skipped),
        skipped_examples=[row[0] for row in skipped[:5]],
    )


def _arrow(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    return conn.sql(sql, params=params).to_arrow_table()


@dataclass(frozen=True)
class CommitResult:
    first_seq: int
    last_seq: int
    upserted: int
    deleted: int


def commit_changes(
    conn: duckdb.DuckDBPyConnection, layout: TableLayout, plan: ChangePlan, vectors: np.ndarray
) -> CommitResult | None:
    """Apply a plan and its change records in one DuckDB transaction (I1). None if no change."""
    if plan.is_empty:
        return None
    pk = layout.primary_key
    dim = vectors.shape[1] if len(vectors) else None
    incoming = plan.to_embed.drop_columns([TEXT])
    conn.execute("BEGIN")
    try:
        if last_seq(conn, layout) != plan.base_seq:
            raise ConcurrentWriteError(
                f"dataset {layout.dataset!r}: another writer committed changes since this refresh planned; run it again"
            )
        dim = _ensure_tables(conn, layout, plan.served, dim)
        if len(vectors) and vectors.shape[1] != dim:
            raise WarehouseError(
                f"dataset {layout.dataset!r}: the model gives {vectors.shape[1]}-dimensional vectors but "
                f"{layout.embeddings} holds {dim}-dimensional ones; a different model needs a full rebuild "
                f"(drop the dataset's tables and index directory, then materialize again)"
            )
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        incoming = incoming.append_column(VECTOR, pa.FixedSizeListArray.from_arrays(flat, dim))
        conn.register("_incoming", incoming)
        conn.register("_served_only", plan.served_only)
        conn.register("_deleted", plan.deleted)
        served_sel = "".join(f", {q(c)}" for c in plan.served)
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _upserts AS
                SELECT {q(pk)}, {CONTENT_HASH}, {SERVED_HASH}, {VECTOR}{served_sel} FROM _incoming
                UNION ALL BY NAME
                SELECT s.{q(pk)}, s.{CONTENT_HASH}, s.{SERVED_HASH}, e.{VECTOR}{''.join(f', s.{q(c)}' for c in plan.served)}
                FROM _served_only s JOIN {layout.embeddings} e USING ({q(pk)})"""
        )
        next_key = conn.execute(f"SELECT coalesce(max({KEY}), 0) FROM {layout.keys}").fetchone()[0]
        conn.execute(
            f"INSERT INTO {layout.keys} SELECT {q(pk)}, ?::UBIGINT + row_number() OVER (ORDER BY {q(pk)}) "
            f"FROM _upserts WHERE {q(pk)} NOT IN (SELECT {q(pk)} FROM {layout.keys})",
            [next_key],
        )
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _change AS
                SELECT ?::BIGINT + row_number() OVER (ORDER BY _op DESC, {q(pk)}) AS {SEQ}, c.*, k.{KEY}
                FROM (SELECT {q(pk)}, 'upsert' AS _op FROM _upserts UNION ALL SELECT {q(pk)}, 'delete' FROM _deleted) c
                JOIN {layout.keys} k USING ({q(pk)})""",
            [plan.base_seq],
        )
        conn.execute(
            f"INSERT INTO {layout.changes} ({SEQ}, {OP}, {KEY}, {q(pk)}, _at) "
            f"SELECT {SEQ}, _op, {KEY}, {q(pk)}, now() FROM _change"
        )
        conn.execute(f"DELETE FROM {layout.embeddings} WHERE {q(pk)} IN (SELECT {q(pk)} FROM _change)")
        conn.execute(
            f"INSERT INTO {layout.embeddings} BY NAME SELECT u.*, c.{KEY}, c.{SEQ} FROM _upserts u JOIN _change c USING ({q(pk)})"
        )
        first, last, upserted, deleted = conn.execute(
            f"SELECT min({SEQ}), max({SEQ}), count(*) FILTER (_op = 'upsert'), count(*) FILTER (_op = 'delete') FROM _change"
        ).fetchone()
        for name in ("_incoming", "_served_only", "_deleted"):
            conn.unregister(name)
        conn.execute("DROP TABLE _upserts")
        conn.execute("DROP TABLE _change")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return CommitResult(first_seq=first, last_seq=last, upserted=upserted, deleted=deleted)


def _ensure_tables(conn: duckdb.DuckDBPyConnection, layout: TableLayout, served: tuple[str, ...], dim: int | None) -> int:
    """Create the keys, embeddings and changes tables on first use; returns the vector dimension."""
    pk = q(layout.primary_key)
    if not table_exists(conn, layout.embeddings):
        if dim is None:
            raise WarehouseError(f"dataset {layout.dataset!r}: no vectors yet to size {layout.embeddings}")
        served_sel = "".join(f", {q(c)}" for c in served)
        conn.execute(f"CREATE TABLE {layout.keys} AS SELECT {pk}, 0::UBIGINT AS {KEY} FROM {layout.rows} LIMIT 0")
        conn.execute(
            f"CREATE TABLE {layout.embeddings} AS SELECT {pk}, 0::UBIGINT AS {KEY}, 0::BIGINT AS {SEQ}, "
            f"''::VARCHAR AS {CONTENT_HASH}, ''::VARCHAR AS {SERVED_HASH}, NULL::FLOAT[{int(dim)}] AS {VECTOR}"
            f"{served_sel} FROM {layout.rows} LIMIT 0"
        )
        conn.execute(
            f"CREATE TABLE {layout.changes} AS SELECT 0::BIGINT AS {SEQ}, ''::VARCHAR AS {OP}, 0::UBIGINT AS {KEY}, "
            f"{pk}, now()::TIMESTAMPTZ AS _at FROM {layout.rows} LIMIT 0"
        )
        return int(dim)
    existing = _columns(conn, layout.embeddings)
    rows_types = _columns(conn, layout.rows)
    for name in served:  # a served column added to the spec later
        if name not in existing:
            conn.execute(f"ALTER TABLE {layout.embeddings} ADD COLUMN {q(name)} {rows_types[name]}")
    return vector_dim(conn, layout)


# -- reading for the log and for checks -----------------------------------------------------------
def changes_after(conn: duckdb.DuckDBPyConnection, layout: TableLayout, after: int, served: tuple[str, ...] | None = None) -> tuple[pa.Table | None, int]:
    """Changes with seq > ``after`` in the commit-log format, one per key, and the last seq."""
    if not table_exists(conn, layout.changes):
        return None, 0
    pk = q(layout.primary_key)
    if served is None:
        served = tuple(c for c in _columns(conn, layout.embeddings) if c not in INTERNAL and c != layout.primary_key)
    conn.execute("BEGIN")  # one snapshot of both tables
    try:
        last = conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {layout.changes}").fetchone()[0]
        table = _arrow(conn, 
            f"""WITH latest AS (
                    SELECT {SEQ}, {OP}, {KEY}, {pk} FROM {layout.changes} WHERE {SEQ} > ?
                    QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {SEQ} DESC) = 1)
                SELECT l.{SEQ}, l.{OP}, l.{KEY}, l.{pk}, e.{VECTOR}{''.join(f', e.{q(c)}' for c in served)}
                FROM latest l LEFT JOIN {layout.embeddings} e ON l.{OP} = 'upsert' AND e.{KEY} = l.{KEY} AND e.{SEQ} = l.{SEQ}
                ORDER BY l.{SEQ}""",
            [after],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if table.num_rows == 0:
        return None, last
    missing = table.filter(pa.compute.and_(pa.compute.equal(table.column(OP), "upsert"), pa.compute.is_null(table.column(VECTOR))))
    if missing.num_rows:
        raise WarehouseError(
            f"dataset {layout.dataset!r}: {missing.num_rows} upsert change records have no embedded row "
            f"(e.g. seq {missing.column(SEQ)[0]}); the embeddings table and its change records disagree"
        )
    return table, last


def embedded_state(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> pa.Table:
    """Every embedded row (key, pk, vector, served columns), ordered by key: what the index must equal."""
    return _arrow(conn, f"SELECT * EXCLUDE ({SEQ}, {CONTENT_HASH}, {SERVED_HASH}) FROM {layout.embeddings} ORDER BY {KEY}")


def vector_dim(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int | None:
    """The dimension of ``<ds>_embeddings._vector``; None before the first embedding."""
    if not table_exists(conn, layout.embeddings):
        return None
    return int(_columns(conn, layout.embeddings)[VECTOR].split("[")[-1].rstrip("]"))
