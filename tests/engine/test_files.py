"""files.py: atomic publishing of files and directories, and removal of crash leftovers (I3, I4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xxhash

from quiver.resources.files import (
    TEMP_MARKER,
    atomic_write,
    atomic_write_bytes,
    checksum_file,
    remove_temp_files,
    temp_path_for,
)


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_temp_path_is_beside_the_final_name_and_unique(tmp_path):
    final = tmp_path / "log" / "segment.parquet"
    temps = {temp_path_for(final) for _ in range(50)}
    assert len(temps) == 50
    for temp in temps:
        assert temp.parent == final.parent
        assert temp.name.startswith(TEMP_MARKER)
        assert temp.name.endswith(final.name)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 7])
def test_atomic_write_publishes_a_file_and_leaves_no_temp(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    final = tmp_path / "nested" / "dir" / "file.bin"
    assert atomic_write_bytes(final, data) == final
    assert final.read_bytes() == data
    assert _names(final.parent) == {"file.bin"}


def test_atomic_write_replaces_a_file(tmp_path):
    final = tmp_path / "MANIFEST.json"
    atomic_write_bytes(final, b"first")
    atomic_write_bytes(final, b"second, longer")
    assert final.read_bytes() == b"second, longer"
    assert _names(tmp_path) == {"MANIFEST.json"}


def test_atomic_write_publishes_a_directory(tmp_path):
    final = tmp_path / "snapshots" / "00000000000000000007"

    def write(temp: Path) -> None:
        assert temp.name.startswith(TEMP_MARKER)
        assert not final.exists(), "nothing is visible under the final name while writing"
        (temp / "sub").mkdir(parents=True)
        (temp / "a.bin").write_bytes(b"a")
        (temp / "sub" / "b.bin").write_bytes(b"bb")

    atomic_write(final, write)
    assert (final / "a.bin").read_bytes() == b"a"
    assert (final / "sub" / "b.bin").read_bytes() == b"bb"
    assert _names(final.parent) == {final.name}


def test_atomic_write_refuses_to_overwrite_a_published_directory(tmp_path):
    final = tmp_path / "snapshots" / "00000000000000000007"
    atomic_write(final, lambda temp: (temp.mkdir(), (temp / "index.usearch").write_bytes(b"old")))

    with pytest.raises(FileExistsError, match="already published"):
        atomic_write(final, lambda temp: (temp.mkdir(), (temp / "index.usearch").write_bytes(b"new")))

    assert (final / "index.usearch").read_bytes() == b"old"
    assert _names(final.parent) == {final.name}, "the refused temp directory is removed"


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("kind", ["file", "directory"])
@pytest.mark.parametrize("exception", [Boom, KeyboardInterrupt])
def test_a_failing_write_removes_its_temp_and_publishes_nothing(tmp_path, kind, exception):
    final = tmp_path / "out" / "thing"
    seen: list[Path] = []

    def write(temp: Path) -> None:
        seen.append(temp)
        if kind == "file":
            temp.write_bytes(b"half of it")
        else:
            temp.mkdir()
            (temp / "part").write_bytes(b"half of it")
        raise exception("crash in the middle")

    with pytest.raises(exception):
        atomic_write(final, write)
    assert seen and not seen[0].exists()
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_a_failing_write_keeps_the_previously_published_file(tmp_path):
    final = tmp_path / "MANIFEST.json"
    atomic_write_bytes(final, b"published")

    def write(temp: Path) -> None:
        temp.write_bytes(b"partial")
        raise Boom()

    with pytest.raises(Boom):
        atomic_write(final, write)
    assert final.read_bytes() == b"published"
    assert _names(tmp_path) == {"MANIFEST.json"}


def test_remove_temp_files_removes_only_temp_marked_names(tmp_path):
    keep = [
        tmp_path / "MANIFEST.json",
        tmp_path / "log" / "00000000000000000001-00000000000000000004.parquet",
        tmp_path / "log" / f"segment{TEMP_MARKER}x.parquet",  # marker not at the start
        tmp_path / "snapshots" / "00000000000000000004" / "index.usearch",
        tmp_path / "tmp-not-a-temp",
    ]
    temps = [
        tmp_path / f"{TEMP_MARKER}abc-MANIFEST.json",
        tmp_path / "log" / f"{TEMP_MARKER}def-00000000000000000005-00000000000000000009.parquet",
        tmp_path / "snapshots" / "00000000000000000004" / f"{TEMP_MARKER}index.usearch",
    ]
    temp_dir = tmp_path / "snapshots" / f"{TEMP_MARKER}123-00000000000000000009"
    for path in [*keep, *temps, temp_dir / "index.usearch", temp_dir / "deep" / "rows.parquet"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    removed = remove_temp_files(tmp_path)

    assert sorted(removed) == sorted([*temps, temp_dir])
    for path in keep:
        assert path.exists(), path
    for path in [*temps, temp_dir]:
        assert not path.exists(), path
    assert remove_temp_files(tmp_path) == []


def test_remove_temp_files_on_a_missing_root(tmp_path):
    assert remove_temp_files(tmp_path / "nowhere") == []


@pytest.mark.parametrize("size", [0, 10, (4 << 20) + 3])
def test_checksum_file_matches_xxh3_128_of_the_bytes(tmp_path, size):
    data = (b"quiver" * (size // 6 + 1))[:size]
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert checksum_file(path) == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()
