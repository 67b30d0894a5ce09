"""Full text through Dagster with the real model: a materialized dataset answers a typed name first
(hybrid, the default for text), its snapshot holds the text index (I2 checked), and a refresh makes
new and deleted rows show in full text before any snapshot."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import AssetKey, DagsterInstance, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import DUCKDB_FILE, build_resources
from quiver.resources.index import IndexReader
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import metadata_of
from tests.invariants import check_at_rest, check_reader_serves, index_state

DS = "pkgs"
PROBE = "zq-quiver-probe7"


def run(spec_path, home, stages=("rows", "embeddings", "index", "snapshot")):
    spec = load_spec(spec_path)
    return materialize(
        dataset_assets(spec.get(DS)),
        selection=[AssetKey([DS, stage]) for stage in stages],
        resources=build_resources(spec, home),
        instance=DagsterInstance.ephemeral(),
    )


def test_hybrid_end_to_end(tmp_path, sample_table):
    source, home, spec_path = tmp_path / "src.parquet", tmp_path / "home", tmp_path / "datasets.yaml"
    table = sample_table.slice(0, 60)
    pq.write_table(table, source)
    write_spec(spec_path, [dataset_entry(DS, source)])
    result = run(spec_path, home)
    assert metadata_of(result, [DS, "snapshot"])["text_index_bytes"] > 0
    check_at_rest(home / DS, home / DUCKDB_FILE, DS)

    search = build_resources(load_spec(spec_path), home)["search"]
    names = table.column("package").to_pylist()
    for name in names[:10]:
        hits = search.search(DS, name, k=3, columns=["package"])
        assert hits.column_names[:7] == ["pkg_id", "fused_score", "score", "distance", "text_score", "vector_rank", "text_rank"]
        assert hits.column("package")[0].as_py() == name, f"{name}: {hits.column('package').to_pylist()}"

    # A new row with an identifier nobody else has, and a deleted one: searchable from the log alone.
    gone = names[5]
    kept = table.filter(pc.invert(pc.equal(table.column("package"), gone)))
    probe = {c: ["x"] for c in table.column_names} | {"pkg_id": [999_999], "package": [PROBE], "short_description": ["probe row"]}
    pq.write_table(pa.concat_tables([kept, pa.table(probe, schema=table.schema)]), source)
    run(spec_path, home, stages=("rows", "embeddings", "index"))
    fresh = build_resources(load_spec(spec_path), home)["search"]
    found = fresh.search(DS, PROBE, k=3, mode="text", columns=["package"])
    assert found.column("package").to_pylist()[0] == PROBE
    assert gone not in fresh.search(DS, gone, k=10, mode="text", columns=["package"]).column("package").to_pylist()
    reader = IndexReader(home / DS)
    assert reader.state.segment_names, "served from the segment after the snapshot"
    check_reader_serves(reader, index_state(home / DS))
