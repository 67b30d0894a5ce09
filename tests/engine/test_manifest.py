"""manifest.py: the single publish point; unknown versions and damage are refused, absence is clear."""

from __future__ import annotations

import json

import pytest

from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError, UnsupportedFormatError
from quiver.resources.index.identity import HnswParams
from quiver.resources.index.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    SnapshotEntry,
    manifest_path,
    publish_manifest,
    read_manifest,
)


def _entry(seq: int) -> SnapshotEntry:
    return SnapshotEntry(
        seq=seq,
        dir=f"snapshots/{seq:020d}",
        files={
            "index.usearch": FileEntry(bytes=1000 + seq, checksum="xxh3_128:" + "a" * 32),
            "rows.parquet": FileEntry(bytes=200 + seq, checksum="xxh3_128:" + "b" * 32),
        },
        vectors=10 * seq,
        tombstones=seq % 3,
        created_at="2024-05-01T10:00:00.000+00:00",
    )


def _manifest(kit, snapshots: int, metric: str = "cosine", dtype: str = "f32") -> Manifest:
    manifest = Manifest(
        "products", kit.make_identity(dim=384, metric=metric, dtype=dtype), HnswParams(8, 100, 40), "product_id"
    )
    for seq in range(1, snapshots + 1):
        manifest = manifest.with_snapshot(_entry(seq * 7), previous=manifest.snapshot)
    return manifest


@pytest.mark.parametrize("snapshots", [0, 1, 2, 5])
@pytest.mark.parametrize(("metric", "dtype"), [("cosine", "f32"), ("l2", "f16"), ("inner_product", "i8")])
def test_publish_read_round_trip(tmp_path, kit, snapshots, metric, dtype):
    manifest = _manifest(kit, snapshots, metric, dtype)
    publish_manifest(tmp_path, manifest)
    back = read_manifest(tmp_path)
    assert back == manifest
    assert back.snapshot_seq == (7 * snapshots if snapshots else 0)
    if snapshots >= 2:
        assert back.previous_snapshot == _entry(7 * (snapshots - 1)), "with_snapshot keeps exactly one previous"
    assert back.snapshot is None or back.snapshot.total_bytes == 1200 + 2 * back.snapshot.seq
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]


def test_publish_replaces_the_manifest_whole(tmp_path, kit):
    publish_manifest(tmp_path, _manifest(kit, 1))
    publish_manifest(tmp_path, _manifest(kit, 3))
    assert read_manifest(tmp_path).snapshot_seq == 21
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]


@pytest.mark.parametrize("version", [0, "1", None])
def test_a_malformed_format_version_is_refused_as_damage(tmp_path, kit, version):
    body = json.loads(_manifest(kit, 1).to_json())
    body["format_version"] = version
    manifest_path(tmp_path).write_text(json.dumps(body))
    with pytest.raises(CorruptFileError, match="format_version"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, FORMAT_VERSION + 100])
def test_a_newer_format_version_is_refused_not_treated_as_damage(tmp_path, kit, version):
    body = json.loads(_manifest(kit, 1).to_json())
    body["format_version"] = version
    manifest_path(tmp_path).write_text(json.dumps(body))
    with pytest.raises(UnsupportedFormatError, match="newer quiver") as raised:
        read_manifest(tmp_path)
    assert not isinstance(raised.value, CorruptFileError), "a newer directory must never be 'repaired'"


def test_another_format_is_refused(tmp_path, kit):
    body = json.loads(_manifest(kit, 1).to_json())
    body["format"] = "lance"
    manifest_path(tmp_path).write_text(json.dumps(body))
    with pytest.raises(CorruptFileError, match="not a quiver manifest"):
        read_manifest(tmp_path)


def _valid(kit) -> bytes:
    return _manifest(kit, 2).to_json()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"",
        lambda raw: b"{not json",
        lambda raw: b"\x00\xff\xfe garbage",
        lambda raw: raw[: len(raw) // 2],
        lambda raw: raw[:-1],
        lambda raw: bytes(len(raw)),
        lambda raw: b"[]",
        lambda raw: b"null",
        lambda raw: b"42",
        lambda raw: b"{}",
        lambda raw: raw.replace(b'"primary_key"', b'"primary_kee"'),
        lambda raw: raw.replace(b'"dim": 384', b'"dim": "wide"'),
        lambda raw: raw.replace(b'"metric": "cosine"', b'"metric": "hamming"'),
        lambda raw: raw.replace(b'"vectors": 140\n', b'"vectors": null\n', 1),
    ],
    ids=[
        "empty",
        "not-json",
        "binary",
        "half",
        "last-byte-cut",
        "zeros",
        "json-list",
        "json-null",
        "json-number",
        "json-empty-object",
        "missing-key",
        "bad-dim",
        "unknown-metric",
        "null-count",
    ],
)
def test_a_damaged_manifest_is_corrupt(tmp_path, kit, damage):
    raw = _valid(kit)
    damaged = damage(raw)
    assert damaged != raw
    manifest_path(tmp_path).write_bytes(damaged)
    with pytest.raises(CorruptFileError, match=MANIFEST_NAME):
        read_manifest(tmp_path)


def test_a_missing_manifest_means_not_built(tmp_path):
    with pytest.raises(IndexNotBuiltError, match="materialize") as caught:
        read_manifest(tmp_path / "products")
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(IndexNotBuiltError):
        read_manifest(tmp_path)
