"""Bad source data fails the run with a message naming the dataset and the fix; committed state stays."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import DUCKDB_FILE, build_resources
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import metadata_of
from tests.invariants import check_derived_and_exact, index_state, table_state


def _materialize(spec_path, home):
    spec = load_spec(spec_path)
    assets = [a for d in spec.datasets for a in dataset_assets(d)]
    return materialize(assets, resources=build_resources(spec, home), instance=DagsterInstance.ephemeral())


@pytest.fixture()
def built(tmp_path, sample_table):
    """A dataset materialized once from 60 good rows."""
    source = tmp_path / "src.parquet"
    good = sample_table.slice(0, 60)
    pq.write_table(good, source)
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)])
    home = tmp_path / "home"
    assert _materialize(spec_path, home).success
    return spec_path, home, source, good


def _committed(home):
    return table_state(home / DUCKDB_FILE, "pkgs"), index_state(home / "pkgs")


def _replace_column(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, pa.field(name, table.schema.field(name).type), pa.array(values, table.schema.field(name).type))


BAD_SOURCES = {
    "duplicate primary key": (
        lambda t: pa.concat_tables([t, t.slice(0, 2)]),
        r"dataset 'pkgs': primary key 'pkg_id' is not unique: \d+ \(2x\)",
    ),
    "null primary key": (
        lambda t: _replace_column(t, "pkg_id", [None] + t.column("pkg_id").to_pylist()[1:]),
        r"dataset 'pkgs': 1 rows have a null primary key 'pkg_id'",
    ),
    "missing primary key column": (
        lambda t: t.drop_columns(["pkg_id"]),
        r"dataset 'pkgs': primary key column 'pkg_id' is not in the source",
    ),
    "missing text column": (
        lambda t: t.drop_columns(["short_description"]),
        r"dataset 'pkgs': embedded column 'short_description' is not in the source",
    ),
    "text column not a string": (
        lambda t: _replace_column(t.drop_columns(["package"]).append_column("package", pa.array(range(t.num_rows))), "package", list(range(t.num_rows))),
        r"dataset 'pkgs': embedded column 'package' is BIGINT, not a string",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_source_fails_and_keeps_committed_state(built, case):
    spec_path, home, source, good = built
    before = _committed(home)
    mutate, message = BAD_SOURCES[case]
    pq.write_table(mutate(good), source)
    with pytest.raises(Exception, match=message):
        _materialize(spec_path, home)
    assert _committed(home) == before
    conn = duckdb.connect(str(home / DUCKDB_FILE), read_only=True)
    try:
        assert conn.execute('SELECT count(*) FROM "pkgs_rows"').fetchone()[0] == 60
    finally:
        conn.close()


def test_missing_source_path(tmp_path):
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", tmp_path / "nowhere.parquet")])
    with pytest.raises(Exception, match=r"dataset 'pkgs': no Parquet file at .*nowhere\.parquet"):
        _materialize(spec_path, tmp_path / "home")


def test_empty_text_rows_are_skipped_and_counted(built):
    spec_path, home, source, good = built
    texts = good.column("short_description").to_pylist()
    names = good.column("package").to_pylist()
    # The embedded text joins package and short_description: both empty or null means no text.
    blank = {0: None, 1: "", 2: "   "}
    for i, value in blank.items():
        texts[i], names[i] = value, value
    table = _replace_column(_replace_column(good, "short_description", texts), "package", names)
    pq.write_table(table, source)
    result = _materialize(spec_path, home)
    meta = metadata_of(result, ["pkgs", "embeddings"])
    assert meta["rows_skipped_empty_text"] == 3
    assert meta["rows_deleted"] == 3  # they were indexed before, and leave the index now
    state = table_state(home / DUCKDB_FILE, "pkgs")
    assert len(state) == 57
    assert check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs") == state
