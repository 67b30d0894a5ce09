"""The index root on a bucket (moto's S3 server on 127.0.0.1), through Dagster with the real model:
materialize with ``QUIVER_INDEX_ROOT=s3://...``, search from a reader on another cache (another
machine), change the source, materialize again, and check the storage invariants on the bucket."""

from __future__ import annotations

import uuid

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context, materialize

from quiver.assets import dataset_assets, dataset_checks
from quiver.pipelines.definitions import DUCKDB_FILE, build_definitions, build_resources
from quiver.resources.search import Searcher
from quiver.resources.spec import load_spec
from quiver.resources.spec_file import SpecError, default_home
from tests.conftest import dataset_entry, write_spec
from tests.invariants import check_bucket_at_rest
from tests.servers import aws_env, create_bucket, moto_server


@pytest.fixture
def bucket_project(tmp_path, sample_table, monkeypatch):
    with moto_server() as server:
        for name, value in aws_env(server.url).items():
            monkeypatch.setenv(name, value)
        bucket = f"e2e-{uuid.uuid4().hex[:12]}"
        create_bucket(server.url, bucket)
        source = tmp_path / "src" / "packages.parquet"
        source.parent.mkdir()
        pq.write_table(sample_table.slice(0, 300), source)
        spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)])
        monkeypatch.setenv("QUIVER_INDEX_ROOT", f"s3://{bucket}/indexes")
        monkeypatch.setenv("QUIVER_INDEX_CACHE", str(tmp_path / "reader-cache"))
        yield spec_path, tmp_path / "home", source, f"s3://{bucket}/indexes"


def materialize_with_checks(spec_path, home):
    spec = load_spec(spec_path)
    dataset = spec.datasets[0]
    result = materialize(
        [*dataset_assets(dataset), *dataset_checks(dataset)],
        resources=build_resources(spec, home),
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert not failed, failed
    return result


def test_an_index_on_a_bucket_serves_readers_elsewhere_and_keeps_its_invariants(bucket_project, tmp_path, sample_table):
    spec_path, home, source, root = bucket_project
    materialize_with_checks(spec_path, home)
    assert not (home / "pkgs").exists(), "the index lives on the bucket, its working copy under home/remote"

    reader = Searcher.for_spec(tmp_path / "elsewhere", load_spec(spec_path))
    hits = reader.search("pkgs", "python library for web development", k=5, mode="vector")
    assert hits.num_rows == 5
    check_bucket_at_rest(f"{root}/pkgs", tmp_path / "copy-1", home / DUCKDB_FILE, "pkgs")

    # the source changes: 100 rows leave, 100 arrive
    pq.write_table(sample_table.slice(100, 300), source)
    materialize_with_checks(spec_path, home)
    reader.reader("pkgs").refresh()
    for mirror in reader._mirrors.values():
        mirror.pull(force=True)
    state = check_bucket_at_rest(f"{root}/pkgs", tmp_path / "copy-2", home / DUCKDB_FILE, "pkgs")
    assert sorted(entry.pk for entry in state.values()) == sorted(sample_table.slice(100, 300).column("pkg_id").to_pylist())
    gone = sample_table.column("pkg_id")[0].as_py()
    found = reader.search("pkgs", sample_table.column("short_description")[0].as_py(), k=10, mode="vector")
    assert gone not in found.column("pkg_id").to_pylist()
    arrived = sample_table.slice(350, 1)
    found = reader.search("pkgs", arrived.column("package")[0].as_py() + ": " + arrived.column("short_description")[0].as_py(), k=3, mode="vector")
    assert arrived.column("pkg_id")[0].as_py() in found.column("pkg_id").to_pylist()


def test_the_sensors_of_a_daemon_elsewhere_decide_on_the_bucket(bucket_project, tmp_path):
    spec_path, home, _, _ = bucket_project
    spec = load_spec(spec_path)
    elsewhere = build_definitions(spec, tmp_path / "daemon-home")  # no local copy of the index there
    instance = DagsterInstance.ephemeral()

    def tick(name):
        return elsewhere.get_sensor_def(name)(build_sensor_context(instance=instance))

    assert "no index at s3://" in tick("pkgs_snapshot_sensor").skip_message
    first = tick("pkgs_source_sensor")
    assert [r.tags["dataset"] for r in first.run_requests] == ["pkgs"], "no index on the bucket: build it"
    dataset = spec.datasets[0]
    refresh = [a for a in dataset_assets(dataset) if getattr(a, "key", None) != AssetKey(["pkgs", "snapshot"])]
    result = materialize(refresh, resources=build_resources(spec, home), instance=DagsterInstance.ephemeral())
    assert result.success
    [request] = tick("pkgs_snapshot_sensor").run_requests  # on startup, the log holds segments: a snapshot is due
    assert request.run_key == "pkgs:snapshot:300"
    assert not (tmp_path / "daemon-home" / "remote").exists(), "the daemon read the manifest alone"


def test_a_home_on_a_bucket_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("QUIVER_HOME", "s3://bucket/quiver")
    with pytest.raises(SpecError, match="QUIVER_INDEX_ROOT=s3://bucket/quiver"):
        default_home()
