"""The README's refresh command, SIGKILLed halfway through a first build and run again: the rerun
frees the writer-pool slot the dead run still held (else every later run waits for it forever),
says how many rows it found already embedded, embeds only the rest, and the index equals the table.
A real Dagster instance (the shipped dagster.yaml, pool limit 1) and the real model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq

from quiver.pipelines.definitions import DUCKDB_FILE
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.invariants import check_at_rest, check_derived_and_exact, table_state

ROWS, BATCH = 600, 100


def refresh_command(spec, home, dagster_home, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quiver", "refresh"],
        cwd=ROOT,
        env={**os.environ, "QUIVER_DATASETS": str(spec), "QUIVER_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
             "QUIVER_REFRESH_BATCH_ROWS": str(BATCH), **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_killed_refresh_command_frees_its_slot_and_the_rerun_embeds_only_the_rest(tmp_path, sample_table):
    source = tmp_path / "packages.parquet"
    pq.write_table(sample_table.slice(0, ROWS), source)
    spec = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)])
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")

    killed = refresh_command(spec, home, dagster_home, QUIVER_KILL_AT="refresh.between_batches@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len(table_state(home / DUCKDB_FILE, "pkgs")) == 3 * BATCH, "three batches, each committed whole"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (dead,) = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED, "a killed run never ends by itself"
        assert instance.event_log_storage.get_concurrency_run_ids() == {dead.run_id}, "and keeps its slot"

    rerun = refresh_command(spec, home, dagster_home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"freed the writer slot of run {dead.run_id}" in rerun.stdout
    assert f"{3 * BATCH:,} of {ROWS:,} rows already embedded; embedding {ROWS - 3 * BATCH:,} rows" in rerun.stderr
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        embedded = instance.get_latest_materialization_event(dg.AssetKey(["pkgs", "embeddings"]))
        assert embedded.asset_materialization.metadata["rows_embedded"].value == ROWS - 3 * BATCH
        assert not instance.event_log_storage.get_concurrency_run_ids(), "every slot given back"

    committed = table_state(home / DUCKDB_FILE, "pkgs")
    assert len(committed) == ROWS
    assert check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs") == committed
    check_at_rest(home / "pkgs", home / DUCKDB_FILE, "pkgs")
