"""The whole chain through Dagster with the real model: materialize, search, change, again."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, Definitions
from starlette.testclient import TestClient

from quiver.pipelines.definitions import DUCKDB_FILE, build_definitions
from quiver.pipelines.http_api import create_app
from quiver.pipelines.query import search, searcher
from quiver.resources.index import IndexReader
from quiver.resources.index.commitlog import list_segments
from quiver.resources.search import HYBRID_COLUMNS, SearchError, UnknownDatasetError
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import materialize_all, metadata_of
from tests.invariants import check_derived_and_exact, table_state


@pytest.fixture()
def project(tmp_path, sample_table, monkeypatch):
    source = tmp_path / "src" / "packages.parquet"
    source.parent.mkdir()
    pq.write_table(sample_table.slice(0, 400), source)
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", source)])
    home = tmp_path / "home"
    monkeypatch.setenv("QUIVER_DATASETS", str(spec_path))
    monkeypatch.setenv("QUIVER_HOME", str(home))
    return spec_path, home, source


def run_all(spec_path, home, instance=None):
    result = materialize_all(spec_path, home, instance)
    assert result.success
    return result


def test_materialize_then_search(project):
    spec_path, home, _ = project
    result = run_all(spec_path, home)
    meta = metadata_of(result, ["pkgs", "embeddings"])
    assert (meta["rows_read"], meta["rows_new"], meta["rows_embedded"], meta["rows_deleted"]) == (400, 400, 400, 0)
    assert metadata_of(result, ["pkgs", "index"])["records"] == 400
    assert metadata_of(result, ["pkgs", "snapshot"])["vectors"] == 400

    hits = search("pkgs", "python library for web development", k=10)
    assert hits.num_rows == 10
    # hybrid: the default for text on a dataset with a full-text index (on by default)
    assert hits.column_names == ["pkg_id", *HYBRID_COLUMNS, "package", "section", "short_description"]
    scores = hits.column("fused_score").to_pylist()
    assert scores == sorted(scores, reverse=True)
    narrow = search("pkgs", "python library for web development", k=3, columns=["package"])
    assert narrow.column_names == ["pkg_id", *HYBRID_COLUMNS, "package"]
    assert narrow.column("pkg_id").to_pylist() == hits.column("pkg_id").to_pylist()[:3]

    # I2: snapshot + segments equal the embedded table (keys, vectors, served columns).
    check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs")


def test_recall_at_10_against_exact_search(project):
    spec_path, home, _ = project
    run_all(spec_path, home)
    table = table_state(home / DUCKDB_FILE, "pkgs")
    keys = np.array(sorted(table))
    vectors = np.stack([table[k].vector for k in keys])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reader = IndexReader(home / "pkgs")
    rng = np.random.default_rng(7)
    queries = rng.choice(len(keys), 100, replace=False)
    found = 0
    for q in queries:
        exact = keys[np.argsort(-(unit @ unit[q]), kind="stable")[:10]]
        got = reader.search(vectors[q], 10).keys
        found += len(set(exact.tolist()) & set(got.tolist()))
    recall = found / (10 * len(queries))
    assert recall >= 0.95, recall


def test_changed_source_refreshes_exactly(project, sample_table):
    spec_path, home, source = project
    run_all(spec_path, home)
    base = sample_table.slice(0, 400)
    # 5 text changes, 3 deletions, 4 new rows, 2 served-only changes (section).
    ids = base.column("pkg_id").to_pylist()
    changed, deleted, served_only = ids[:5], ids[5:8], ids[8:10]
    text = [
        f"{d} (revised)" if i in changed else d
        for i, d in zip(ids, base.column("short_description").to_pylist())
    ]
    section = ["moved" if i in served_only else s for i, s in zip(ids, base.column("section").to_pylist())]
    updated = base.set_column(3, "short_description", pa.array(text)).set_column(2, "section", pa.array(section))
    updated = updated.filter(pc.invert(pc.is_in(updated.column("pkg_id"), pa.array(deleted))))
    updated = pa.concat_tables([updated, sample_table.slice(400, 4)], promote_options="permissive")
    pq.write_table(updated, source)

    result = run_all(spec_path, home)
    meta = metadata_of(result, ["pkgs", "embeddings"])
    assert (meta["rows_new"], meta["rows_changed"], meta["rows_deleted"]) == (4, 5, 3)
    assert meta["rows_embedded"] == meta["rows_new"] + meta["rows_changed"] == 9
    assert meta["rows_served_only_changed"] == 2
    assert metadata_of(result, ["pkgs", "index"])["records"] == 4 + 5 + 3 + 2
    check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs")
    hits = search("pkgs", base.column("short_description")[5].as_py(), k=500)
    assert not set(deleted) & set(hits.column("pkg_id").to_pylist())
    assert hits.num_rows == 401  # every live row: 400 - 3 + 4

    # Same source again: nothing committed, no new segment, same state.
    before = [ref.name for ref in list_segments(home / "pkgs")]
    result = run_all(spec_path, home)
    assert metadata_of(result, ["pkgs", "embeddings"])["committed"] is False
    assert metadata_of(result, ["pkgs", "index"])["records"] == 0
    assert [ref.name for ref in list_segments(home / "pkgs")] == before
    check_derived_and_exact(home / "pkgs", home / DUCKDB_FILE, "pkgs")


def test_several_datasets_side_by_side(tmp_path, sample_table, monkeypatch):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(sample_table.slice(0, 150), a)
    pq.write_table(sample_table.slice(150, 120), b)
    spec_path = write_spec(
        tmp_path / "datasets.yaml",
        [dataset_entry("alpha", a), dataset_entry("beta", b, columns=["package"], vectors={"metric": "l2"})],
    )
    home = tmp_path / "home"
    monkeypatch.setenv("QUIVER_DATASETS", str(spec_path))
    monkeypatch.setenv("QUIVER_HOME", str(home))
    defs = build_definitions(load_spec(spec_path), home)
    Definitions.validate_loadable(defs)
    keys = set(defs.resolve_all_asset_keys())
    assert {AssetKey([d, s]) for d in ("alpha", "beta") for s in ("rows", "embeddings", "index", "snapshot")} <= keys
    run_all(spec_path, home)
    alpha, beta = search("alpha", "game", k=5), search("beta", "game", k=5, mode="vector")
    assert set(alpha.column("pkg_id").to_pylist()) <= set(sample_table.slice(0, 150).column("pkg_id").to_pylist())
    assert set(beta.column("pkg_id").to_pylist()) <= set(sample_table.slice(150, 120).column("pkg_id").to_pylist())
    # columns: [package], and short_description served too: the full-text index holds it (the embedded columns)
    assert beta.column_names == ["pkg_id", "score", "distance", "package", "short_description"]
    assert all(0 < s <= 1 for s in beta.column("score").to_pylist())  # l2: 1 / (1 + distance)
    assert len(table_state(home / DUCKDB_FILE, "alpha")) == 150
    assert len(table_state(home / DUCKDB_FILE, "beta")) == 120
    with pytest.raises(UnknownDatasetError, match="known datasets: alpha, beta"):
        search("gamma", "game")
    with pytest.raises(SearchError, match="k must be a positive integer"):
        search("alpha", "game", k=0)
    with pytest.raises(SearchError, match="not served"):
        search("beta", "game", columns=["section"])

    # HTTP over both: each dataset's best, merged by fused_score (made of ranks) in mode hybrid,
    # by the similarity in mode vector; left out, the mode is hybrid (both have a full-text index).
    client = TestClient(create_app(searcher(), load_spec(spec_path)))
    for mode, key in ((None, "fused_score"), ("hybrid", "fused_score"), ("vector", "score")):
        body = client.post("/v1/search", json={"text": "game", "limit": 6, **({"mode": mode} if mode else {})}).json()
        each = [(d, row) for d in ("alpha", "beta") for row in search(d, "game", k=6, mode=mode).to_pylist()]
        best = sorted(each, key=lambda pair: pair[1][key], reverse=True)[:6]
        assert [(m["dataset"], m["primary_key"]["pkg_id"]) for m in body["matches"]] == [
            (d, row["pkg_id"]) for d, row in best
        ], mode
        assert [m[key] for m in body["matches"]] == pytest.approx([row[key] for _, row in best])


@pytest.mark.parametrize("keep_previous", [None, True], ids=["default", "keep_previous-true"])
def test_snapshots_keep_previous_reaches_the_store(tmp_path, sample_table, keep_previous):
    """By default (``snapshots.keep_previous: false``) after two snapshot runs the directory holds
    one snapshot and no segment; with ``true`` also the previous snapshot and the segments after
    it. Either way it equals DuckDB."""
    source = tmp_path / "packages.parquet"
    pq.write_table(sample_table.slice(0, 80), source)
    options = {} if keep_previous is None else {"snapshots": {"keep_previous": keep_previous}}
    entry = dataset_entry("pkgs", source, **options)
    spec_path, home = write_spec(tmp_path / "datasets.yaml", [entry]), tmp_path / "home"
    run_all(spec_path, home)
    pq.write_table(sample_table.slice(20, 80), source)  # 20 rows leave, 20 arrive
    run_all(spec_path, home)
    root = home / "pkgs"
    manifest = IndexReader(root).manifest
    assert manifest.snapshot.vectors == 80
    snapshots = sorted(p.name for p in (root / "snapshots").iterdir())
    if keep_previous:
        assert manifest.previous_snapshot is not None
        assert snapshots == sorted(e.dir.split("/")[1] for e in (manifest.previous_snapshot, manifest.snapshot))
        assert [ref.last for ref in list_segments(root)][-1] == manifest.snapshot.seq
    else:
        assert manifest.previous_snapshot is None
        assert snapshots == [manifest.snapshot.dir.split("/")[1]]
        assert list_segments(root) == []
    check_derived_and_exact(root, home / DUCKDB_FILE, "pkgs")
