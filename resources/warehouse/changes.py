"""The embedding diff and the change records (I1): plan, commit in one transaction, read back for the log.

Tables: ``<ds>_keys``, ``<ds>_embeddings``, ``<ds>_changes`` and ``<ds>_rebuilds`` (see
``warehouse.layout``). The commit log is derived from these: the changes after a seq, one per key
(its latest), joined with the current embedded row for upserts. No Dagster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from quiver.resources.faults import kill_point
from quiver.resources.index.commitlog import CHUNK, CHUNK_COLUMNS, CHUNK_END, CHUNK_START
from quiver.resources.warehouse.layout import (
    CONTENT_HASH,
    INTERNAL,
    KEY,
    OP,
    SEQ,
    SERVED_HASH,
    TEXT,
    VECTOR,
    ConcurrentWriteError,
    DimensionMismatchError,
    TableLayout,
    WarehouseError,
    columns_of,
    q,
    table_exists,
)

ROWID = "_rowid"  # a row's place in <ds>_rows, carried by plans to read their rows back cheaply
REBUILD_FIX = "ask for a full rebuild: run the embeddings asset with the run config `full_rebuild: true`"


@dataclass
class ChangePlan:
    """What one refresh must change, decided under a connection, applied under others.

    The plan holds keys, not rows: ``read_rows`` fetches a batch's text and served columns when it
    is embedded, so a refresh holds one batch of text at a time, whatever the table's size.
    """

    base_seq: int  # the last seq when planned; commit refuses if it moved
    served: tuple[str, ...]
    to_embed: pa.Table  # pk, _rowid: rows whose text is new or changed, in <ds>_rows order
    served_only: pa.Table  # pk, _rowid: rows whose served columns alone changed (vectors kept), same order
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
    changed, in either refresh mode) and the commit replaces the embedded state whole. The plan
    holds keys and rowids only (about 16 bytes a row); the hashes stay in DuckDB.
    """
    if not table_exists(conn, layout.rows):
        raise WarehouseError(f"dataset {layout.dataset!r}: table {layout.rows} does not exist; materialize the rows asset first")
    pk = q(layout.primary_key)
    served = served_columns(conn, layout)
    select, params = _row_select(layout, served, model=model_identity, hashes_only=True)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _src AS {select}", params)
    skipped = conn.execute(f"SELECT count(*) FROM _src WHERE {CONTENT_HASH} IS NULL").fetchone()[0]
    examples = conn.execute(f"SELECT {pk} FROM _src WHERE {CONTENT_HASH} IS NULL ORDER BY 1 LIMIT 5").fetchall()
    conn.execute(f"DELETE FROM _src WHERE {CONTENT_HASH} IS NULL")
    rows_read = conn.execute(f"SELECT count(*) FROM {layout.rows}").fetchone()[0]
    if table_exists(conn, layout.embeddings):
        emb = layout.embeddings  # one row per chunk; the hashes are per row, the same on every chunk
        if CHUNK in columns_of(conn, emb):  # (a table from before chunking has one per row already)
            emb = f"(SELECT * FROM {emb} WHERE {CHUNK} = 0)"
        stale = "" if full_rebuild else f"WHERE e.{KEY} IS NULL OR s.{CONTENT_HASH} <> e.{CONTENT_HASH}"
        to_embed = _arrow(
            conn,
            f"SELECT s.{pk}, s.{ROWID}, e.{KEY} IS NULL AS _is_new FROM _src s LEFT JOIN {emb} e ON s.{pk} = e.{pk} "
            f"{stale} ORDER BY s.{ROWID}",
        )
        served_only = None if full_rebuild else _arrow(
            conn,
            f"SELECT s.{pk}, s.{ROWID} FROM _src s JOIN {emb} e ON s.{pk} = e.{pk} "
            f"WHERE s.{CONTENT_HASH} = e.{CONTENT_HASH} AND s.{SERVED_HASH} <> e.{SERVED_HASH} ORDER BY s.{ROWID}",
        )
        deleted = _arrow(conn, f"SELECT {pk} FROM {emb} WHERE {pk} NOT IN (SELECT {pk} FROM _src)")
    else:
        to_embed = _arrow(conn, f"SELECT {pk}, {ROWID}, true AS _is_new FROM _src ORDER BY {ROWID}")
        served_only = None
        deleted = to_embed.select([layout.primary_key]).slice(0, 0)
    if served_only is None:  # nothing embedded yet, or a rebuild embeds every row anyway
        served_only = to_embed.select([layout.primary_key, ROWID]).slice(0, 0)
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
        unchanged=rows_read - skipped - to_embed.num_rows - served_only.num_rows,
        skipped_empty=skipped,
        skipped_examples=[row[0] for row in examples],
    )


