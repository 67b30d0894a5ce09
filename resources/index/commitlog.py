"""The commit log: immutable Parquet segments under ``log/``.

Segment file ``log/<first:020d>-<last:020d>.parquet`` holds the changes with sequence numbers in
[first, last], one record per key (the latest in that range), sorted by ``_seq``:

    _seq      int64    sequence number of the change (I1: assigned in DuckDB)
    _op       string   "upsert" or "delete"
    _key      uint64   the usearch key of the row's primary key
    <pk>      any      the primary key, under its own column name
    _vector   fixed_size_list<float32>[dim]; null for a delete
    _chunk, _chunk_start, _chunk_end   int32: which chunk of the row's embedded text the key holds,
              and its [start, end) character offsets (chunk 0 of a row written before chunking
              existed has no such columns, or a null end: the whole text); null for a delete
    <served>  any      the served columns; null for a delete

Parquet key-value metadata: ``quiver.format_version``, ``quiver.first``, ``quiver.last``,
``quiver.records``, ``quiver.dim``, ``quiver.metric``, ``quiver.model``, and (version 2)
``quiver.body_checksum``: ``xxh3_128:<hex>`` of every byte before the footer. Pages also carry CRC
checksums, verified on read, but those do not cover page headers; the body checksum covers all of
it, which is what lets ``_vector`` be stored without a dictionary and byte-stream-split (about 20%
smaller than version 1's dictionary pages of unique floats). A reader checks the body checksum,
then that the name, the metadata and the records agree. Version 1 segments (no body checksum,
dictionary-encoded vectors) are still read.

A segment is written once (files.atomic_write) and never changed; a snapshot covering it lets the
store delete it (I7). ``fold`` turns any run of segments into the net change per key, which is
what both the snapshot writer and the reader apply.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.resources.faults import kill_point
from quiver.resources.files import HashingWriter, atomic_write, checksum_file
from quiver.resources.index.errors import CorruptFileError, SequenceError
from quiver.resources.index.identity import IndexIdentity

LOG_DIR = "log"
SEGMENT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
BODY_CHECKSUM = "quiver.body_checksum"
_FOOTER_TAIL = 8  # after the footer: its length (4 bytes, little endian) and b"PAR1"
OP_UPSERT = "upsert"
OP_DELETE = "delete"
SEQ, OP, KEY, VECTOR = "_seq", "_op", "_key", "_vector"
CHUNK, CHUNK_START, CHUNK_END = "_chunk", "_chunk_start", "_chunk_end"
CHUNK_COLUMNS = (CHUNK, CHUNK_START, CHUNK_END)  # not served columns: which part of the row a key is
ROW_GROUP_ROWS = 65_536
_NAME = re.compile(r"^(\d{20})-(\d{20})\.parquet$")


@dataclass(frozen=True)
class SegmentRef:
    path: Path
    first: int
    last: int
    bytes: int

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first: int, last: int) -> str:
    return f"{first:020d}-{last:020d}.parquet"


def segment_range(name: str) -> tuple[int, int] | None:
    """(first, last) of a segment's file name; None for a name that is not a segment's."""
    match = _NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def list_segments(root: Path) -> list[SegmentRef]:
    """Published segments in seq order (temp files are ignored)."""
    refs = []
    try:
        entries = list((root / LOG_DIR).iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        match = _NAME.match(path.name)
        if not match:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # removed by a snapshot's cleanup meanwhile
            continue
        refs.append(SegmentRef(path, int(match.group(1)), int(match.group(2)), size))
    return sorted(refs, key=lambda ref: ref.first)


# A directory's mtime comes from the kernel's coarse clock (a tick of up to 10 ms): a segment renamed
# in within the tick of the stat a reader compared can leave the mtime unchanged. Once the mtime is
# this much older than the stat, any later change moves it, so an equal stat proves an equal listing
# (git's "racy timestamp" rule, with a wide margin).
LOG_STAT_SETTLED_NS = 1_000_000_000


def log_dir_stat(root: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, ctime) of ``log/``, or None when it does not exist: one stat, taken before a
    listing, that tells a reader on the next query whether the listing can have changed."""
    try:
        st = os.stat(os.path.join(root, LOG_DIR))  # os.path, not pathlib: this runs per query
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def log_stat_settled(stat: tuple[int, int, int] | None, taken_ns: int) -> bool:
    """Whether ``stat``, taken at ``taken_ns`` (time.time_ns), can be trusted to change with the next
    change of the directory (see LOG_STAT_SETTLED_NS)."""
    return stat is not None and max(stat[1], stat[2]) < taken_ns - LOG_STAT_SETTLED_NS


def segment_listing(root: Path) -> tuple[str, ...]:
    """The names of the published segments, sorted: one directory read and no stat, so a reader
    can tell on every query whether the log changed (segments are immutable once renamed in)."""
    try:
        names = os.listdir(os.path.join(root, LOG_DIR))  # os.path, not pathlib: this runs per query
    except FileNotFoundError:
        return ()
    return tuple(sorted(name for name in names if _NAME.match(name)))


