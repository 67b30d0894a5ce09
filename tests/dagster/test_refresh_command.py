"""``python -m quiver refresh`` (``pipelines.runner``): the refresh job, then the snapshot job when
due, recorded in a Dagster instance; a refresh that finds nothing says so and measures nothing
again; the instance is created with quiver's settings when there is none."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import yaml

from quiver.pipelines import runner
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec


def test_a_build_then_refreshes_that_find_nothing_measure_nothing_again(tmp_path, sample_table, monkeypatch):
    source = tmp_path / "packages.parquet"
    pq.write_table(sample_table.slice(0, 50), source)
    spec = load_spec(write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)]))
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home"))
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        (built,) = runner.refresh(spec, ["pkgs"], instance, say=lines.append)
        assert built.summary.startswith("refresh: 50 rows read; 50 new") and built.snapshot.startswith("snapshot taken")
        (again,) = runner.refresh(spec, ["pkgs"], instance, say=lines.append)
        assert again.summary.startswith("nothing changed: 50 rows read, 50 unchanged")
        assert again.snapshot.startswith("no snapshot: no segments after snapshot seq 50")
        assert lines[-1] == f"pkgs: {again.summary}; {again.snapshot}"
        runner.refresh(spec, ["pkgs"], instance, say=lines.append)  # the index is as the last run measured it

        runs = instance.get_runs()  # newest first
        assert [r.job_name for r in runs] == ["pkgs_refresh", "pkgs_refresh", "pkgs_snapshot", "pkgs_refresh"]
        for name in ("embeddings_valid", "parity", "recall_at_10"):
            asset = ["pkgs", "embeddings" if name == "embeddings_valid" else "index"]
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), name), limit=2
            )
            latest, first = (record.event.dagster_event.event_specific_data for record in history)
            assert latest.passed and latest.metadata["reused_from_run"].value == runs[1].run_id, name
            assert latest.description.startswith(f"unchanged since run {runs[1].run_id[:8]}, which found: "), name
            assert first.passed, name


def test_a_missing_instance_is_created_with_quivers_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home"))
    said: list[str] = []
    home = runner.instance_home(say=said.append)
    assert home == tmp_path / "home" / "dagster"
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings["concurrency"]["pools"]["default_limit"] == 1 and said
    assert runner.instance_home(say=said.append) == home and len(said) == 1, "created once"


def test_an_unknown_dataset_is_one_line_naming_it(tmp_path):
    spec = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", tmp_path / "none.parquet")])
    out = subprocess.run(
        [sys.executable, "-m", "quiver", "refresh", "nosuch"],
        cwd=ROOT, env={"QUIVER_DATASETS": str(spec), "QUIVER_HOME": str(tmp_path / "home"), "PATH": ""},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "nosuch" in out.stderr and "pkgs" in out.stderr
