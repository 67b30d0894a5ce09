"""DuckDB statements: the system of record for rows, embeddings and change records. No Dagster.

Tables per dataset ``<ds>`` (identifiers come validated from the spec and are quoted here; values
are bound as parameters):

    <ds>_rows        the source as last read: primary key + served columns + embedded columns
    <ds>_keys        primary key -> ``_key`` UBIGINT, given on first sight and never reused, so an
                     updated (or deleted and re-added) row keeps its usearch key
    <ds>_embeddings  primary key, ``_key``, ``_seq`` (the seq of the row's latest change),
                     ``_content_hash`` (md5 of model identity + NUL + the embedded text),
                     ``_served_hash`` (md5 of the served columns), ``_vector`` FLOAT[dim], served columns
    <ds>_changes     one record per change (I1): ``_seq`` BIGINT (monotonic), ``_op`` upsert|delete,
                     ``_key``, primary key, ``_at`` — written in the same transaction as the change
    <ds>_rebuilds    one record per full rebuild: ``_seq`` (the first seq of the rebuilt state), ``_at``,
                     ``dim``, ``model``, ``rows``. A rebuild replaces ``<ds>_embeddings`` and
                     ``<ds>_changes`` in one transaction; seqs keep growing across it, so an index
                     whose log ends before ``_seq`` predates the rebuild (resources/rebuild.py)
    <ds>_watermark   append mode with a ``time_column``: ``time_column`` (its name) and ``watermark``
                     (the largest value read so far, in the column's own type); the next refresh
                     reads only rows above it

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

from resources.faults import kill_point

KEY, SEQ, OP, VECTOR = "_key", "_seq", "_op", "_vector"
CONTENT_HASH, SERVED_HASH, TEXT = "_content_hash", "_served_hash", "_text"
INTERNAL = (KEY, SEQ, OP, VECTOR, CONTENT_HASH, SERVED_HASH)


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


def _columns(conn: duckdb.DuckDBPyConnection, relation: str, params: list | None = None) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE {relation}", params).fetchall()}


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
        source_columns = _columns(conn, f"SELECT * FROM {source}", [files])
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
    return table_exists(conn, table) and list(_columns(conn, table).items()) == list(_columns(conn, select).items())


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
REBUILD_FIX = "ask for a full rebuild: run the embeddings asset with the run config `full_rebuild: true`"


@dataclass
class ChangePlan:
    """What one refresh must change, decided under a connection, applied under another."""

    base_seq: int  # the last seq when planned; commit refuses if it moved
    served: tuple[str, ...]
    to_embed: pa.Table  # pk, _text, _content_hash, _served_hash, served columns
    served_only: pa.Table  # pk, _content_hash, _served_hash, served columns (vector kept)
    deleted: pa.Table  # pk
    model: str = ""  # the model identity hashed into every content hash
    vector_dim: int | None = None  # the embedded table's dimension when planned; None before the first
    rebuild: bool = False  # replace the embedded state whole (see commit_changes)
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


def last_rebuild_seq(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int:
    """The first seq of the state the last full rebuild wrote; 0 if there was none.

    An index whose log ends below it was built from the replaced state and must be rebuilt too.
    """
    if not table_exists(conn, layout.rebuilds):
        return 0
    return conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {layout.rebuilds}").fetchone()[0]


def plan_changes(
    conn: duckdb.DuckDBPyConnection, layout: TableLayout, model_identity: str, full_rebuild: bool = False
) -> ChangePlan:
    """Diff ``<ds>_rows`` against ``<ds>_embeddings`` by primary key and content hash.

    ``full_rebuild``: every row with text is embedded again (rows embedded before count as
    changed, in either refresh mode) and the commit replaces the embedded state whole.
    """
    if not table_exists(conn, layout.rows):
        raise WarehouseError(f"dataset {layout.dataset!r}: table {layout.rows} does not exist; materialize the rows asset first")
    pk = q(layout.primary_key)
    served = tuple(c for c in (layout.served_columns or _columns(conn, layout.rows)) if c != layout.primary_key)
    # A blank column contributes nothing (no dangling separator); all blank means no text.
    texts = [f"CASE WHEN trim({q(c)}) = '' THEN NULL ELSE {q(c)} END" for c in layout.text_columns]
    text_expr = texts[0] if len(texts) == 1 else f"concat_ws($separator, {', '.join(texts)})"
    params = {"model": model_identity} | ({"separator": layout.separator} if len(texts) > 1 else {})
    served_list = ", ".join(q(c) for c in served)
    served_hash = f"md5(CAST(struct_pack({served_list}) AS VARCHAR))" if served else "md5('')"
    conn.execute(  # named parameters: the model and the separator must never swap places
        f"""CREATE OR REPLACE TEMP TABLE _src AS
            SELECT {pk}, t.{TEXT}, md5($model || chr(0) || t.{TEXT}) AS {CONTENT_HASH}, {served_hash} AS {SERVED_HASH}
                   {', ' + served_list if served else ''}
            FROM (SELECT *, {text_expr} AS {TEXT} FROM {layout.rows}) t""",
        params,
    )
    skipped = conn.execute(f"SELECT {pk} FROM _src WHERE {TEXT} IS NULL OR trim({TEXT}) = '' ORDER BY 1").fetchall()
    conn.execute(f"DELETE FROM _src WHERE {TEXT} IS NULL OR trim({TEXT}) = ''")
    rows_read = conn.execute(f"SELECT count(*) FROM {layout.rows}").fetchone()[0]
    served_cols = f", {served_list}" if served else ""
    if table_exists(conn, layout.embeddings):
        emb = layout.embeddings
        hashes_and_served = f"s.{CONTENT_HASH}, s.{SERVED_HASH}" + "".join(f", s.{q(c)}" for c in served)
        stale = "" if full_rebuild else f"WHERE e.{KEY} IS NULL OR s.{CONTENT_HASH} <> e.{CONTENT_HASH}"
        to_embed = _arrow(
            conn,
            f"SELECT s.{pk}, s.{TEXT}, {hashes_and_served}, e.{KEY} IS NULL AS _is_new FROM _src s LEFT JOIN {emb} e ON s.{pk} = e.{pk} {stale}",
        )
        served_only = None if full_rebuild else _arrow(
            conn,
            f"SELECT s.{pk}, {hashes_and_served} FROM _src s JOIN {emb} e ON s.{pk} = e.{pk} "
            f"WHERE s.{CONTENT_HASH} = e.{CONTENT_HASH} AND s.{SERVED_HASH} <> e.{SERVED_HASH}",
        )
        deleted = _arrow(conn, f"SELECT {pk} FROM {emb} WHERE {pk} NOT IN (SELECT {pk} FROM _src)")
    else:
        to_embed = _arrow(conn, f"SELECT {pk}, {TEXT}, {CONTENT_HASH}, {SERVED_HASH}{served_cols}, true AS _is_new FROM _src")
        served_only = None
        deleted = to_embed.select([layout.primary_key]).slice(0, 0)
    if served_only is None:  # nothing embedded yet, or a rebuild embeds every row anyway
        served_only = to_embed.select([layout.primary_key, CONTENT_HASH, SERVED_HASH, *served]).slice(0, 0)
    conn.execute("DROP TABLE _src")
    new = int(np.sum(to_embed.column("_is_new").to_numpy(zero_copy_only=False))) if to_embed.num_rows else 0
    if layout.refresh_mode == "append" and not full_rebuild:  # append: known keys are never touched, nothing leaves
        to_embed = to_embed.filter(to_embed.column("_is_new"))
        served_only, deleted = served_only.slice(0, 0), deleted.slice(0, 0)
    return ChangePlan(
        base_seq=last_seq(conn, layout),
        served=served,
        to_embed=to_embed.drop_columns(["_is_new"]),
        served_only=served_only,
        deleted=deleted,
        model=model_identity,
        vector_dim=vector_dim(conn, layout),
        rebuild=full_rebuild,
        rows_read=rows_read,
        new=new,
        changed=to_embed.num_rows - new,
        unchanged=rows_read - len(skipped) - to_embed.num_rows - served_only.num_rows,
        skipped_empty=len(skipped),
        skipped_examples=[row[0] for row in skipped[:5]],
    )


def require_dimension(layout: TableLayout, plan: ChangePlan, model_dim: int, fix: str = REBUILD_FIX) -> None:
    """Refuse vectors of another dimension than the embedded table's unless the plan rebuilds (I6).

    Called before embedding, so a model change fails in seconds, not after hours of work.
    """
    if plan.rebuild or plan.vector_dim is None or plan.vector_dim == model_dim:
        return
    raise DimensionMismatchError(_dimension_message(layout, plan.model, model_dim, plan.vector_dim, fix))


def _dimension_message(layout: TableLayout, model: str, got: int, held: int, fix: str) -> str:
    return (
        f"dataset {layout.dataset!r}: model {model!r} gives {got}-dimensional vectors but {layout.embeddings} "
        f"(and the index built from it) holds {held}-dimensional ones. Vectors of different dimensions are "
        f"never mixed, so a plain refresh cannot switch models; {fix}"
    )


def describe_refresh(plan: ChangePlan, committed: CommitResult | None) -> str:
    """One line for people: what the refresh found and what it committed."""
    if committed is None:
        return f"no change: {plan.rows_read} rows read, {plan.unchanged} unchanged, {plan.skipped_empty} skipped (empty text); nothing committed"
    kind = "full rebuild" if plan.rebuild else "refresh"
    return (
        f"{kind}: {plan.rows_read} rows read; {plan.new} new, {plan.changed} changed, "
        f"{plan.served_only.num_rows} served columns only, {plan.deleted.num_rows} deleted, {plan.unchanged} unchanged, "
        f"{plan.skipped_empty} skipped (empty text); embedded {plan.to_embed.num_rows}; "
        f"committed seq {committed.first_seq}..{committed.last_seq}"
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
    """Apply a plan and its change records in one DuckDB transaction (I1). None if no change.

    A rebuild plan replaces ``<ds>_embeddings`` and ``<ds>_changes`` in that same transaction: the
    new tables hold only the rebuilt state (at the new dimension), an upsert per embedded row and a
    delete per row that left, with seqs after the old last seq; ``<ds>_rebuilds`` records where
    the rebuilt state starts. Keys are kept, so a primary key keeps its usearch key.
    """
    if plan.is_empty:
        return None
    pk = layout.primary_key
    dim = vectors.shape[1] if len(vectors) else plan.vector_dim
    incoming = plan.to_embed.drop_columns([TEXT])
    conn.execute("BEGIN")
    try:
        if last_seq(conn, layout) != plan.base_seq:
            raise ConcurrentWriteError(
                f"dataset {layout.dataset!r}: another writer committed changes since this refresh planned; run it again"
            )
        if plan.rebuild:
            conn.execute(f"DROP TABLE IF EXISTS {layout.embeddings}")
            conn.execute(f"DROP TABLE IF EXISTS {layout.changes}")
        dim = _ensure_tables(conn, layout, plan.served, dim)
        if len(vectors) and vectors.shape[1] != dim:
            raise DimensionMismatchError(_dimension_message(layout, plan.model, vectors.shape[1], dim, REBUILD_FIX))
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
        if plan.rebuild:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {layout.rebuilds} ({SEQ} BIGINT, _at TIMESTAMPTZ, dim INTEGER, model VARCHAR, rows BIGINT)"
            )
            conn.execute(f"INSERT INTO {layout.rebuilds} VALUES (?, now(), ?, ?, ?)", [first, dim, plan.model, upserted])
        for name in ("_incoming", "_served_only", "_deleted"):
            conn.unregister(name)
        conn.execute("DROP TABLE _upserts")
        conn.execute("DROP TABLE _change")
        kill_point("refresh.in_transaction")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    kill_point("refresh.after_commit")
    return CommitResult(first_seq=first, last_seq=last, upserted=upserted, deleted=deleted)


def _ensure_tables(conn: duckdb.DuckDBPyConnection, layout: TableLayout, served: tuple[str, ...], dim: int | None) -> int:
    """Create the keys, embeddings and changes tables on first use (the keys table outlives a
    rebuild); returns the vector dimension."""
    pk = q(layout.primary_key)
    if not table_exists(conn, layout.embeddings):
        if dim is None:
            raise WarehouseError(f"dataset {layout.dataset!r}: no vectors yet to size {layout.embeddings}")
        served_sel = "".join(f", {q(c)}" for c in served)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {layout.keys} AS SELECT {pk}, 0::UBIGINT AS {KEY} FROM {layout.rows} LIMIT 0")
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
    # Every change record has a seq of its own and an embedded row carries its upsert's seq, so a
    # delete never matches a row: the join needs no condition on the op. (One made it a non-equi
    # join, 15x slower: 6.3 s against 0.4 s for 50,000 changes.) ``after`` is inlined, not bound:
    # duckdb 1.5 plans this query with a bound parameter 17x slower (8.4 s against 0.5 s).
    conn.execute("BEGIN")  # one snapshot of both tables
    try:
        last = conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {layout.changes}").fetchone()[0]
        table = _arrow(conn, 
            f"""WITH latest AS (
                    SELECT {SEQ}, {OP}, {KEY}, {pk} FROM {layout.changes} WHERE {SEQ} > {int(after)}
                    QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {SEQ} DESC) = 1)
                SELECT l.{SEQ}, l.{OP}, l.{KEY}, l.{pk}, e.{VECTOR}{''.join(f', e.{q(c)}' for c in served)}
                FROM latest l LEFT JOIN {layout.embeddings} e ON e.{KEY} = l.{KEY} AND e.{SEQ} = l.{SEQ}
                ORDER BY l.{SEQ}""",
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


def embedded_count(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int:
    """Rows in ``<ds>_embeddings`` (what the index holds once it caught up)."""
    if not table_exists(conn, layout.embeddings):
        return 0
    return conn.execute(f"SELECT count(*) FROM {layout.embeddings}").fetchone()[0]


def vector_dim(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int | None:
    """The dimension of ``<ds>_embeddings._vector``; None before the first embedding."""
    if not table_exists(conn, layout.embeddings):
        return None
    return int(_columns(conn, layout.embeddings)[VECTOR].split("[")[-1].rstrip("]"))