def count_records(refs: list[SegmentRef]) -> int | None:
    """Records in ``refs`` from their Parquet footers alone (no data page is read).

    None when a footer is unreadable (the damage is reported by the reader and repaired by the
    next sync, not here); FileNotFoundError when a segment was removed meanwhile.
    """
    total = 0
    for ref in refs:
        try:
            total += pq.read_metadata(ref.path).num_rows
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException):
            return None
    return total


@dataclass(frozen=True)
class Chain:
    """The segments that continue a seq without a gap, and what (if anything) breaks the run."""

    refs: list[SegmentRef]
    broken_at: int | None = None  # the first seq that could not be continued
    problem: str | None = None

    @property
    def last(self) -> int | None:
        return self.refs[-1].last if self.refs else None


def chain_after(refs: list[SegmentRef], after: int) -> Chain:
    """The run of ``refs`` (sorted) that continues seq ``after``: each starts where the last ended.

    Segments that end at or before ``after`` are covered by a snapshot and ignored. A missing
    segment leaves a gap; a segment that starts inside another one overlaps it; both end the run.
    """
    run: list[SegmentRef] = []
    expected = after + 1
    for ref in refs:
        if ref.last < expected:
            continue
        if ref.first != expected:
            kind = "is missing" if ref.first > expected else f"overlaps {ref.name}"
            return Chain(run, expected, f"the segment starting at seq {expected} {kind} (found {ref.path})")
        run.append(ref)
        expected = ref.last + 1
    return Chain(run)


def read_chain(refs: list[SegmentRef], after: int, identity: IndexIdentity) -> tuple[pa.Table | None, Chain]:
    """Read the run of segments after ``after`` up to the first gap or damaged segment.

    Returns the records of the readable run and the chain that was read (with the problem that
    ended it, naming the file). A FileNotFoundError (a snapshot's cleanup removed a segment
    meanwhile) propagates, so the caller can reread the manifest.
    """
    chain = chain_after(refs, after)
    tables = []
    for i, ref in enumerate(chain.refs):
        try:
            tables.append(read_segment(ref, identity))
        except CorruptFileError as error:
            chain = Chain(chain.refs[:i], ref.first, str(error))
            break
    records = pa.concat_tables(tables, promote_options="default") if tables else None
    return records, chain


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def write_segment(root: Path, changes: pa.Table, first: int, last: int, identity: IndexIdentity) -> SegmentRef:
    """Publish ``changes`` (the columns above) as the segment [first, last]."""
    if changes.num_rows == 0:
        raise SequenceError("refusing to write an empty segment")
    seqs = changes.column(SEQ).to_numpy()
    if seqs.min() < first or seqs.max() > last:
        raise SequenceError(f"segment [{first}, {last}] holds records outside its range ({seqs.min()}..{seqs.max()})")
    changes = changes.sort_by(SEQ)
    metadata = {
        "quiver.format_version": SEGMENT_VERSION,
        "quiver.first": str(first),
        "quiver.last": str(last),
        "quiver.records": str(changes.num_rows),
        "quiver.dim": str(identity.dim),
        "quiver.metric": identity.metric,
        "quiver.model": identity.model,
    }
    changes = changes.replace_schema_metadata({**(changes.schema.metadata or {}), **metadata})
    final = root / LOG_DIR / segment_name(first, last)

    plain = [VECTOR]  # unique floats: a dictionary only adds pages
    dictionary = [name for name in changes.column_names if name not in plain]

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            body = HashingWriter(handle)
            writer = pq.ParquetWriter(
                body,
                changes.schema,
                compression="zstd",
                write_page_checksum=True,
                use_dictionary=dictionary,
                use_byte_stream_split=[f"{VECTOR}.list.element"],
            )
            for start in range(0, changes.num_rows, ROW_GROUP_ROWS):
                writer.write_table(changes.slice(start, ROW_GROUP_ROWS))
                kill_point("segment.mid_write")  # row groups on disk, no footer yet
            body_bytes, checksum = body.written, body.checksum()
            writer.add_key_value_metadata({BODY_CHECKSUM: checksum})  # goes into the footer, written now
            writer.close()
        if _body_length(temp) != body_bytes:  # the footer must start where the checksummed bytes end
            raise RuntimeError(f"segment {final.name}: the Parquet writer buffered data past the body checksum")

    atomic_write(final, write, label="segment")
    return SegmentRef(final, first, last, final.stat().st_size)


