"""Asset checks and materialization metadata through Dagster, with the real model.

One healthy project (150 rows) is built once; each breaking test copies its home directory, breaks
one thing (a key removed from the index, a corrupted snapshot byte, a NaN vector, a poor graph)
and runs the checks again through ``materialize``.
"""

from __future__ import annotations

import base64
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetSelection,
    DagsterInstance,
    FloatMetadataValue,
    IntMetadataValue,
    materialize,
)

from quiver.assets import dataset_assets, dataset_checks, evaluation_asset
from quiver.pipelines.definitions import DUCKDB_FILE, build_definitions, build_resources
from quiver.resources.dagster_resources import key
from quiver.resources.index import IndexReader, IndexStore
from quiver.resources.index.commitlog import KEY, OP, SEQ, VECTOR, vector_type
from quiver.resources.index.manifest import read_manifest
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import metadata_of

DS, ROWS = "pkgs", 150
BOUNDS = {"recall_at_10_min": 0.9, "recall_at_10_warn": 0.9}
CHECKS = {
    ("embeddings", "embeddings_valid"),
    ("index", "recall_at_10"),
    ("index", "parity"),
    ("snapshot", "snapshot_integrity"),
}


def _run(spec_path, home, selection=None, evaluation=False):
    spec = load_spec(spec_path)
    ds = spec.get(DS)
    defs = [*dataset_assets(ds), *dataset_checks(ds)] + ([evaluation_asset(ds)] if evaluation else [])
    return materialize(
        defs,
        selection=selection,
        resources=build_resources(spec, home),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _checks_of(spec_path, home, stage):
    """Run only the checks of one asset (the asset itself is not materialized again)."""
    ds = load_spec(spec_path).get(DS)
    return _run(spec_path, home, selection=AssetSelection.checks_for_assets(key(ds, stage)))


def _evaluations(result) -> dict:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def _meta(evaluation) -> dict:
    return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, sample_table):
    base = tmp_path_factory.mktemp("checks")
    source = base / "src" / "packages.parquet"
    source.parent.mkdir()
    pq.write_table(sample_table.slice(0, ROWS), source)
    # usearch builds graphs on several threads, so recall varies a little from build to build (0.98-1.0
    # at this size): the bounds leave room, the tests of poor recall use a graph far below them.
    spec_path = write_spec(base / "datasets.yaml", [dataset_entry(DS, source, checks=BOUNDS)])
    home = base / "home"
    result = _run(spec_path, home, evaluation=True)
    assert result.success
    return spec_path, home, result, source


@pytest.fixture()
def broken(healthy, tmp_path):
    """A copy of the healthy home to break; the spec is shared (read only)."""
    spec_path, home, _, _ = healthy
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return spec_path, copy


def test_every_check_passes_on_a_healthy_index(healthy):
    _, _, result, _ = healthy
    evaluations = _evaluations(result)
    assert set(evaluations) == CHECKS
    assert all(e.passed for e in evaluations.values()), [e.description for e in evaluations.values() if not e.passed]

    recall = evaluations["index", "recall_at_10"]
    meta = _meta(recall)
    assert meta["recall_at_10"] >= 0.9 and meta["sample_size"] == ROWS and meta["ef_search"] == 64
    assert (meta["recall_min"], meta["recall_warn"]) == (0.9, 0.9)
    # the whole check includes its searches, and half of the queries took at least the median
    assert meta["seconds"] >= meta["search_seconds"] > 0
    assert meta["search_seconds"] + 0.0005 >= ROWS / 2 * meta["latency_ms_p50"] / 1000  # rounded to a ms
    assert isinstance(recall.metadata["recall_at_10"], FloatMetadataValue)
    assert isinstance(recall.metadata["sample_size"], IntMetadataValue)

    parity = _meta(evaluations["index", "parity"])
    assert parity["table_rows"] == parity["index_vectors"] == ROWS
    assert parity["table_fingerprint"] == parity["index_fingerprint"]
    assert parity["missing_keys"] == parity["extra_keys"] == []

    integrity = _meta(evaluations["snapshot", "snapshot_integrity"])
    assert integrity["vectors"] == ROWS and integrity["index_checksum"].startswith("xxh3_128:")

    embeddings = _meta(evaluations["embeddings", "embeddings_valid"])
    assert embeddings["rows"] == ROWS and embeddings["dim"] == embeddings["model_dim"] == 384
    assert embeddings["bad_rows"] == 0


