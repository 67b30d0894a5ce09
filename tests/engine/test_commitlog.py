"""commitlog.py: segment round trip, naming, fold, and refusal of damaged or mismatched segments."""

from __future__ import annotations

import base64
import shutil
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.resources.files import TEMP_MARKER
from quiver.resources.index import commitlog
from quiver.resources.index.commitlog import KEY, OP, SEQ, VECTOR
from quiver.resources.index.errors import CorruptFileError, SequenceError


@pytest.mark.parametrize("dim", [1, 8, 33])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_round_trip_preserves_every_column(tmp_path, kit, dim, seed):
    work = kit.Workload(seed, dim)
    work.batch(inserts=40)
    table, first, last = work.batch(inserts=15, updates=10, deletes=8)
    identity = kit.make_identity(dim=dim)
    shuffled = table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))

    ref = commitlog.write_segment(tmp_path, shuffled, first, last, identity)

    assert ref.path == tmp_path / "log" / commitlog.segment_name(first, last)
    assert (ref.first, ref.last, ref.bytes) == (first, last, ref.path.stat().st_size)
    back = commitlog.read_segment(ref, identity)
    assert back.schema.metadata is None
    assert back.schema == table.schema
    assert back.column(SEQ).to_pylist() == sorted(table.column(SEQ).to_pylist()), "sorted by seq"
    assert back.equals(table.sort_by(SEQ))
    deletes = back.filter(pa.compute.equal(back.column(OP), "delete"))
    assert deletes.num_rows == 8
    assert deletes.column(VECTOR).null_count == 8
    assert deletes.column("name").null_count == 8
    upserts = commitlog.upserts(back)
    vectors = commitlog.vectors_of(upserts, dim)
    assert vectors.dtype == np.float32 and vectors.shape == (25, dim)
    for key, vector in zip(upserts.column(KEY).to_pylist(), vectors):
        np.testing.assert_array_equal(vector, work.model.rows[key].vector)


def test_parquet_metadata_names_range_and_identity(tmp_path, kit):
    work = kit.Workload(3, 4)
    table, first, last = work.batch(inserts=5)
    identity = kit.make_identity(dim=4, metric="l2", model="m-x")
    ref = commitlog.write_segment(tmp_path, table, first, last, identity)
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(ref.path).metadata.items()}
    assert meta["quiver.first"] == "1" and meta["quiver.last"] == "5"
    assert meta["quiver.records"] == "5"
    assert (meta["quiver.dim"], meta["quiver.metric"], meta["quiver.model"]) == ("4", "l2", "m-x")
    assert meta["quiver.format_version"] == commitlog.SEGMENT_VERSION


@pytest.mark.parametrize(("first", "last"), [(1, 1), (7, 12), (10**12, 10**12 + 5), (2**62, 2**62 + 1)])
def test_segment_name_is_zero_padded_and_sorts_like_its_range(first, last):
    name = commitlog.segment_name(first, last)
    assert name == f"{first:020d}-{last:020d}.parquet"
    assert len(name) == len("-.parquet") + 40
    assert commitlog.segment_name(first, last) < commitlog.segment_name(last + 1, last + 2)


def test_list_segments_orders_by_seq_and_ignores_other_names(tmp_path, kit):
    identity = kit.make_identity()
    work = kit.Workload(4, identity.dim)
    written = []
    for size in (3, 1, 120, 7):  # ranges whose decimal widths differ: 1-3, 4-4, 5-124, 125-131
        written.append(commitlog.write_segment(tmp_path, *work.batch(inserts=size), identity))
    log = tmp_path / "log"
    (log / "notes.txt").write_text("x")
    (log / "1-2.parquet").write_bytes(b"x")
    (log / f"{TEMP_MARKER}abc-{commitlog.segment_name(132, 140)}").write_bytes(b"x")
    (log / (commitlog.segment_name(9, 9) + ".bak")).write_bytes(b"x")

    refs = commitlog.list_segments(tmp_path)

    assert [(r.first, r.last) for r in refs] == [(1, 3), (4, 4), (5, 124), (125, 131)]
    assert [r.path for r in refs] == sorted(r.path for r in written)
    assert all(r.bytes == r.path.stat().st_size > 0 for r in refs)


def test_list_segments_without_a_log_directory(tmp_path):
    assert commitlog.list_segments(tmp_path) == []


@pytest.mark.parametrize("seed", range(5))
def test_fold_keeps_the_highest_seq_per_key(kit, seed):
    rng = np.random.default_rng(seed)
    dim = 3
    records = []
    seqs = rng.permutation(np.arange(1, 301)) + 1000
    for seq in seqs:
        key = kit.key_of(int(rng.integers(0, 40)))
        op = "delete" if rng.random() < 0.3 else "upsert"
        vector = None if op == "delete" else rng.normal(size=dim).astype(np.float32)
        records.append(kit.Record(int(seq), op, key, 0, vector, None if vector is None else f"s{seq}"))
    table = kit.changes_table(records, dim)
    # split into chunks, as read_segments concatenates several segments
    chunks = [table.slice(0, 100), table.slice(100, 150), table.slice(250)]

    folded = commitlog.fold(pa.concat_tables(chunks))

    latest: dict[int, kit.Record] = {}
    for rec in records:
        if rec.key not in latest or rec.seq > latest[rec.key].seq:
            latest[rec.key] = rec
    assert folded.num_rows == len(latest)
    assert sorted(folded.column(KEY).to_pylist()) == sorted(latest)
    for row in folded.to_pylist():
        want = latest[row[KEY]]
        assert (row[SEQ], row[OP], row["name"]) == (want.seq, want.op, want.name)


