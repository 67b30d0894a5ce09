"""quiver as a Dagster Component: a ``defs.yaml`` in someone else's project, loaded the way ``dg``
loads it, gives the same definitions as our own code location, and they run, with the real model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, DagsterInstance, Definitions
from dagster.components.core.package_entry import discover_entry_point_package_objects
from dagster.components.testing import DefsFolderSandbox, random_importable_name

from quiver.pipelines.component import QuiverComponent
from quiver.resources.spec import SpecError, UnknownDatasetError
from tests.conftest import dataset_entry, write_spec

DS, ROWS = "pkgs", 40
STAGES = ("rows", "embeddings", "index", "snapshot")
CHECKS = {("embeddings", "embeddings_valid"), ("index", "recall_at_10"), ("index", "parity"), ("snapshot", "snapshot_integrity")}
TYPE = "quiver.pipelines.component.QuiverComponent"
# Dagster marks the code references it attaches to a component's assets as beta
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def user_project(tmp_path, sample_table, attributes: dict) -> tuple[DefsFolderSandbox, object]:
    """A user's project (``src/<name>/defs/quiver/defs.yaml``) beside a spec of two datasets whose
    sources are given relative to the spec, as a user would write them."""
    name = random_importable_name()
    folder = tmp_path / "src" / name / "defs" / "quiver"
    folder.mkdir(parents=True)
    pq.write_table(sample_table.slice(0, ROWS), folder / "pkgs.parquet")
    pq.write_table(sample_table.slice(ROWS, 10), folder / "other.parquet")
    write_spec(folder / "datasets.yaml", [
        dataset_entry(DS, "pkgs.parquet", refresh_cron="0 3 * * *"),  # dataset_entry keeps the path as given
        dataset_entry("other", "other.parquet"),
    ])
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": TYPE, "attributes": attributes}))
    sandbox = DefsFolderSandbox(project_root=tmp_path, defs_folder_path=folder.parent, project_name=name)
    return sandbox, folder


def test_the_component_builds_our_definitions_and_they_run(tmp_path, sample_table):
    sandbox, folder = user_project(tmp_path, sample_table, {"spec": "datasets.yaml", "datasets": [DS]})
    with sandbox.load_component_and_build_defs(defs_path=folder) as (component, defs):
        assert isinstance(component, QuiverComponent) and component.home == ".quiver"
        Definitions.validate_loadable(defs)
        keys = set(defs.resolve_all_asset_keys())
        assert {AssetKey([DS, stage]) for stage in STAGES} <= keys
        assert not any(k.path[0] == "other" for k in keys)  # `datasets` left it out
        assert set(defs.resolve_asset_graph().asset_check_keys) == {
            AssetCheckKey(AssetKey([DS, stage]), check) for stage, check in CHECKS
        }
        assert {job.name for job in defs.jobs} == {f"{DS}_refresh", f"{DS}_snapshot"}
        assert {s.name for s in defs.sensors} == {f"{DS}_source_sensor", f"{DS}_snapshot_sensor"}
        assert [s.name for s in defs.schedules] == [f"{DS}_refresh_schedule"]
        home = folder / ".quiver"  # `home` defaults to .quiver beside the defs.yaml
        assert defs.resources["index_store"].home == str(home)
        assert defs.resources["search"].datasets == [DS]

        # Run the component's own jobs with its own resources, then ask its search resource.
        instance = DagsterInstance.ephemeral()
        for job in (f"{DS}_refresh", f"{DS}_snapshot"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance).success, job
        assert (home / "quiver.duckdb").is_file() and (home / DS).is_dir()
        hits = defs.resources["search"].search(DS, "python library for web development", k=5)
        assert hits.num_rows == 5
        assert set(hits.column("pkg_id").to_pylist()) <= set(sample_table.slice(0, ROWS).column("pkg_id").to_pylist())


def test_schedules_and_sensors_can_be_left_out(tmp_path, sample_table):
    attributes = {"spec": "datasets.yaml", "home": "{{ context.project_root }}/state", "schedules": False, "sensors": False}
    sandbox, folder = user_project(tmp_path, sample_table, attributes)
    with sandbox.load_component_and_build_defs(defs_path=folder) as (_, defs):
        assert not list(defs.schedules) and not list(defs.sensors)
        assert {job.name for job in defs.jobs} == {f"{d}_{j}" for d in (DS, "other") for j in ("refresh", "snapshot")}
        # Dagster's template gives an absolute home outside the source tree; it is kept as given
        assert defs.resources["index_store"].home == str((tmp_path / "state").resolve())


@pytest.mark.parametrize("index_root", ["indexes", "s3://my-bucket/quiver"])
def test_the_index_root_is_an_attribute(tmp_path, sample_table, monkeypatch, index_root):
    monkeypatch.delenv("QUIVER_INDEX_ROOT", raising=False)
    attributes = {"spec": "datasets.yaml", "index_root": index_root}
    sandbox, folder = user_project(tmp_path, sample_table, attributes)
    with sandbox.load_component_and_build_defs(defs_path=folder) as (_, defs):
        expected = index_root if index_root.startswith("s3://") else str(folder / index_root)
        assert defs.resources["index_store"].index_root == expected  # a directory: relative to the defs.yaml
        assert defs.resources["search"].index_root == expected
        where = defs.resources["index_store"].where(DS)
        assert where == (f"{index_root}/{DS}" if index_root.startswith("s3://") else str(folder / index_root / DS))


@pytest.mark.parametrize(
    ("attributes", "error", "message"),
    [
        (
            {"spec": "missing.yaml"},
            SpecError,
            r"QuiverComponent attribute `spec` in .*: no dataset spec at .*missing\.yaml; create it or set `spec`",
        ),
        (
            {"spec": "datasets.yaml", "datasets": [DS, "nope"]},
            UnknownDatasetError,
            r"QuiverComponent attribute `datasets` in .*: unknown dataset\(s\) 'nope'; .*defines pkgs, other: use",
        ),
        (
            {"spec": "datasets.yaml", "datasets": []},
            SpecError,
            r"QuiverComponent attribute `datasets` in .*: the list is empty",
        ),
    ],
    ids=["missing-spec", "unknown-dataset", "no-datasets"],
)
def test_a_bad_attribute_names_itself_and_the_fix(tmp_path, sample_table, attributes, error, message):
    sandbox, folder = user_project(tmp_path, sample_table, attributes)
    with pytest.raises(Exception) as raised, sandbox.load_component_and_build_defs(defs_path=folder):
        pass
    cause = raised.value
    while not isinstance(cause, error) and cause.__cause__ is not None:  # Dagster may wrap it
        cause = cause.__cause__
    assert isinstance(cause, error), raised.value
    assert "\n" not in str(cause)
    assert re.search(message, str(cause)), str(cause)


def test_dg_finds_the_component_through_the_entry_point():
    """``dg list components`` lists what the ``dagster_dg_cli.registry_modules`` entry points hold."""
    found = {(key.namespace, key.name): obj for key, obj in discover_entry_point_package_objects().items()}
    assert found[("quiver.pipelines.component", "QuiverComponent")] is QuiverComponent


def test_importing_the_component_reads_no_spec(tmp_path):
    """A user's project has no quiver datasets.yaml: the component's module must not need one
    (quiver.pipelines.definitions does, for this project's own ``defs``)."""
    env = {"PATH": "/usr/bin:/bin", "QUIVER_DATASETS": str(tmp_path / "absent.yaml"), "QUIVER_HOME": str(tmp_path)}
    code = "import quiver.pipelines.component as c; print(c.QuiverComponent.__name__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "QuiverComponent", done.stderr


def dg_command(tool: str, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """One run of the real command line (``dg``, ``create-dagster``) from this interpreter's
    environment, bounded; it must succeed and print no warning (a superseded or deprecated command
    prints one on stderr)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Warning" not in done.stderr, f"{tool} {' '.join(args)}: {done.stderr[-4000:]}"
    return done


def test_dg_scaffolds_the_component_into_a_new_project_and_lists_its_definitions(tmp_path, sample_table):
    """What a user does with Dagster 1.13's command line, offline: ``create-dagster project`` (dg's
    project scaffolder; ``--no-uv-sync`` and no update check, so nothing is fetched), ``dg scaffold
    defs`` with quiver's type, a spec and the attributes in the scaffolded defs.yaml, then ``dg check
    defs`` and ``dg list defs --json``. PYTHONPATH=src stands in for installing the new project
    (``uv sync`` would fetch); quiver itself is the one installed here."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ, "HOME": str(tmp_path), "DAGSTER_HOME": str(home),
        "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0", "PYTHONPATH": "src",
    }
    dg_command("create-dagster", "project", "my_project", "--no-uv-sync", cwd=tmp_path, env=env)
    project = tmp_path / "my_project"
    assert 'directory_type = "project"' in (project / "pyproject.toml").read_text()

    dg_command("dg", "scaffold", "defs", TYPE, "quiver", cwd=project, env=env)
    folder = project / "src" / "my_project" / "defs" / "quiver"
    scaffolded = yaml.safe_load((folder / "defs.yaml").read_text())
    assert scaffolded["type"] == TYPE

    pq.write_table(sample_table.slice(0, ROWS), folder / "pkgs.parquet")
    pq.write_table(sample_table.slice(ROWS, 10), folder / "other.parquet")
    write_spec(folder / "datasets.yaml", [
        dataset_entry(DS, "pkgs.parquet", refresh_cron="0 3 * * *"),
        dataset_entry("other", "other.parquet"),
    ])
    scaffolded["attributes"] = {"spec": "datasets.yaml", "home": "{{ context.project_root }}/.quiver", "datasets": [DS]}
    (folder / "defs.yaml").write_text(yaml.safe_dump(scaffolded, sort_keys=False))

    dg_command("dg", "check", "defs", cwd=project, env=env)
    listed = json.loads(dg_command("dg", "list", "defs", "--json", cwd=project, env=env).stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {f"{DS}/{stage}" for stage in STAGES} <= assets
    assert not any(key.startswith("other/") for key in assets)  # `datasets` left it out
    assert {(c["asset_key"], c["name"]) for c in listed["asset_checks"]} == {(f"{DS}/{s}", c) for s, c in CHECKS}
    assert {j["name"] for j in listed["jobs"]} == {f"{DS}_refresh", f"{DS}_snapshot"}
    assert {s["name"] for s in listed["sensors"]} == {f"{DS}_source_sensor", f"{DS}_snapshot_sensor"}
    assert [s["name"] for s in listed["schedules"]] == [f"{DS}_refresh_schedule"]
    assert {r["name"] for r in listed["resources"]} == {"duckdb", "embedder", "index_store", "search"}
    assert not (project / ".quiver").exists()  # listing builds nothing
