"""The command line as a subprocess, and the snapshot sensor through a real sensor context."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import build_definitions, build_resources
from quiver.resources.search import HYBRID_COLUMNS
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("cli")
    source = tmp / "src.parquet"
    pq.write_table(sample_table.slice(0, 120), source)
    spec_path = write_spec(
        tmp / "datasets.yaml",
        [dataset_entry("pkgs", source, snapshots={"on_startup": False, "interval_seconds": 0})],
    )
    home = tmp / "home"
    spec = load_spec(spec_path)
    result = materialize(dataset_assets(spec.get("pkgs")), resources=build_resources(spec, home), instance=DagsterInstance.ephemeral())
    assert result.success
    return spec_path, home


def _cli(built, *args):
    spec_path, home = built
    env = {**os.environ, "QUIVER_DATASETS": str(spec_path), "QUIVER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "quiver", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_search_json(built):
    done = _cli(built, "search", "pkgs", "text editor", "--k", "7", "--json", "--columns", "package,section")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert len(hits) == 7
    assert list(hits[0]) == ["pkg_id", *HYBRID_COLUMNS, "package", "section"]  # hybrid: the default with full text
    assert [h["fused_score"] for h in hits] == sorted((h["fused_score"] for h in hits), reverse=True)
    vector = json.loads(_cli(built, "search", "pkgs", "text editor", "--k", "7", "--json", "--mode", "vector").stdout)
    assert list(vector[0]) == ["pkg_id", "score", "distance", "package", "section", "short_description"]
    assert [h["score"] for h in vector] == sorted((h["score"] for h in vector), reverse=True)


def test_search_table_and_errors(built):
    done = _cli(built, "search", "pkgs", "text editor", "--k", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:7] == ["pkg_id", *HYBRID_COLUMNS] and len(lines) == 2 + 3
    unknown = _cli(built, "search", "nope", "text")
    assert unknown.returncode == 2 and "unknown dataset 'nope'; known datasets: pkgs" in unknown.stderr
    bad_k = _cli(built, "search", "pkgs", "text", "--k", "0")
    assert bad_k.returncode == 2 and "k must be a positive integer" in bad_k.stderr


def test_status_json(built):
    done = _cli(built, "status", "--json")
    assert done.returncode == 0, done.stderr
    [state] = json.loads(done.stdout)
    assert state["dataset"] == "pkgs" and state["built"] is True
    assert state["snapshot_vectors"] == 120 and state["segments_after_snapshot"] == 0
    assert state["identity"]["dim"] == 384
    assert state["snapshot_due"] is False and state["snapshot_decision"].startswith("no segments after snapshot seq 120")
    assert state["next_snapshot"] == "incremental" and state["segment_records_after_snapshot"] == 0


def test_snapshot_sensor_requests_once_per_log_position(built, sample_table):
    spec_path, home = built
    spec = load_spec(spec_path)
    defs = build_definitions(spec, home)
    sensor = defs.get_sensor_def("pkgs_snapshot_sensor")
    instance = DagsterInstance.ephemeral()
    # Everything is folded into the snapshot: nothing to do, with the reason.
    result = sensor(build_sensor_context(instance=instance, cursor='{"last_seq": 0}'))
    assert isinstance(result, SensorResult) and not result.run_requests
    assert result.skip_reason.skip_message == "no segments after snapshot seq 120: nothing to fold"
    # A refresh adds a segment; snapshot thresholds (interval 0, 1 segment, 5%) are then met.
    source = spec.get("pkgs").source_path
    pq.write_table(sample_table.slice(0, 140), source)
    assets = [a for a in dataset_assets(spec.get("pkgs")) if a.key.path[-1] != "snapshot"]
    assert materialize(assets, resources=build_resources(spec, home), instance=instance).success
    result = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    [request] = result.run_requests
    assert request.run_key == "pkgs:snapshot:140"
    assert json.loads(result.cursor)["due"] is True
