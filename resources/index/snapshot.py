"""Snapshot directories: ``snapshots/<seq:020d>/`` holding

    index.usearch   the usearch HNSW index (keys = ``_key``), saved by usearch to a temp path only
    rows.parquet    ``_key`` (uint64, ascending) + the primary key + the served columns; no vectors
    text/           when the dataset has full-text search: the tantivy index of the same units
                    (``text_index``), written from the rows file's served columns with the
                    ``TextConfig`` the manifest's snapshot entry records; every file but tantivy's
                    empty lock files is in the manifest with its checksum

A snapshot at seq S holds the net effect of every change with seq <= S. The directory is built
under a temp name, fsynced whole and renamed into place (I3); it is never modified afterwards (I4).
Its files' sizes and XXH3-128 checksums go into the manifest. Opening checks, before usearch maps
or loads anything: the sizes, the checksums (``verify``, on by default: a damaged file must never
reach usearch's loader) and the usearch header (dimension, metric, dtype, count).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.resources.faults import kill_point
from quiver.resources.files import atomic_write, checksum_file
from quiver.resources.index.commitlog import KEY, OP, SEQ, VECTOR, upserts, vectors_of
from quiver.resources.index.errors import CorruptFileError
from quiver.resources.index.identity import (
    USEARCH_DTYPE,
    USEARCH_METRIC,
    HnswParams,
    IndexIdentity,
    add_to_graph,
    new_usearch_index,
)
from quiver.resources.index.manifest import FileEntry, SnapshotEntry, utc_now
from quiver.resources.index.text_index import TextConfig, TextIndex, unit_texts, update_text_index, write_text_index

SNAPSHOTS_DIR = "snapshots"
INDEX_FILE = "index.usearch"
ROWS_FILE = "rows.parquet"
TEXT_DIR = "text"
TANTIVY_LOCKS = (".tantivy-meta.lock", ".tantivy-writer.lock")  # empty, tantivy's own; never checksummed


def snapshot_dirname(seq: int, unique: str | None = None) -> str:
    """``snapshots/<seq:020d>``, or ``snapshots/<seq:020d>-<unique>`` where several writers may
    build the same seq (an index root on object storage: ``remote.py``)."""
    return f"{SNAPSHOTS_DIR}/{seq:020d}" + (f"-{unique}" if unique else "")


def snapshot_seq_of(dirname: str) -> int | None:
    """The seq a snapshot directory's name starts with; None for a name that is not one."""
    head = dirname.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass
class SnapshotData:
    """A snapshot in memory: the usearch index and its rows (sorted by ``_key``; None when empty)."""

    index: object  # usearch.index.Index
    rows: pa.Table | None
    text: TextIndex | None = None  # the snapshot's full-text index, when it has one
    text_config: dict | None = None  # what it was written with (TextConfig.to_dict())

    @property
    def vectors(self) -> int:
        return len(self.index)

    @property
    def tombstones(self) -> int:
        """Graph slots usearch still holds for removed keys (they cost memory and recall)."""
        return int(self.index.stats.nodes) - len(self.index)


def _check_header(path: Path, entry: SnapshotEntry, identity: IndexIdentity) -> None:
    from usearch.index import Index

    expected = entry.files[INDEX_FILE]
    size = path.stat().st_size
    if size != expected.bytes:
        raise CorruptFileError(f"{path} is {size} bytes, the manifest says {expected.bytes}: it is not served")
    meta = Index.metadata(str(path))
    if meta is None:
        raise CorruptFileError(f"{path} has no readable usearch header: it is not served")
    problems = []
    if meta["dimensions"] != identity.dim:
        problems.append(f"dimensions {meta['dimensions']} != {identity.dim}")
    if meta["kind_metric"].name.lower() != USEARCH_METRIC[identity.metric]:
        problems.append(f"metric {meta['kind_metric']} != {identity.metric}")
    if meta["kind_scalar"].name.lower() != USEARCH_DTYPE[identity.dtype]:
        problems.append(f"dtype {meta['kind_scalar']} != {identity.dtype}")
    if meta["count_present"] != entry.vectors:
        problems.append(f"vectors {meta['count_present']} != {entry.vectors}")
    if problems:
        raise CorruptFileError(f"{path} disagrees with the manifest ({'; '.join(problems)}): it is not served")