def test_materializations_carry_numbers_and_pictures(healthy):
    _, home, result, _ = healthy
    rows = metadata_of(result, [DS, "rows"])
    assert rows["dagster/row_count"] == ROWS and rows["duckdb_file_bytes"] > 0 and rows["source_bytes"] > 0

    embeddings = metadata_of(result, [DS, "embeddings"])
    assert embeddings["rows_embedded"] == ROWS and embeddings["raw_vector_bytes"] == ROWS * 384 * 4
    assert embeddings["preview"].count("\n| embedded |") == 5 and "_145 more_" in embeddings["preview"]

    index = metadata_of(result, [DS, "index"])
    assert (index["dagster/row_count"], index["segment_seq_first"], index["segment_seq_last"]) == (ROWS, 1, ROWS)
    assert (index["upserts"], index["deletes"]) == (ROWS, 0)
    assert index["index_dir_bytes"] > 0 and index["raw_vector_bytes"] == ROWS * 384 * 4
    assert index["preview"].startswith("| _seq | _op |") and "_145 more_" in index["preview"]

    snapshot = metadata_of(result, [DS, "snapshot"])
    assert snapshot["dagster/row_count"] == snapshot["vectors"] == ROWS
    assert "| vectors | 0 | 150 |" in snapshot["summary"] and "| index directory bytes |" in snapshot["summary"]
    assert snapshot["index_dir_bytes"] > snapshot["index_dir_bytes_before"]

    evaluation = metadata_of(result, [DS, "evaluation"])
    chart = evaluation["chart"]
    png = base64.b64decode(chart.split("base64,", 1)[1].rstrip(")"))
    assert png.startswith(b"\x89PNG")
    assert (home / "quiver-reports" / DS / "recall_vs_ef_search.png").read_bytes() == png
    points = evaluation["points"]
    assert [p["ef_search"] for p in points] == sorted(p["ef_search"] for p in points)
    assert all(0 <= p["recall_at_10"] <= 1 and p["p50_ms"] > 0 for p in points)
    assert evaluation["recall_at_10"] >= 0.9 and evaluation["ef_search"] == 64


def test_parity_fails_when_a_key_is_removed_from_the_index(broken):
    spec_path, home = broken
    root = home / DS
    manifest = read_manifest(root)
    reader = IndexReader(root)
    victim_key = int(reader.state.snap_keys[7])
    victim_pk = reader.rows(np.array([victim_key], dtype=np.uint64), columns=[]).column("pkg_id")[0].as_py()
    seq = reader.served_seq + 1  # a delete that DuckDB never committed
    delete = pa.table(
        {
            SEQ: pa.array([seq], pa.int64()),
            OP: pa.array(["delete"]),
            KEY: pa.array([victim_key], pa.uint64()),
            "pkg_id": pa.array([victim_pk], pa.int64()),
            VECTOR: pa.nulls(1, vector_type(manifest.identity.dim)),
            "package": pa.nulls(1, pa.string()),
            "section": pa.nulls(1, pa.string()),
            "short_description": pa.nulls(1, pa.string()),
        }
    )
    store = IndexStore(root, DS, manifest.identity, manifest.hnsw, manifest.primary_key)
    store.append_segment(delete, seq, seq)

    result = _checks_of(spec_path, home, "index")
    evaluations = _evaluations(result)
    assert set(evaluations) == {("index", "recall_at_10"), ("index", "parity")}
    parity = evaluations["index", "parity"]
    assert not parity.passed and parity.severity == AssetCheckSeverity.ERROR
    meta = _meta(parity)
    assert (meta["table_rows"], meta["index_vectors"]) == (ROWS, ROWS - 1)
    assert meta["missing_keys"] == [victim_pk] and meta["extra_keys"] == [] and meta["missing_count"] == 1
    assert meta["table_fingerprint"] != meta["index_fingerprint"]
    assert f"pkg_id = [{victim_pk}]" in parity.description and "full_rebuild" in parity.description
    assert _meta(evaluations["index", "recall_at_10"])["sample_size"] == ROWS - 1  # the graph still serves the rest