def test_fold_of_nothing_is_none(kit):
    assert commitlog.fold(None) is None
    assert commitlog.fold(kit.changes_table([], 4)) is None


def test_read_segments_concatenates_in_order(tmp_path, kit):
    identity = kit.make_identity()
    work = kit.Workload(5, identity.dim)
    for inserts in (4, 3, 5):
        commitlog.write_segment(tmp_path, *work.batch(inserts=inserts, updates=1 if work.model.rows else 0), identity)
    table = commitlog.read_segments(commitlog.list_segments(tmp_path), identity)
    assert table.column(SEQ).to_pylist() == list(range(1, 15))
    assert commitlog.read_segments([], identity) is None


# -- refusals --------------------------------------------------------------------------------------


def _one_segment(tmp_path, kit, identity=None):
    identity = identity or kit.make_identity()
    work = kit.Workload(6, identity.dim)
    table, first, last = work.batch(inserts=60)
    return commitlog.write_segment(tmp_path, table, first, last, identity), identity


@pytest.mark.parametrize(
    "other",
    [
        {"dim": 16},
        {"metric": "l2"},
        {"metric": "inner_product"},
        {"model": "another-model"},
    ],
)
def test_a_segment_of_another_identity_is_refused(tmp_path, kit, other):
    ref, identity = _one_segment(tmp_path, kit)
    fields = {**identity.to_dict(), **other}
    with pytest.raises(CorruptFileError, match="disagrees") as caught:
        commitlog.read_segment(ref, kit.make_identity(**fields))
    assert str(ref.path) in str(caught.value)


@pytest.mark.parametrize(("first", "last"), [(2, 60), (1, 59), (61, 120), (1, 61)])
def test_a_renamed_segment_is_refused(tmp_path, kit, first, last):
    ref, identity = _one_segment(tmp_path, kit)
    renamed = ref.path.with_name(commitlog.segment_name(first, last))
    shutil.move(ref.path, renamed)
    (moved,) = commitlog.list_segments(tmp_path)
    assert (moved.first, moved.last) == (first, last)
    with pytest.raises(CorruptFileError, match="quiver.(first|last)"):
        commitlog.read_segment(moved, identity)


def _footer_start(raw: bytes) -> int:
    (length,) = struct.unpack("<i", raw[-8:-4])
    return len(raw) - 8 - length


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _garble_arrow_schema_metadata(raw: bytes, target: bytes, flip: int) -> bytes:
    """Change one byte of ``target`` inside the base64 ``ARROW:schema`` footer entry.

    pyarrow takes the schema metadata from that serialized Arrow schema (not from the plain
    Parquet key-value copy), so this is the copy whose damage reaches a reader.
    """
    meta = pq.ParquetFile(pa.BufferReader(raw)).metadata.metadata
    encoded = meta[b"ARROW:schema"]
    decoded = base64.b64decode(encoded)
    at = decoded.index(target) + 3  # a byte inside target whose base64 quad starts inside it too
    quad = at // 3
    value = _B64.index(encoded[4 * quad]) ^ flip
    changed = _B64[value : value + 1]
    garbled_encoded = encoded[: 4 * quad] + changed + encoded[4 * quad + 1 :]
    assert base64.b64decode(garbled_encoded) != decoded
    start = raw.index(encoded)
    return raw[:start] + garbled_encoded + raw[start + len(encoded) :]


def _garble(raw: bytes, how: str) -> bytes:
    footer = _footer_start(raw)
    kind, _, arg = how.partition(":")
    if kind == "truncate":
        return raw[: int(len(raw) * float(arg))]
    if kind == "empty-file":
        return b""
    if kind == "bad-magic":
        return raw[:-4] + b"XXXX"
    if kind == "zero-tail":
        return raw[: len(raw) - 512] + bytes(512)
    if kind == "data-page":  # a byte inside the column chunks (covered by page CRCs)
        garbled = bytearray(raw)
        garbled[4 + int((footer - 4) * float(arg))] ^= 0xA5
        return bytes(garbled)
    if kind == "meta-binary":  # the byte gets its high bit: invalid UTF-8
        return _garble_arrow_schema_metadata(raw, arg.encode(), 0x20)
    if kind == "meta-text":  # still readable text, but different
        return _garble_arrow_schema_metadata(raw, arg.encode(), 0x01)
    if kind == "column-name":  # a reserved column's name in the Parquet schema (no CRC there)
        garbled = bytearray(raw)
        garbled[raw.index(arg.encode(), footer) + 1] ^= 0x01  # the schema precedes the row groups
        return bytes(garbled)
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "empty-file",
        "truncate:0.1",
        "truncate:0.5",
        "truncate:0.99",
        "bad-magic",
        "zero-tail",
        "data-page:0.05",
        "data-page:0.3",
        "data-page:0.6",
        "data-page:0.95",
        "meta-binary:quiver.first",
        "meta-binary:quiver.records",
        "meta-binary:fake-embedder-v1",
        "meta-text:quiver.last",
        "meta-text:fake-embedder-v1",
        "column-name:_seq",
        "column-name:_key",
        "column-name:_vector",
    ],
)
def test_a_damaged_segment_is_refused_never_served(tmp_path, kit, how):
    ref, identity = _one_segment(tmp_path, kit)
    raw = ref.path.read_bytes()
    damaged = _garble(raw, how)
    assert damaged != raw
    ref.path.write_bytes(damaged)
    listed = commitlog.list_segments(tmp_path)[0]
    with pytest.raises(CorruptFileError, match=str(ref.path.name)):
        commitlog.read_segment(listed, identity)