def _body_length(path: Path) -> int:
    """Bytes before the Parquet footer (the footer's length is stored just before the closing magic)."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, size - _FOOTER_TAIL))
        tail = handle.read(_FOOTER_TAIL)
    if len(tail) < _FOOTER_TAIL or tail[4:] != b"PAR1":
        raise ValueError("no Parquet footer")
    footer = int.from_bytes(tail[:4], "little")
    if footer + _FOOTER_TAIL > size:
        raise ValueError(f"a footer of {footer} bytes in a file of {size}")
    return size - _FOOTER_TAIL - footer


def read_segment(ref: SegmentRef, identity: IndexIdentity) -> pa.Table:
    """Read and check one segment; raises CorruptFileError if it fails any check."""
    try:
        # read_table takes the schema's metadata from the footer's serialized Arrow schema; the
        # body checksum is a plain key-value entry of the footer (added once the body was written).
        table = pq.read_table(ref.path, page_checksum_verification=True)
        footer = pq.read_metadata(ref.path).metadata or {}
        footer_checksum = footer.get(BODY_CHECKSUM.encode(), b"").decode(errors="replace")
        body = checksum_file(ref.path, _body_length(ref.path))  # a second read, from the page cache
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pa.ArrowException) as error:
        raise CorruptFileError(
            f"commit-log segment {ref.path} is unreadable ({error}); it is not served. "
            "Re-derive it from DuckDB by materializing the dataset's index asset."
        ) from error
    # errors="replace": garbled metadata is reported below as a disagreement, not a UnicodeDecodeError
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (table.schema.metadata or {}).items()}
    version = meta.get("quiver.format_version")
    if version not in READABLE_VERSIONS:
        raise CorruptFileError(
            f"commit-log segment {ref.path} has format version {version!r}; this quiver reads "
            f"{', '.join(READABLE_VERSIONS)}: it is not served"
        )
    if version != "1" and footer_checksum != body:
        raise CorruptFileError(
            f"commit-log segment {ref.path} fails its checksum (the bytes hash to {body}, its footer says "
            f"{footer_checksum!r}): it is not served. Re-derive it from DuckDB by materializing "
            "the dataset's index asset."
        )
    expected = {
        "quiver.first": str(ref.first),
        "quiver.last": str(ref.last),
        "quiver.records": str(table.num_rows),
        "quiver.dim": str(identity.dim),
        "quiver.metric": identity.metric,
        "quiver.model": identity.model,
    }
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise CorruptFileError(
            f"commit-log segment {ref.path} disagrees with its name or the manifest: "
            + ", ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
        )
    expected_types = {SEQ: pa.int64(), OP: pa.string(), KEY: pa.uint64(), VECTOR: vector_type(identity.dim)}
    wrong_types = {
        name: (table.schema.field(name).type if name in table.column_names else "missing", want)
        for name, want in expected_types.items()
        if name not in table.column_names or table.schema.field(name).type != want
    }
    if wrong_types:
        raise CorruptFileError(
            f"commit-log segment {ref.path} has the wrong columns ("
            + ", ".join(f"{name}: {got}, expected {want}" for name, (got, want) in wrong_types.items())
            + "): it is not served"
        )
    seqs = table.column(SEQ).to_numpy()
    if table.num_rows and (seqs.min() < ref.first or seqs.max() > ref.last):
        raise CorruptFileError(
            f"commit-log segment {ref.path} holds seqs {seqs.min()}..{seqs.max()} outside its name's range"
        )
    return table.replace_schema_metadata(None)


def read_segments(refs: list[SegmentRef], identity: IndexIdentity) -> pa.Table | None:
    tables = [read_segment(ref, identity) for ref in refs]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def fold(changes: pa.Table | None, ordered: bool = True) -> pa.Table | None:
    """The net change per key: the record with the highest ``_seq`` for each ``_key``, by key.

    ``ordered=False``: in any order, and the records themselves when no key repeats (a first
    build's log: no copy of its vectors, which are most of a snapshot build's memory)."""
    if changes is None or changes.num_rows == 0:
        return None
    keys = changes.column(KEY).to_numpy()
    seqs = changes.column(SEQ).to_numpy()
    order = np.lexsort((seqs, keys))  # by key, then seq
    sorted_keys = keys[order]
    last_of_key = np.ones(len(order), dtype=bool)
    last_of_key[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    if not ordered and last_of_key.all():
        return changes
    return changes.take(pa.array(order[last_of_key]))


def upserts(changes: pa.Table) -> pa.Table:
    """The upsert records; the table itself when it holds no delete (a first build's log: no copy
    of its vectors, which are most of a snapshot build's memory)."""
    is_upsert = pc.equal(changes.column(OP), OP_UPSERT)
    if pc.all(is_upsert).as_py() is not False:
        return changes
    return changes.filter(is_upsert)


def vectors_of(table: pa.Table | pa.RecordBatch, dim: int) -> np.ndarray:
    """The ``_vector`` column as a contiguous float32 matrix (rows x dim)."""
    column = table.column(VECTOR)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise CorruptFileError(f"{column.null_count} upsert records have no vector")
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