def test_parity_names_rows_the_table_lost(broken):
    spec_path, home = broken
    conn = duckdb.connect(str(home / DUCKDB_FILE))
    try:
        gone = conn.execute(f'SELECT pkg_id FROM "{DS}_embeddings" ORDER BY pkg_id LIMIT 2').fetchall()
        conn.execute(f'DELETE FROM "{DS}_embeddings" WHERE pkg_id IN (?, ?)', [gone[0][0], gone[1][0]])
    finally:
        conn.close()
    parity = _evaluations(_checks_of(spec_path, home, "index"))["index", "parity"]
    assert not parity.passed
    meta = _meta(parity)
    assert sorted(meta["extra_keys"]) == sorted(row[0] for row in gone) and meta["missing_keys"] == []


def test_snapshot_integrity_fails_on_a_corrupted_byte_without_opening_duckdb(broken):
    spec_path, home = broken
    manifest = read_manifest(home / DS)
    target = home / DS / manifest.snapshot.dir / "index.usearch"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    (home / DUCKDB_FILE).rename(home / "elsewhere.duckdb")  # the check must not need it

    result = _checks_of(spec_path, home, "snapshot")
    integrity = _evaluations(result)["snapshot", "snapshot_integrity"]
    assert not integrity.passed and integrity.severity == AssetCheckSeverity.ERROR
    assert "fails its checksum" in integrity.description and "index.usearch" in integrity.description
    assert not (home / DUCKDB_FILE).exists()


def test_embeddings_valid_names_nan_and_zero_vectors(broken):
    spec_path, home = broken
    conn = duckdb.connect(str(home / DUCKDB_FILE))
    try:
        (nan_pk,), (zero_pk,) = conn.execute(f'SELECT pkg_id FROM "{DS}_embeddings" ORDER BY pkg_id LIMIT 2').fetchall()
        nan_first = "list_transform(_vector::FLOAT[], (x, i) -> CASE WHEN i = 1 THEN 'nan'::FLOAT ELSE x END)"
        conn.execute(f'UPDATE "{DS}_embeddings" SET _vector = {nan_first}::FLOAT[384] WHERE pkg_id = ?', [nan_pk])
        conn.execute(f'UPDATE "{DS}_embeddings" SET _vector = ?::FLOAT[384] WHERE pkg_id = ?', [[0.0] * 384, zero_pk])
    finally:
        conn.close()

    result = _checks_of(spec_path, home, "embeddings")
    check = _evaluations(result)["embeddings", "embeddings_valid"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    meta = _meta(check)
    assert (meta["non_finite_rows"], meta["zero_vector_rows"], meta["bad_rows"]) == (1, 1, 2)
    assert meta["offending_keys"] == {"non_finite": [nan_pk], "zero_vector": [zero_pk]}
    assert f"pkg_id = {nan_pk!r}" in check.description and f"pkg_id = {zero_pk!r}" in check.description


@pytest.mark.parametrize(
    ("bounds", "severity", "snapshot_runs"),
    [
        ({}, AssetCheckSeverity.ERROR, False),
        ({"recall_at_10_min": 0.05, "recall_at_10_warn": 0.99}, AssetCheckSeverity.WARN, True),
    ],
    ids=["below-min-blocks-the-snapshot", "below-warn-only-warns"],
)
def test_poor_recall_fails_and_blocks_the_snapshot(healthy, tmp_path, bounds, severity, snapshot_runs):
    """A graph built with the smallest knobs (m=2, ef_construction=1, ef_search=1) from the same
    DuckDB table: the index asset rebuilds its directory, the recall check judges the new graph."""
    _, home, _, source = healthy
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    shutil.rmtree(copy / DS)
    poor = {"metric": "cosine", "m": 2, "ef_construction": 1, "ef_search": 1}
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry(DS, source, vectors=poor, checks=bounds)])
    ds = load_spec(spec_path).get(DS)

    result = _run(spec_path, copy, selection=AssetSelection.assets(key(ds, "index"), key(ds, "snapshot")))
    recall = _evaluations(result)["index", "recall_at_10"]
    assert not recall.passed and recall.severity == severity
    assert _meta(recall)["recall_at_10"] < 0.9 and _meta(recall)["ef_search"] == 1
    assert "raise vectors.ef_search" in recall.description
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert ("snapshot" in materialized) is snapshot_runs
    assert (read_manifest(copy / DS).snapshot is not None) is snapshot_runs


