"""A bad spec, a missing source, a wrong primary key or a duplicate key reach the user as one
message naming the dataset and the fix: ``validate`` and ``status`` before any work, the command
line as one line and exit code 2 (no stack trace), a Dagster run as its failure description."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import build_resources
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.engine.test_writer_lock import hold
from tests.servers import aws_env

DS = "pkgs"


def quiver(tmp_path, *args):
    env = {**os.environ, "QUIVER_DATASETS": str(tmp_path / "datasets.yaml"), "QUIVER_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    (tmp_path / "dagster" / "dagster.yaml").write_text((ROOT / "pipelines" / "dagster.yaml").read_text())
    return subprocess.run([sys.executable, "-m", "quiver", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture()
def project(tmp_path, sample_table):
    pq.write_table(sample_table.slice(0, 30), tmp_path / "src.parquet")
    return tmp_path


CASES = {
    "missing source": ({"from": "nowhere.parquet"}, None, "dataset 'pkgs': no Parquet file at"),
    "primary key not in the source": ({"primary_key": "pkg"}, None, "dataset 'pkgs': primary key column 'pkg' is not in the source"),
    "model not offline": ({"embeddings": {"columns": ["package"], "model": "no/such-model"}}, None, "dataset 'pkgs': model 'no/such-model'"),
    "duplicate primary key": ({}, lambda t: pa.concat_tables([t, t.slice(0, 1)]), "dataset 'pkgs': primary key 'pkg_id' is not unique"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_command_line_says_it_in_one_line_and_exits_2(project, sample_table, case):
    change, mutate, message = CASES[case]
    entry = dataset_entry(DS, project / "src.parquet") | change
    if mutate is not None:
        pq.write_table(mutate(sample_table.slice(0, 30)), project / "src.parquet")
    write_spec(project / "datasets.yaml", [entry])
    done = quiver(project, "refresh")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Stack Trace" not in done.stderr
    if mutate is None:  # found before any work: validate and status say the same, and fail
        for command in ("validate", "status"):
            checked = quiver(project, command)
            assert checked.returncode == 2 and message in checked.stderr, (command, checked.stderr)
            assert "Traceback" not in checked.stderr


def test_validate_says_ok_and_exits_0(project):
    write_spec(project / "datasets.yaml", [dataset_entry(DS, project / "src.parquet")])
    done = quiver(project, "validate")
    assert done.returncode == 0 and done.stdout.startswith(f"ok: dataset '{DS}'"), done.stderr


def test_a_dagster_run_fails_with_the_message_as_its_description(project, sample_table):
    pq.write_table(pa.concat_tables([sample_table.slice(0, 30), sample_table.slice(0, 2)]), project / "src.parquet")
    spec = load_spec(write_spec(project / "datasets.yaml", [dataset_entry(DS, project / "src.parquet")]))
    result = materialize(
        dataset_assets(spec.get(DS)), resources=build_resources(spec, project / "home"),
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("dataset 'pkgs': primary key 'pkg_id' is not unique") and "\n" not in description


def test_an_unreachable_bucket_fails_the_refresh_with_one_line_naming_it(project, monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in aws_env(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QUIVER_INDEX_ROOT", "s3://nowhere/quiver")
    write_spec(project / "datasets.yaml", [dataset_entry(DS, project / "src.parquet")])
    done = quiver(project, "refresh")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert f"s3://nowhere/quiver/{DS}: cannot reach the object store at http://127.0.0.1:{port}" in errors[0], errors[0]
    assert "AWS_ENDPOINT_URL" in errors[0] and "Traceback" not in done.stderr


def test_a_second_writer_of_the_duckdb_file_fails_with_one_line(project, monkeypatch):
    """Another writer (here a script holding the file's writer lock, of no Dagster instance at all)
    makes a refresh wait, then fail with one line naming it; nothing is written meanwhile."""
    write_spec(project / "datasets.yaml", [dataset_entry(DS, project / "src.parquet")])
    holder = hold(project / "home" / "quiver.duckdb", 60)
    try:
        monkeypatch.setenv("QUIVER_WRITER_WAIT_SECONDS", "1")
        done = quiver(project, "refresh")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "being written by another writer (run abc step pkgs/rows" in errors[0], done.stderr[-2000:]
    assert not (project / "home" / "quiver.duckdb").exists(), "the second writer wrote nothing"