def served_columns(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> tuple[str, ...]:
    """The columns served beside each vector: the spec's, else every column of ``<ds>_rows``."""
    return tuple(c for c in (layout.served_columns or columns_of(conn, layout.rows)) if c != layout.primary_key)


def read_rows(conn: duckdb.DuckDBPyConnection, layout: TableLayout, plan: ChangePlan, keys: pa.Table) -> pa.Table:
    """The rows of ``keys`` (a slice of ``plan.to_embed`` or ``plan.served_only``) as they are now:
    primary key, embedded text, content and served hashes, served columns; in table order.

    The rowids bound the scan to the row groups that hold the batch (one batch of a million-row
    table reads a few row groups, not the table); keys not found there (rowids moved by a
    checkpoint's vacuum) are looked up in the whole table. A row that left ``<ds>_rows`` since the plan, or
    whose text became empty, is not returned: the next refresh deletes it. The hash is computed
    from the text returned, so what is embedded and what is recorded as embedded always agree.
    """
    if keys.num_rows == 0:
        select, params = _row_select(layout, plan.served, model=plan.model)
        return _arrow(conn, f"{select} LIMIT 0", params)
    rowids = keys.column(ROWID)
    low, high = pa.compute.min(rowids).as_py(), pa.compute.max(rowids).as_py()
    rows = _read_keys(conn, layout, plan, keys, f"rowid BETWEEN {int(low)} AND {int(high)}")
    if rows.num_rows < keys.num_rows:  # a checkpoint that vacuumed deleted rows moves rowids: look everywhere
        found = pa.compute.is_in(keys.column(layout.primary_key), value_set=rows.column(layout.primary_key))
        rest = keys.filter(pa.compute.invert(found))
        rows = pa.concat_tables([rows, _read_keys(conn, layout, plan, rest, None)])
    return rows.drop_columns([ROWID])


def _read_keys(conn, layout: TableLayout, plan: ChangePlan, keys: pa.Table, bound: str | None) -> pa.Table:
    in_keys = f"{q(layout.primary_key)} IN (SELECT {q(layout.primary_key)} FROM _wanted)"
    select, params = _row_select(layout, plan.served, model=plan.model, where=f"{bound} AND {in_keys}" if bound else in_keys)
    conn.register("_wanted", keys.select([layout.primary_key]))
    try:
        return _arrow(conn, f"SELECT * FROM ({select}) WHERE {CONTENT_HASH} IS NOT NULL ORDER BY {ROWID}", params)
    finally:
        conn.unregister("_wanted")


def _row_select(
    layout: TableLayout, served: tuple[str, ...], model: str = "", hashes_only: bool = False, where: str = ""
) -> tuple[str, dict]:
    """SQL over ``<ds>_rows``: primary key, rowid, the embedded text, its content hash (NULL when
    the text is empty: nothing to embed), the served hash and the served columns. ``hashes_only``
    leaves the text and the served columns out (the plan's pass over the whole table).

    The text is the embedded columns joined by the separator; a blank column contributes nothing
    (no dangling separator), all blank means no text. Named parameters: the model and the separator
    must never swap places.
    """
    texts = [f"CASE WHEN {_blank(q(c))} THEN NULL ELSE {q(c)} END" for c in layout.text_columns]
    text_expr = texts[0] if len(texts) == 1 else f"concat_ws($separator, {', '.join(texts)})"
    params = {"model": model} | ({"separator": layout.separator} if len(texts) > 1 else {})
    served_list = ", ".join(q(c) for c in served)
    served_hash = f"md5(CAST(struct_pack({served_list}) AS VARCHAR))" if served else "md5('')"
    content_hash = f"CASE WHEN {TEXT} IS NULL OR {_blank(TEXT)} THEN NULL ELSE md5($model || chr(0) || {TEXT}) END"
    text_and_served = "" if hashes_only else f", {TEXT}" + "".join(f", {q(c)}" for c in served)
    sql = (
        f"SELECT {q(layout.primary_key)}, {ROWID}, {content_hash} AS {CONTENT_HASH}, {served_hash} AS {SERVED_HASH}"
        f"{text_and_served} FROM (SELECT rowid AS {ROWID}, *, {text_expr} AS {TEXT} FROM {layout.rows}"
        f"{' WHERE ' + where if where else ''})"
    )
    return sql, params


def _blank(expression: str) -> str:
    """SQL: the text is empty or whitespace only (tabs and newlines too: a chunker finds nothing in it)."""
    return f"regexp_full_match({expression}, '\\s*')"


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


def describe_plan(plan: ChangePlan, batch_rows: int) -> str:
    """One line for people, before the work: what is already embedded and what is left to do. A
    rerun after a killed refresh says here how much the killed run had committed."""
    if plan.is_empty:
        return f"nothing changed: {plan.unchanged:,} of {plan.rows_read:,} rows already embedded"
    todo = plan.to_embed.num_rows
    batches = 1 if plan.rebuild else -(-todo // batch_rows)
    line = "full rebuild: embedding" if plan.rebuild else f"{plan.unchanged:,} of {plan.rows_read:,} rows already embedded; embedding"
    line += f" {todo:,} rows ({plan.new:,} new, {plan.changed:,} changed) in {batches:,} batch{'es' if batches != 1 else ''}"
    if plan.served_only.num_rows or plan.deleted.num_rows:
        line += f"; {plan.served_only.num_rows:,} with new served columns only, {plan.deleted.num_rows:,} deleted"
    return line


def describe_refresh(plan: ChangePlan, committed: CommitResult | None) -> str:
    """One line for people: what the refresh found and what it committed."""
    if committed is None:
        return f"nothing changed: {plan.rows_read} rows read, {plan.unchanged} unchanged, {plan.skipped_empty} skipped (empty text); nothing committed"
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


def whole_texts(rows: pa.Table, primary_key: str) -> pa.Table:
    """One chunk per row (``read_rows``' output), its whole text: the chunks when nothing is split."""
    lengths = pa.compute.utf8_length(rows.column(TEXT)).cast(pa.int32())
    return pa.table(
        {
            primary_key: rows.column(primary_key),
            CHUNK: pa.array(np.zeros(rows.num_rows, np.int32)),
            CHUNK_START: pa.array(np.zeros(rows.num_rows, np.int32)),
            CHUNK_END: lengths,
        }
    )


def commit_changes(
    conn: duckdb.DuckDBPyConnection,
    layout: TableLayout,
    plan: ChangePlan,
    rows: pa.Table,
    vectors: np.ndarray,
    chunks: pa.Table | None = None,
    on_commit: Callable[[duckdb.DuckDBPyConnection, int | None, int | None], None] | None = None,
) -> CommitResult | None:
    """Apply a plan (or a batch of one) and its change records in one DuckDB transaction (I1).
    None if no change.

    ``on_commit(conn, first_seq, last_seq)``, when given, runs inside that transaction after the
    change records are written, so what it writes commits with them or not at all (the fan-out's
    ledger of committed parts, ``embed_fanout.commit_parts``).

    ``rows``: what ``read_rows`` returned for ``plan.to_embed`` and was embedded; its hashes are
    recorded. ``chunks``: the primary key, ``_chunk``, ``_chunk_start`` and ``_chunk_end`` of every
    chunk of ``rows``, one per row of ``vectors`` (default: each row whole, ``whole_texts``). Rows
    in ``plan.served_only`` are read here, and only those whose text is still the one embedded get
    their new served columns (a text changed since the plan waits for the next refresh). A
    row's chunks are replaced whole: chunks it no longer has get a delete record in this same
    transaction, and a row that left takes all its chunks with it.

    A rebuild plan replaces ``<ds>_embeddings`` and ``<ds>_changes`` in that same transaction: the
    new tables hold only the rebuilt state (at the new dimension), an upsert per embedded row and a
    delete per row that left, with seqs after the old last seq; ``<ds>_rebuilds`` records where
    the rebuilt state starts. Keys are kept, so a primary key keeps its usearch key.
    """
    if plan.is_empty:
        return None
    pk = layout.primary_key
    dim = vectors.shape[1] if len(vectors) else plan.vector_dim
    chunks = whole_texts(rows, pk) if chunks is None else chunks.select([pk, *CHUNK_COLUMNS])
    if chunks.num_rows != len(vectors):
        raise ValueError(f"dataset {layout.dataset!r}: {chunks.num_rows} chunks but {len(vectors)} vectors")
    incoming = rows.drop_columns([TEXT])
    conn.execute("BEGIN")
    try:
        if last_seq(conn, layout) != plan.base_seq:
            raise ConcurrentWriteError(
                f"dataset {layout.dataset!r}: another writer committed changes since this refresh planned; run it again"
            )
        p = q(pk)
        conn.register("_incoming", incoming)
        conn.register("_served_only", read_rows(conn, layout, plan, plan.served_only).drop_columns([TEXT]))
        conn.register("_deleted", plan.deleted)
        _add_chunk_columns(conn, layout)
        touched = f"SELECT {p} FROM _deleted UNION ALL SELECT {p} FROM _incoming"
        conn.execute(  # the chunks the rows this commit replaces or deletes had before it (a rebuild drops them)
            f"CREATE OR REPLACE TEMP TABLE _before AS SELECT {p}, {CHUNK} FROM {layout.embeddings} WHERE {p} IN ({touched})"
            if table_exists(conn, layout.embeddings)
            else f"CREATE OR REPLACE TEMP TABLE _before AS SELECT {p}, 0::INTEGER AS {CHUNK} FROM _deleted LIMIT 0"
        )
        if plan.rebuild:
            conn.execute(f"DROP TABLE IF EXISTS {layout.embeddings}")
            conn.execute(f"DROP TABLE IF EXISTS {layout.changes}")
        dim = _ensure_tables(conn, layout, plan.served, dim)
        if len(vectors) and vectors.shape[1] != dim:
            raise DimensionMismatchError(_dimension_message(layout, plan.model, vectors.shape[1], dim, REBUILD_FIX))
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        conn.register("_chunks", chunks.append_column(VECTOR, pa.FixedSizeListArray.from_arrays(flat, dim)))
        chunk_sel = "".join(f", {c}" for c in CHUNK_COLUMNS)
        served_sel = "".join(f", s.{q(c)}" for c in plan.served)
        conn.execute(  # every chunk the rows touched have now: embedded ones, and kept ones with new served columns
            f"""CREATE OR REPLACE TEMP TABLE _upserts AS
                SELECT s.{p}, s.{CONTENT_HASH}, s.{SERVED_HASH}{chunk_sel}, c.{VECTOR}{served_sel}
                FROM _incoming s JOIN _chunks c USING ({p})
                UNION ALL BY NAME
                SELECT s.{p}, s.{CONTENT_HASH}, s.{SERVED_HASH}{''.join(f', e.{c}' for c in CHUNK_COLUMNS)}, e.{VECTOR}{served_sel}
                FROM _served_only s JOIN {layout.embeddings} e USING ({p}) WHERE s.{CONTENT_HASH} = e.{CONTENT_HASH}"""
        )
        conn.execute(  # chunks the rows had and no longer have, and every chunk of a row that left
            f"CREATE OR REPLACE TEMP TABLE _gone AS SELECT {p}, {CHUNK} FROM _before "
            f"EXCEPT SELECT {p}, {CHUNK} FROM _upserts"
        )
        next_key = conn.execute(f"SELECT coalesce(max({KEY}), 0) FROM {layout.keys}").fetchone()[0]
        conn.execute(
            f"INSERT INTO {layout.keys} ({p}, {CHUNK}, {KEY}) "
            f"SELECT {p}, {CHUNK}, ?::UBIGINT + row_number() OVER (ORDER BY {p}, {CHUNK}) FROM _upserts u "
            f"WHERE NOT EXISTS (SELECT 1 FROM {layout.keys} k WHERE k.{p} = u.{p} AND k.{CHUNK} = u.{CHUNK})",
            [next_key],
        )
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE _change AS
                SELECT ?::BIGINT + row_number() OVER (ORDER BY _op DESC, {p}, {CHUNK}) AS {SEQ}, c.*, k.{KEY}
                FROM (SELECT {p}, {CHUNK}, 'upsert' AS _op FROM _upserts
                      UNION ALL SELECT {p}, {CHUNK}, 'delete' FROM _gone) c
                JOIN {layout.keys} k USING ({p}, {CHUNK})""",
            [plan.base_seq],
        )
        conn.execute(
            f"INSERT INTO {layout.changes} ({SEQ}, {OP}, {KEY}, {p}, _at) "
            f"SELECT {SEQ}, _op, {KEY}, {p}, now() FROM _change"
        )
        conn.execute(f"DELETE FROM {layout.embeddings} WHERE {p} IN (SELECT {p} FROM _change)")
        conn.execute(
            f"INSERT INTO {layout.embeddings} BY NAME SELECT u.*, c.{KEY}, c.{SEQ} "
            f"FROM _upserts u JOIN _change c USING ({p}, {CHUNK})"
        )
        first, last, upserted, deleted = conn.execute(
            f"SELECT min({SEQ}), max({SEQ}), count(*) FILTER (_op = 'upsert'), count(*) FILTER (_op = 'delete') FROM _change"
        ).fetchone()
        if plan.rebuild:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {layout.rebuilds} ({SEQ} BIGINT, _at TIMESTAMPTZ, dim INTEGER, model VARCHAR, rows BIGINT)"
            )
            conn.execute(f"INSERT INTO {layout.rebuilds} VALUES (?, now(), ?, ?, ?)", [first, dim, plan.model, upserted])
        if on_commit is not None:
            on_commit(conn, first, last)
        for name in ("_incoming", "_chunks", "_served_only", "_deleted"):
            conn.unregister(name)
        conn.execute("DROP TABLE _upserts")
        conn.execute("DROP TABLE _gone")
        conn.execute("DROP TABLE _before")
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
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {layout.keys} AS SELECT {pk}, 0::UBIGINT AS {KEY}, 0::INTEGER AS {CHUNK} "
            f"FROM {layout.rows} LIMIT 0"
        )
        _add_chunk_columns(conn, layout)  # a keys table kept from before chunking (it outlives rebuilds)
        conn.execute(
            f"CREATE TABLE {layout.embeddings} AS SELECT {pk}, 0::INTEGER AS {CHUNK}, 0::INTEGER AS {CHUNK_START}, "
            f"0::INTEGER AS {CHUNK_END}, 0::UBIGINT AS {KEY}, 0::BIGINT AS {SEQ}, "
            f"''::VARCHAR AS {CONTENT_HASH}, ''::VARCHAR AS {SERVED_HASH}, NULL::FLOAT[{int(dim)}] AS {VECTOR}"
            f"{served_sel} FROM {layout.rows} LIMIT 0"
        )
        conn.execute(
            f"CREATE TABLE {layout.changes} AS SELECT 0::BIGINT AS {SEQ}, ''::VARCHAR AS {OP}, 0::UBIGINT AS {KEY}, "
            f"{pk}, now()::TIMESTAMPTZ AS _at FROM {layout.rows} LIMIT 0"
        )
        return int(dim)
    _add_chunk_columns(conn, layout)
    existing = columns_of(conn, layout.embeddings)
    rows_types = columns_of(conn, layout.rows)
    for name in served:  # a served column added to the spec later
        if name not in existing:
            conn.execute(f"ALTER TABLE {layout.embeddings} ADD COLUMN {q(name)} {rows_types[name]}")
    return vector_dim(conn, layout)


def _add_chunk_columns(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> None:
    """Tables written before chunking: every row is its chunk 0, the whole text (its end unknown
    here: NULL), and keeps its key."""
    if table_exists(conn, layout.keys) and CHUNK not in columns_of(conn, layout.keys):
        conn.execute(f"ALTER TABLE {layout.keys} ADD COLUMN {CHUNK} INTEGER DEFAULT 0")
    if table_exists(conn, layout.embeddings) and CHUNK not in columns_of(conn, layout.embeddings):
        conn.execute(f"ALTER TABLE {layout.embeddings} ADD COLUMN {CHUNK} INTEGER DEFAULT 0")
        conn.execute(f"ALTER TABLE {layout.embeddings} ADD COLUMN {CHUNK_START} INTEGER DEFAULT 0")
        conn.execute(f"ALTER TABLE {layout.embeddings} ADD COLUMN {CHUNK_END} INTEGER")


# -- reading for the log and for checks -----------------------------------------------------------
def changes_after(conn: duckdb.DuckDBPyConnection, layout: TableLayout, after: int, served: tuple[str, ...] | None = None) -> tuple[pa.Table | None, int]:
    """Changes with seq > ``after`` in the commit-log format, one per key, and the last seq."""
    if not table_exists(conn, layout.changes):
        return None, 0
    pk = q(layout.primary_key)
    if served is None:
        served = tuple(c for c in columns_of(conn, layout.embeddings) if c not in INTERNAL and c != layout.primary_key)
    # Every change record has a seq of its own and an embedded row carries its upsert's seq, so a
    # delete never matches a row: the join needs no condition on the op. (One made it a non-equi
    # join, 15x slower: 6.3 s against 0.4 s for 50,000 changes.) ``after`` is inlined, not bound:
    # duckdb 1.5 plans this query with a bound parameter 17x slower (8.4 s against 0.5 s).
    # a table from before chunking has none of the chunk columns yet: each row is its chunk 0, whole
    chunked = CHUNK in columns_of(conn, layout.embeddings)
    chunk_sel = "".join(f", e.{c}" if chunked else f", {'0' if c != CHUNK_END else 'NULL'}::INTEGER AS {c}" for c in CHUNK_COLUMNS)
    conn.execute("BEGIN")  # one snapshot of both tables
    try:
        last = conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {layout.changes}").fetchone()[0]
        table = _arrow(conn, 
            f"""WITH latest AS (
                    SELECT {SEQ}, {OP}, {KEY}, {pk} FROM {layout.changes} WHERE {SEQ} > {int(after)}
                    QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {SEQ} DESC) = 1)
                SELECT l.{SEQ}, l.{OP}, l.{KEY}, l.{pk}, e.{VECTOR}{chunk_sel}{''.join(f', e.{q(c)}' for c in served)}
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


def embedded_rows(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int:
    """Source rows that have an embedding (each with one chunk or more)."""
    if not table_exists(conn, layout.embeddings):
        return 0
    return conn.execute(f"SELECT count(DISTINCT {q(layout.primary_key)}) FROM {layout.embeddings}").fetchone()[0]


def embedded_count(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int:
    """Entries (chunks) in ``<ds>_embeddings``: what the index holds once it caught up."""
    if not table_exists(conn, layout.embeddings):
        return 0
    return conn.execute(f"SELECT count(*) FROM {layout.embeddings}").fetchone()[0]


def vector_dim(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> int | None:
    """The dimension of ``<ds>_embeddings._vector``; None before the first embedding."""
    if not table_exists(conn, layout.embeddings):
        return None
    return int(columns_of(conn, layout.embeddings)[VECTOR].split("[")[-1].rstrip("]"))