def test_definitions_register_checks_and_the_on_demand_evaluation(healthy):
    spec_path, home, _, _ = healthy
    defs = build_definitions(load_spec(spec_path), home)
    graph = defs.resolve_asset_graph()
    assert {(k.asset_key.path[-1], k.name) for k in graph.asset_check_keys} == CHECKS
    assert key(load_spec(spec_path).get(DS), "snapshot") in {k for k in graph.get_all_asset_keys()}
    nodes = {job.name: {n.name for n in job.graph.node_defs} for job in defs.resolve_all_job_defs()}
    assert {f"{DS}__index_recall_at_10", f"{DS}__index_parity", f"{DS}__embeddings_embeddings_valid"} <= nodes[
        f"{DS}_refresh"
    ]
    assert f"{DS}__snapshot_snapshot_integrity" in nodes[f"{DS}_snapshot"]
    assert not any(f"{DS}__evaluation" in names for name, names in nodes.items() if not name.startswith("__"))


def test_a_refresh_with_deletes_and_changes_is_described_and_still_passes(healthy, sample_table, tmp_path):
    _, home, _, _ = healthy
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    table = sample_table.slice(3, ROWS - 3)  # the first three rows leave the source
    descriptions = table.column("short_description").to_pylist()
    descriptions[0] = "a text editor for the terminal"  # one row changes its embedded text
    table = table.set_column(
        table.schema.get_field_index("short_description"), "short_description", pa.array(descriptions)
    )
    source = tmp_path / "src" / "packages.parquet"
    source.parent.mkdir()
    pq.write_table(table, source)
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry(DS, source, checks=BOUNDS)])

    result = _run(spec_path, copy)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    gone = sample_table.slice(0, 3).column("pkg_id").to_pylist()
    embeddings = metadata_of(result, [DS, "embeddings"])
    assert (embeddings["rows_deleted"], embeddings["rows_changed"], embeddings["rows_embedded"]) == (3, 1, 1)
    assert "| embedded |" in embeddings["preview"] and all(
        f"| deleted | {pk} |" in embeddings["preview"] for pk in gone
    )
    index = metadata_of(result, [DS, "index"])
    assert (index["upserts"], index["deletes"], index["dagster/row_count"]) == (1, 3, ROWS - 3)
    assert index["segment_seq_first"] == ROWS + 1 and index["segment_seq_last"] == ROWS + 4
    snapshot = metadata_of(result, [DS, "snapshot"])
    assert snapshot["vectors"] == ROWS - 3 and f"| vectors | {ROWS} | {ROWS - 3} |" in snapshot["summary"]
    parity = {e.check_name: e for e in result.get_asset_check_evaluations()}["parity"]
    assert _meta(parity)["table_rows"] == _meta(parity)["index_vectors"] == ROWS - 3
