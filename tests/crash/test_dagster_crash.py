"""The crash matrix's two main points once more, through Dagster's own run with the real model:
a refresh killed after DuckDB's commit but before its segment exists, and a snapshot killed after
the manifest names it but before the covered files are removed. The next materialization recovers
and the index equals the table (I1, I2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from quiver.pipelines.definitions import DUCKDB_FILE
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.dagster.helpers import materialize_all, metadata_of
from tests.invariants import check_all_or_nothing, check_derived_and_exact, table_state


@pytest.mark.parametrize("point", ["refresh.after_commit", "snapshot.before_cleanup"])
def test_a_killed_dagster_run_is_recovered_by_the_next_one(tmp_path, sample_table, point):
    source = tmp_path / "packages.parquet"
    table = sample_table.slice(0, 120)
    pq.write_table(table, source)
    spec = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)])
    home = tmp_path / "home"
    assert materialize_all(spec, home).success

    edited = table.set_column(
        table.column_names.index("short_description"),
        "short_description",
        pc.binary_join_element_wise(table.column("short_description"), " (edited)", ""),
    ).slice(0, 110)  # 110 edits, 10 deletes
    pq.write_table(edited, source)
    killed = subprocess.run(
        [sys.executable, "-m", "tests.crash.dagster_run", str(spec), str(home)],
        cwd=ROOT,
        env={**os.environ, "QUIVER_KILL_AT": point},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    result = materialize_all(spec, home)
    assert result.success
    committed = table_state(home / DUCKDB_FILE, "pkgs")
    assert len(committed) == 110
    assert all(row.columns["short_description"].endswith(" (edited)") for row in committed.values())
    assert check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs") == committed
    check_all_or_nothing(home / "pkgs")
    if point == "refresh.after_commit":  # committed before the kill: nothing left to embed, only to log
        embeddings = metadata_of(result, ["pkgs", "embeddings"])
        assert embeddings["rows_embedded"] == 0
        assert metadata_of(result, ["pkgs", "index"])["records"] == 120