def open_snapshot(
    root: Path, entry: SnapshotEntry, identity: IndexIdentity, view: bool = True, verify: bool = True
) -> SnapshotData:
    """Open a published snapshot: memory-mapped (``view``) for serving, or loaded to be modified.

    Raises CorruptFileError (naming the file and what is wrong) if any check fails.
    """
    from usearch.index import Index

    directory = root / entry.dir
    index_path, rows_path = directory / INDEX_FILE, directory / ROWS_FILE
    if verify:
        verify_snapshot(root, entry)
    try:
        _check_header(index_path, entry, identity)
        rows_size = rows_path.stat().st_size
    except FileNotFoundError as error:
        raise CorruptFileError(f"snapshot file {error.filename} is missing: the snapshot is not served") from None
    if rows_size != entry.files[ROWS_FILE].bytes:
        raise CorruptFileError(
            f"{rows_path} is {rows_size} bytes, the manifest says {entry.files[ROWS_FILE].bytes}: it is not served"
        )
    try:
        index = Index.restore(str(index_path), view=view)
        # One chunk per column: a query's take() over a row group per chunk cost 1.5 ms at 1M rows, 0.02 ms over one.
        rows = pq.read_table(rows_path, page_checksum_verification=True).combine_chunks()
    except (OSError, RuntimeError, pa.ArrowException) as error:
        raise CorruptFileError(f"snapshot {directory} is unreadable ({error}): it is not served") from error
    if rows.num_rows != entry.vectors:
        raise CorruptFileError(f"{rows_path} has {rows.num_rows} rows, the manifest says {entry.vectors}")
    text = None
    if entry.text is not None:
        try:
            text = TextIndex.open(directory / TEXT_DIR, TextConfig.from_dict(entry.text).analyzer)
        except ValueError as error:  # tantivy raises ValueError for an index it cannot open
            raise CorruptFileError(f"snapshot text index {directory / TEXT_DIR} is unreadable ({error}): it is not served") from error
    return SnapshotData(index=index, rows=rows, text=text, text_config=entry.text)


def check_snapshot(root: Path, entry: SnapshotEntry, identity: IndexIdentity) -> None:
    """Every check ``open_snapshot`` makes, without mapping or loading the index."""
    verify_snapshot(root, entry)
    _check_header(root / entry.dir / INDEX_FILE, entry, identity)


def verify_snapshot(root: Path, entry: SnapshotEntry) -> None:
    """Check every file of a snapshot against the manifest's size and checksum."""
    for name, expected in entry.files.items():
        path = root / entry.dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptFileError(f"snapshot file {path} is missing: the snapshot is not served") from None
        if size != expected.bytes:
            raise CorruptFileError(f"{path} is {size} bytes, the manifest says {expected.bytes}: it is not served")
        digest = checksum_file(path)
        if digest != expected.checksum:
            raise CorruptFileError(
                f"{path} fails its checksum ({digest}, manifest {expected.checksum}): it is not served"
            )


def distinct_rows(root: Path, entry: SnapshotEntry, primary_key: str) -> int:
    """Source rows a published snapshot holds: a row split into chunks is several vectors, one row.
    Reads only the primary key column of the rows file."""
    keys = pq.read_table(root / entry.dir / ROWS_FILE, columns=[primary_key]).column(primary_key)
    return int(pc.count_distinct(keys).as_py())


def empty_snapshot(identity: IndexIdentity, params: HnswParams) -> SnapshotData:
    return SnapshotData(new_usearch_index(identity, params), rows=None)