def test_any_flipped_byte_before_the_footer_is_refused(tmp_path, kit):
    """Page CRCs leave page headers uncovered; the body checksum covers every byte before the footer."""
    ref, identity = _one_segment(tmp_path, kit)
    raw = ref.path.read_bytes()
    body = _footer_start(raw)
    positions = sorted({*range(4, 64), *np.linspace(4, body - 1, 200).astype(int).tolist()})
    for at in positions:
        garbled = bytearray(raw)
        garbled[at] ^= 0x10
        ref.path.write_bytes(bytes(garbled))
        with pytest.raises(CorruptFileError, match=ref.path.name):
            commitlog.read_segment(ref, identity)
    ref.path.write_bytes(raw)
    assert commitlog.read_segment(ref, identity).num_rows == 60


def _version_1_segment(path, table, first, last, identity):
    """A segment as version 1 wrote it: dictionary-encoded vectors, no body checksum."""
    metadata = {
        "quiver.format_version": "1",
        "quiver.first": str(first),
        "quiver.last": str(last),
        "quiver.records": str(table.num_rows),
        "quiver.dim": str(identity.dim),
        "quiver.metric": identity.metric,
        "quiver.model": identity.model,
    }
    pq.write_table(table.replace_schema_metadata(metadata), path, compression="zstd", write_page_checksum=True)


def test_version_1_segments_are_still_read_and_version_2_is_smaller(tmp_path, kit):
    identity = kit.make_identity(dim=64)
    table, first, last = kit.Workload(4, identity.dim).batch(inserts=300)
    old = tmp_path / commitlog.LOG_DIR / commitlog.segment_name(first, last)
    old.parent.mkdir()
    _version_1_segment(old, table, first, last, identity)
    old_bytes = old.stat().st_size
    [listed] = commitlog.list_segments(tmp_path)
    v1 = commitlog.read_segment(listed, identity)
    assert v1.num_rows == 300
    old.unlink()
    new = commitlog.write_segment(tmp_path, table, first, last, identity)
    assert commitlog.read_segment(new, identity).equals(v1)
    assert new.bytes < 0.9 * old_bytes  # no dictionary pages of unique floats


def test_a_segment_of_an_unknown_version_is_refused(tmp_path, kit):
    identity = kit.make_identity()
    table, first, last = kit.Workload(2, identity.dim).batch(inserts=5)
    path = tmp_path / commitlog.LOG_DIR / commitlog.segment_name(first, last)
    path.parent.mkdir()
    _version_1_segment(path, table, first, last, identity)
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()} | {"quiver.format_version": "9"}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(CorruptFileError, match="format version '9'"):
        commitlog.read_segment(commitlog.list_segments(tmp_path)[0], identity)


def test_a_missing_segment_is_not_reported_as_corrupt(tmp_path, kit):
    ref, identity = _one_segment(tmp_path, kit)
    ref.path.unlink()
    with pytest.raises(FileNotFoundError):
        commitlog.read_segment(ref, identity)


def test_an_empty_segment_is_refused(tmp_path, kit):
    with pytest.raises(SequenceError, match="empty"):
        commitlog.write_segment(tmp_path, kit.changes_table([], 8), 1, 1, kit.make_identity())
    assert commitlog.list_segments(tmp_path) == []


@pytest.mark.parametrize(("first", "last"), [(2, 10), (1, 9), (5, 6), (11, 20), (10, 1)])
def test_records_outside_the_segment_range_are_refused(tmp_path, kit, first, last):
    work = kit.Workload(7, 8)
    table, table_first, table_last = work.batch(inserts=10)
    assert (table_first, table_last) == (1, 10)
    with pytest.raises(SequenceError, match="outside its range"):
        commitlog.write_segment(tmp_path, table, first, last, kit.make_identity())
    assert not (tmp_path / "log").exists() or list((tmp_path / "log").iterdir()) == []


def test_vectors_of_refuses_null_vectors(kit):
    work = kit.Workload(8, 4)
    work.batch(inserts=5)
    table, _, _ = work.batch(inserts=2, deletes=2)
    with pytest.raises(CorruptFileError, match="no vector"):
        commitlog.vectors_of(table, 4)
