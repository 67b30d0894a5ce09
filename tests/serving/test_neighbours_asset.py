"""The example downstream asset ``<ds>/neighbours``, materialized for real through Dagster."""

from __future__ import annotations

import duckdb
from dagster import AssetKey, DagsterInstance, RunConfig, materialize

from quiver.assets.neighbours import NeighboursConfig, neighbours_asset
from quiver.pipelines.definitions import DUCKDB_FILE, build_definitions, build_resources
from tests.dagster.helpers import metadata_of

KEY = ["pkgs", "neighbours"]


def _run(built, spec, config: NeighboursConfig | None = None):
    _, home, _ = built
    asset = neighbours_asset(spec.get("pkgs"))
    run_config = RunConfig(ops={asset.op.name: config}) if config else None
    result = materialize(
        [asset], resources=build_resources(spec, home), instance=DagsterInstance.ephemeral(), run_config=run_config
    )
    assert result.success
    return metadata_of(result, KEY)


def _newest(built, n: int) -> list[int]:
    conn = duckdb.connect(str(built[1] / DUCKDB_FILE), read_only=True)
    try:
        return [
            r[0] for r in conn.execute(f'SELECT pkg_id FROM "pkgs_embeddings" ORDER BY _seq DESC LIMIT {n}').fetchall()
        ]
    finally:
        conn.close()


def test_neighbours_of_newest_rows(built, spec):
    meta = _run(built, spec)
    pairs = meta["pairs"]
    assert meta["rows"] == 5 and meta["neighbours"] == len(pairs) == 25
    assert sorted({p["row"] for p in pairs}) == sorted(_newest(built, 5))
    assert all(p["row"] != p["neighbour"] for p in pairs)
    for row in {p["row"] for p in pairs}:
        mine = [p for p in pairs if p["row"] == row]
        assert [p["rank"] for p in mine] == [1, 2, 3, 4, 5]
        assert [p["score"] for p in mine] == sorted((p["score"] for p in mine), reverse=True)
    preview = meta["preview"].splitlines()
    assert preview[0] == "| row | rank | neighbour | score | package |" and len(preview) == 2 + 25


def test_on_demand_only(built, spec):
    defs = build_definitions(spec, built[1])
    assert defs.resolve_assets_def(AssetKey(KEY)) is not None
    refresh = defs.resolve_job_def("pkgs_refresh")
    assert AssetKey(KEY) not in refresh.asset_layer.selected_asset_keys


def test_where_config(built, spec):
    meta = _run(built, spec, NeighboursConfig(rows=3, k=4, where="section = 'python'"))
    assert meta["rows"] == 3 and 0 < meta["neighbours"] <= 12 and meta["where"] == "section = 'python'"
    conn = duckdb.connect(str(built[1] / DUCKDB_FILE), read_only=True)
    try:
        sections = dict(conn.execute('SELECT pkg_id, section FROM "pkgs_embeddings"').fetchall())
    finally:
        conn.close()
    assert {sections[p["neighbour"]] for p in meta["pairs"]} == {"python"}
