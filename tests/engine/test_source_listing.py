"""Scanning a source: fingerprints, reuse of unchanged files, incomplete files, and comparisons."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from quiver.resources.warehouse import source_listing
from quiver.resources.warehouse.source_listing import compare, content_digest, scan


def write(path, values):
    pq.write_table(pa.table({"pkg_id": pa.array(values, pa.int64())}), path, compression="none")


def test_fingerprints_see_content_not_times(tmp_path):
    path = tmp_path / "a.parquet"
    write(path, [1, 2, 3])
    first = scan("ds", tmp_path).files[str(path)]
    assert first.fingerprint.startswith("full:")
    write(path, [1, 2, 4])  # same size, other bytes
    second = scan("ds", tmp_path).files[str(path)]
    assert second.size == first.size and second.fingerprint != first.fingerprint
    write(path, [1, 2, 3])
    assert scan("ds", tmp_path).files[str(path)].fingerprint == first.fingerprint


def test_large_files_hash_their_footer(tmp_path, monkeypatch):
    monkeypatch.setattr(source_listing, "FULL_HASH_BYTES", 16)
    path = tmp_path / "big.parquet"
    write(path, list(range(100)))
    state = scan("ds", tmp_path).files[str(path)]
    assert state.fingerprint.startswith("footer:")
    write(path, list(range(1, 101)))  # new min/max statistics in the footer
    assert scan("ds", tmp_path).files[str(path)].fingerprint != state.fingerprint


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    write(tmp_path / "a.parquet", [1])
    write(tmp_path / "b.parquet", [2])
    before = scan("ds", tmp_path).files
    read = []
    monkeypatch.setattr(source_listing, "fingerprint", lambda path, size: read.append(path) or "full:x")
    write(tmp_path / "b.parquet", [3, 4])
    after = scan("ds", tmp_path, before).files
    assert read == [str(tmp_path / "b.parquet")]
    assert after[str(tmp_path / "a.parquet")] == before[str(tmp_path / "a.parquet")]


def test_files_without_a_footer_are_incomplete(tmp_path):
    write(tmp_path / "a.parquet", [1, 2])
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[:-8])
    (tmp_path / "c.parquet").write_bytes(b"")
    result = scan("ds", tmp_path)
    assert set(result.files) == {str(tmp_path / "a.parquet")}
    assert sorted(os.path.basename(p) for p in result.incomplete) == ["b.parquet", "c.parquet"]


def test_compare_and_digest(tmp_path):
    write(tmp_path / "a.parquet", [1])
    write(tmp_path / "b.parquet", [2])
    before = scan("ds", tmp_path).files
    write(tmp_path / "b.parquet", [5, 6])
    (tmp_path / "a.parquet").unlink()
    write(tmp_path / "c.parquet", [3])
    changes = compare(before, scan("ds", tmp_path).files)
    names = lambda paths: [os.path.basename(p) for p in paths]
    assert (names(changes.added), names(changes.changed), names(changes.removed)) == (
        ["c.parquet"],
        ["b.parquet"],
        ["a.parquet"],
    )
    assert changes.describe() == "1 new (c.parquet); 1 changed (b.parquet); 1 removed (a.parquet)"
    assert content_digest(before) != content_digest(scan("ds", tmp_path).files)
    assert content_digest(before) == content_digest(dict(reversed(list(before.items()))))