def apply_changes(base: SnapshotData, folded: pa.Table, identity: IndexIdentity) -> SnapshotData:
    """Apply the net change per key (``commitlog.fold``) to a loaded (not viewed) snapshot."""
    changed_keys = folded.column(KEY).to_numpy()
    present = np.asarray(base.index.contains(changed_keys), dtype=bool).reshape(-1)
    if present.any():
        base.index.remove(changed_keys[present])
    added = upserts(folded)
    for batch in added.to_batches():  # chunk by chunk: no second copy of every vector at once
        if batch.num_rows:
            add_to_graph(base.index, batch.column(KEY).to_numpy(), vectors_of(batch, identity.dim))
    new_rows = added.drop_columns([SEQ, OP, VECTOR])
    if base.rows is not None:
        kept = base.rows.filter(pc.invert(pc.is_in(base.rows.column(KEY), value_set=folded.column(KEY))))
        new_rows = pa.concat_tables([kept, new_rows], promote_options="default")
    return SnapshotData(base.index, new_rows.sort_by(KEY))


def rebuild(data: SnapshotData, identity: IndexIdentity, params: HnswParams) -> SnapshotData:
    """A fresh graph over the live vectors only: drops every tombstone."""
    fresh = new_usearch_index(identity, params)
    if data.rows is not None and data.rows.num_rows:
        keys = data.rows.column(KEY).to_numpy()
        add_to_graph(fresh, keys, np.vstack(data.index.get(keys)).astype(np.float32, copy=False))
    return SnapshotData(fresh, data.rows)


@dataclass(frozen=True)
class TextBase:
    """The previous snapshot's text index and the keys changed since: the new one is that index
    less the changed keys plus their new units (``text_index.update_text_index``)."""

    directory: Path
    changed: np.ndarray  # uint64: every key the folded segments upsert or delete


def write_snapshot(
    root: Path,
    seq: int,
    data: SnapshotData,
    text: TextConfig | None = None,
    text_base: TextBase | None = None,
    dirname: str | None = None,
) -> SnapshotEntry:
    """Publish the snapshot directory for ``seq`` (not yet the manifest), with a text index of its
    units written with ``text`` when given: from ``text_base`` at the cost of the change, else
    from all the rows."""
    rows = data.rows
    if rows is None:
        raise ValueError("a snapshot needs a rows table; apply at least one segment first")

    def write(temp: Path) -> None:
        temp.mkdir(parents=True)
        data.index.save(str(temp / INDEX_FILE))  # usearch writes in place, hence only to a temp dir
        kill_point("snapshot.mid_write")
        pq.write_table(rows, temp / ROWS_FILE, compression="zstd", write_page_checksum=True)
        if text is None:
            return
        kill_point("snapshot.before_text")
        if text_base is None:
            write_text_index(temp / TEXT_DIR, rows.column(KEY).to_numpy(), unit_texts(rows, text), text.analyzer)
            return
        changed = pa.array(text_base.changed, pa.uint64())
        added = rows.filter(pc.is_in(rows.column(KEY), value_set=changed))
        update_text_index(
            temp / TEXT_DIR, text_base.directory, text_base.changed, added.column(KEY).to_numpy(),
            unit_texts(added, text), text.analyzer,
        )

    dirname = dirname or snapshot_dirname(seq)
    directory = atomic_write(root / dirname, write, label="snapshot")
    names = [INDEX_FILE, ROWS_FILE]
    if text is not None:
        names += sorted(
            f"{TEXT_DIR}/{path.name}" for path in (directory / TEXT_DIR).iterdir() if path.name not in TANTIVY_LOCKS
        )
    files = {
        name: FileEntry(bytes=(directory / name).stat().st_size, checksum=checksum_file(directory / name))
        for name in names
    }
    return SnapshotEntry(
        seq=seq,
        dir=dirname,
        files=files,
        vectors=data.vectors,
        tombstones=data.tombstones,
        created_at=utc_now(),
        text=text.to_dict() if text is not None else None,
    )
