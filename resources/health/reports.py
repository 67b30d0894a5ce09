"""What a materialization wrote, for its metadata: bytes on disk, segment and change previews. No Dagster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from quiver.resources.index import commitlog
from quiver.resources.values import md_table, short_text
from quiver.resources.warehouse import TEXT, VECTOR, ChangePlan


def preview_md(table: pa.Table | None, limit: int = 5, width: int = 60, total: int | None = None) -> str:
    """The first ``limit`` rows of a table as markdown, long strings cut to ``width`` characters;
    ``total``: the rows the table previews (when it holds only the first ones)."""
    if table is None or table.num_rows == 0:
        return "_no rows_"
    rows = []
    for record in table.slice(0, limit).to_pylist():
        rows.append([short_text(v, width) for v in record.values()])
    total = table.num_rows if total is None else total
    more = f"\n\n_{total - min(limit, table.num_rows):,} more_" if total > min(limit, table.num_rows) else ""
    return md_table(table.column_names, rows) + more


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile (a snapshot's cleanup)
                continue
    return total


def duckdb_bytes(database: Path) -> int:
    """The DuckDB file and its write-ahead log."""
    database = Path(database)
    return path_bytes(database) + path_bytes(database.with_name(database.name + ".wal"))


def raw_vector_bytes(vectors: int, dim: int) -> int:
    """What the vectors alone take as float32: the floor any storage of them is measured against."""
    return int(vectors) * int(dim) * 4


@dataclass(frozen=True)
class SegmentSummary:
    upserts: int
    deletes: int
    preview: pa.Table | None  # the first rows without vectors: seq, op, key, primary key, served columns

    @property
    def records(self) -> int:
        return self.upserts + self.deletes


def segment_summary(path: Path, limit: int = 5) -> SegmentSummary:
    """Counts by op and the first rows of one commit-log segment, read without its vectors."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    ops = file.read(columns=[commitlog.OP]).column(commitlog.OP)
    deletes = int(pc.sum(pc.equal(ops, commitlog.OP_DELETE)).as_py() or 0)
    names = [n for n in file.schema_arrow.names if n != VECTOR]
    first = next(file.iter_batches(batch_size=limit, columns=names), None)
    preview = pa.Table.from_batches([first]) if first is not None else None
    return SegmentSummary(upserts=len(ops) - deletes, deletes=deletes, preview=preview)


def change_preview(
    plan: ChangePlan, primary_key: str, embedded: pa.Table | None = None, limit: int = 5, width: int = 60
) -> pa.Table:
    """Up to ``limit`` rows of what a refresh changes: embedded (new or changed text), served
    columns only, deleted; with the primary key, and the embedded text where ``embedded`` (the
    first rows embedded: primary key and ``_text``) has it."""
    texts = dict(zip(embedded.column(primary_key).to_pylist(), embedded.column(TEXT).to_pylist())) if embedded else {}
    rows: list[dict] = []
    parts = (
        ("embedded", plan.to_embed, True),
        ("served columns only", plan.served_only, False),
        ("deleted", plan.deleted, False),
    )
    for change, table, has_text in parts:
        for key in table.column(primary_key).slice(0, max(0, limit - len(rows))).to_pylist():
            rows.append({"change": change, primary_key: key, "text": short_text(texts.get(key, ""), width) if has_text else ""})
    return pa.Table.from_pylist(rows) if rows else pa.table({"change": [], primary_key: [], "text": []})


def change_preview_md(plan: ChangePlan, primary_key: str, embedded: pa.Table | None = None, limit: int = 5) -> str:
    """``change_preview`` as markdown, with how many more changes there are."""
    total = plan.to_embed.num_rows + plan.served_only.num_rows + plan.deleted.num_rows
    if total == 0:
        return "_no change_"
    return preview_md(change_preview(plan, primary_key, embedded, limit), limit, total=total)
