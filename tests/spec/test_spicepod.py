"""A spicepod from Spice's "DuckDB Vector Engine" page, read as a quiver spec: both documented
forms mean the same dataset, keys without effect are named in a warning, keys that would change
results are refused by name, and no model is ever downloaded."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from quiver.resources.spec import SpecError, parse_spec
from quiver.resources.spicepod import is_spicepod

HUB_MODEL = "huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2"
VECTOR_PARAMS = {
    "duckdb_distance_metric": "cosine", "duckdb_hnsw_m": "16", "duckdb_hnsw_ef_construction": "128", "duckdb_hnsw_ef_search": "64",
}
COLUMNS = [{"name": "description", "embeddings": [{"from": "local_embedding_model", "row_id": "product_id"}]}]
MODELS = [{"from": HUB_MODEL, "name": "local_embedding_model"}]
# The page's two forms: an explicit vectors block, or the same params on acceleration.params.
VECTORS_FORM = {
    "version": "v1", "kind": "Spicepod", "name": "vector-demo",
    "datasets": [{
        "from": "file:products.parquet", "name": "products",
        "acceleration": {"enabled": True, "engine": "duckdb"},
        "vectors": {"enabled": True, "engine": "duckdb", "params": VECTOR_PARAMS},
        "columns": COLUMNS,
    }],
    "embeddings": MODELS,
}
ACCELERATION_FORM = {
    "version": "v1", "kind": "Spicepod", "name": "vector-demo",
    "datasets": [{
        "from": "file:products.parquet", "name": "products",
        "acceleration": {"enabled": True, "engine": "duckdb", "params": VECTOR_PARAMS},
        "columns": COLUMNS,
    }],
    "embeddings": MODELS,
}
BASE = Path("/specs")


def parse(data):
    return parse_spec(copy.deepcopy(data), BASE)


@pytest.mark.parametrize("form", [VECTORS_FORM, ACCELERATION_FORM], ids=["vectors", "acceleration.params"])
def test_both_documented_forms_are_the_same_dataset(form):
    spec = parse(form)
    dataset = spec.datasets[0]
    assert dataset.name == "products" and dataset.primary_key == "product_id"
    assert dataset.source_path == BASE / "products.parquet"
    assert dataset.embeddings.columns == ("description",) and dataset.embeddings.model == "all-MiniLM-L6-v2"
    assert (dataset.vectors.metric, dataset.vectors.m, dataset.vectors.ef_construction, dataset.vectors.ef_search) == ("cosine", 16, 128, 64)
    assert dataset.columns is None, "Spice queries whole rows: every source column is served"
    assert spec.warnings == ()


def test_the_vectors_block_wins_over_acceleration_params():
    data = copy.deepcopy(VECTORS_FORM)
    data["datasets"][0]["acceleration"]["params"] = {"duckdb_hnsw_m": "8", "duckdb_metric": "l2"}
    vectors = parse(data).datasets[0].vectors
    assert vectors.m == 16 and vectors.metric == "cosine"


def test_keys_without_effect_are_accepted_and_named():
    data = copy.deepcopy(ACCELERATION_FORM)
    data["datasets"][0]["acceleration"] |= {"refresh_check_interval": "10s", "mode": "file"}
    data["datasets"][0]["acceleration"]["params"] = VECTOR_PARAMS | {"duckdb_file": "x.db"}
    data["datasets"][0]["description"] = "products"
    warnings = parse(data).warnings
    assert any("refresh_check_interval" in w and "mode" in w for w in warnings), warnings
    assert any("duckdb_file" in w for w in warnings) and any("description" in w for w in warnings)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["datasets"][0]["acceleration"].update(refresh_sql="SELECT 1"), "acceleration.refresh_sql is not supported"),
        (lambda d: d["datasets"][0]["acceleration"].update(engine="sqlite"), "acceleration.engine: 'sqlite'"),
        (lambda d: d["datasets"][0]["acceleration"].update(enabled=False), "acceleration.enabled: False"),
        (lambda d: d["embeddings"][0].update(**{"from": "openai:text-embedding-3-small"}), "not available offline"),
        (lambda d: d.update(kind="Other"), "kind: 'Other'"),
        (lambda d: d.update(secretz=1), "unknown top-level key(s) 'secretz'"),
        (lambda d: d["datasets"][0]["columns"][0]["embeddings"][0].update(row_id=["a", "b"]), "row_id names several columns"),
        (lambda d: d["datasets"][0]["columns"][0]["embeddings"][0].update(**{"from": "nope"}), "model 'nope' is not available offline"),
    ],
)
def test_what_quiver_does_not_do_is_refused_by_name(change, fragment):
    data = copy.deepcopy(ACCELERATION_FORM)
    change(data)
    with pytest.raises(SpecError) as caught:
        parse(data)
    assert fragment in str(caught.value)
    if "offline" in fragment:
        assert HUB_MODEL in str(caught.value) and "file:<dir>" in str(caught.value), "says what is available and how to add one"


def test_a_local_model_directory_and_full_text_columns():
    data = copy.deepcopy(ACCELERATION_FORM)
    data["embeddings"][0]["from"] = "file:models/mine"
    data["datasets"][0]["columns"].append({"name": "name", "full_text_search": {"enabled": True}})
    dataset = parse(data).datasets[0]
    assert dataset.embeddings.model == "models/mine" and dataset.full_text_columns == ("name",)


def test_quivers_own_spec_is_not_a_spicepod():
    own = {"datasets": [{"name": "p", "from": "p.parquet", "primary_key": "id", "embeddings": {"column": "d"},
                         "vectors": {"m": 8}, "columns": ["d"]}]}
    assert not is_spicepod(own)
    assert parse(own).datasets[0].vectors.m == 8
