"""``embeddings.fan_out: 2`` through Dagster with the multiprocess executor and the real model: the
embeddings asset is a graph (plan, one embed step per part, commit), the two embed steps run in
processes of their own at the same time as far as the cores allow, the writer steps never overlap
(the pool of 1), and afterwards the invariants hold and a search finds the rows. About 40 s."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.assets import dataset_assets
from quiver.pipelines.component import DUCKDB_FILE, build_definitions, build_resources
from quiver.resources.dagster_resources import WRITER_POOL
from quiver.resources.embed_fanout import STAGING_DIR
from quiver.resources.search import Searcher
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.dagster.helpers import metadata_of
from tests.invariants import check_at_rest, table_state

DS = "pkgs"
ROWS = 240


def refresh_job() -> dg.JobDefinition:
    """The refresh job of the spec in $QUIVER_DATASETS, multiprocess (reconstructed in each step's process)."""
    spec = load_spec(Path(os.environ["QUIVER_DATASETS"]))
    return build_definitions(spec, Path(os.environ["QUIVER_HOME"]), executor="multiprocess").resolve_job_def(f"{DS}_refresh")


def snapshot_job() -> dg.JobDefinition:
    spec = load_spec(Path(os.environ["QUIVER_DATASETS"]))
    return build_definitions(spec, Path(os.environ["QUIVER_HOME"]), executor="multiprocess").resolve_job_def(f"{DS}_snapshot")


@pytest.fixture()
def instance(tmp_path):
    """A persistent instance (the multiprocess executor needs one) with quiver's pool limit of 1."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        yield instance


def run(job, instance) -> tuple[dg.DagsterRun, list]:
    with dg.execute_job(dg.reconstructable(job), instance=instance) as result:
        records = instance.all_logs(result.run_id)
        failures = [r.dagster_event.event_specific_data for r in records if r.dagster_event and r.dagster_event.is_step_failure]
        assert result.success, failures
        return result.dagster_run, records


def steps(records) -> dict[str, dict]:
    """Each step's process, start and end, from the run's events."""
    found: dict[str, dict] = {}
    for record in records:
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step = found.setdefault(event.step_key, {})
        if event.event_type == dg.DagsterEventType.STEP_START:
            step.update(pid=event.pid, start=record.timestamp)
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            step["end"] = record.timestamp
    return found


def embeddings_metadata(records) -> dict:
    for record in records:
        event = record.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            if materialization.asset_key == dg.AssetKey([DS, "embeddings"]):
                return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise KeyError("no materialization of the embeddings asset")


def test_a_fanned_out_refresh_through_the_multiprocess_executor(tmp_path, sample_table, monkeypatch, instance):
    source = tmp_path / "src" / "packages.parquet"
    source.parent.mkdir()
    pq.write_table(sample_table.slice(0, ROWS), source)
    spec_path = write_spec(
        tmp_path / "datasets.yaml",
        [dataset_entry(DS, source, embeddings={"columns": ["package", "short_description"], "separator": ": ", "fan_out": 2})],
    )
    home = tmp_path / "home"
    monkeypatch.setenv("QUIVER_DATASETS", str(spec_path))
    monkeypatch.setenv("QUIVER_HOME", str(home))
    monkeypatch.setenv("QUIVER_EMBED_THREADS", "1")  # two workers on two shared cores

    job = refresh_job()
    assert job.executor_def is dg.multiprocess_executor
    embeddings_graph = next(node for node in job.graph.node_defs if isinstance(node, dg.GraphDefinition))
    pools = {node.name: node.pool for node in embeddings_graph.node_defs}  # the graph asset's ops
    assert pools[f"{DS}_plan_embeddings"] == pools[f"{DS}_commit_embeddings"] == WRITER_POOL
    assert pools[f"{DS}_embed_part"] is None, "the workers hold no DuckDB connection and no writer slot"

    first_run, records = run(refresh_job, instance)
    first = steps(records)
    embeds = {k: v for k, v in first.items() if "embed_part[" in k}
    assert sorted(embeds) == [f"{DS}__embeddings.{DS}_embed_part[part_{i}]" for i in range(2)]
    assert len({step["pid"] for step in first.values()}) == len(first), "every step in a process of its own"
    writer_keys = (f"{DS}__rows", f"{DS}__embeddings.{DS}_plan_embeddings", f"{DS}__embeddings.{DS}_commit_embeddings", f"{DS}__index")
    writers = sorted((first[k] for k in writer_keys), key=lambda s: s["start"])  # the steps in the writer pool
    for before, after in itertools.pairwise(writers):
        assert after["start"] >= before["end"], "the DuckDB writers never overlap"
    meta = embeddings_metadata(records)
    assert (meta["parts"], meta["rows_new"], meta["rows_embedded"], meta["dagster/row_count"]) == (2, ROWS, ROWS, ROWS)
    assert first_run.tags.get("quiver/pid") == str(os.getpid()), "tagged with the run's process, alive between steps"

    # a change: edits, deletes and inserts, refreshed through the same graph
    table = pq.read_table(source)
    edited = table.slice(0, 10).set_column(3, table.schema.field(3), pa.array([f"edited text {i}" for i in range(10)]))
    pq.write_table(pa.concat_tables([edited, table.slice(20), sample_table.slice(ROWS, 15).cast(table.schema)]), source)
    _, records = run(refresh_job, instance)
    meta = embeddings_metadata(records)
    assert {k: meta[f"rows_{k}"] for k in ("new", "changed", "deleted", "embedded")} == {
        "new": 15, "changed": 10, "deleted": 10, "embedded": 25
    }
    assert meta["parts"] == 2 and meta["rows_stale"] == 0
    run(snapshot_job, instance)

    database = home / DUCKDB_FILE
    state = check_at_rest(home / DS, database, DS)  # I1, I2 (and I3, I6, I7)
    assert len(state) == len(table_state(database, DS)) == ROWS - 10 + 15
    assert not any((home / STAGING_DIR / DS).iterdir()), "the committed plans' staging directories are removed"
    searcher = Searcher.for_spec_file(home, spec_path)
    for row in (sample_table.slice(ROWS, 1).to_pylist()[0], table.slice(30, 1).to_pylist()[0]):  # a new row, a kept one
        hits = searcher.search(DS, f"{row['package']}: {row['short_description']}", k=3, mode="vector")
        assert row["pkg_id"] in hits.column("pkg_id").to_pylist()


def test_nothing_changed_and_a_full_rebuild_through_the_fanned_out_asset(tmp_path, sample_table, monkeypatch):
    """In the run's own process: a refresh that finds nothing stages and commits nothing, and a full
    rebuild (the same run config as the single-step asset's) takes the single-step path."""
    source = tmp_path / "packages.parquet"
    pq.write_table(sample_table.slice(0, 40), source)
    spec_path = write_spec(
        tmp_path / "datasets.yaml",
        [dataset_entry(DS, source, embeddings={"columns": ["package", "short_description"], "fan_out": 3})],
    )
    home = tmp_path / "home"
    monkeypatch.setenv("QUIVER_HOME", str(home))
    spec = load_spec(spec_path)

    def materialize(run_config=None) -> dict:
        result = dg.materialize(
            dataset_assets(spec.get(DS)), resources=build_resources(spec, home), run_config=run_config,
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        return metadata_of(result, [DS, "embeddings"])

    first = materialize()
    assert (first["parts"], first["rows_embedded"], first["committed"]) == (3, 40, True)
    again = materialize()
    assert (again["parts"], again["rows_embedded"], again["committed"], again["rows_unchanged"]) == (0, 0, False, 40)
    rebuilt = materialize({"ops": {f"{DS}__embeddings": {"config": {"full_rebuild": True}}}})
    assert (rebuilt["full_rebuild"], rebuilt["rows_embedded"], rebuilt["parts"]) == (True, 40, 0)
    assert len(check_at_rest(home / DS, home / DUCKDB_FILE, DS)) == 40
