"""The contract with Spice's "DuckDB Vector Engine" page: its spicepod, in both documented forms,
runs unchanged through Dagster; its SQL example and its ``/v1/search`` body are answered in
Spice's shape (the HTTP server started for real on 127.0.0.1)."""

from __future__ import annotations

import json
import urllib.request

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from quiver.pipelines.sql import register
from quiver.resources.search import Searcher
from quiver.resources.spec import load_spec
from tests.dagster.helpers import materialize_all
from tests.serving.test_http import running_server

PAGE_VECTORS_FORM = """
version: v1
kind: Spicepod
name: vector-demo
datasets:
  - from: file:products.parquet
    name: products
    acceleration:
      enabled: true
      engine: duckdb
    vectors:
      enabled: true
      engine: duckdb
      params:
        duckdb_distance_metric: cosine
        duckdb_hnsw_m: '16'
        duckdb_hnsw_ef_construction: '128'
        duckdb_hnsw_ef_search: '64'
    columns:
      - name: description
        embeddings:
          - from: local_embedding_model
            row_id: product_id
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: local_embedding_model
"""
PAGE_ACCELERATION_FORM = """
version: v1
kind: Spicepod
name: vector-demo
datasets:
  - from: file:products.parquet
    name: products
    acceleration:
      enabled: true
      engine: duckdb
      params:
        duckdb_distance_metric: cosine
        duckdb_hnsw_m: '16'
        duckdb_hnsw_ef_construction: '128'
        duckdb_hnsw_ef_search: '64'
    columns:
      - name: description
        embeddings:
          - from: local_embedding_model
            row_id: product_id
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: local_embedding_model
"""
PAGE_SQL = (
    "SELECT product_id, name, score FROM vector_search(products, 'wireless noise cancelling headphones') "
    "ORDER BY score DESC LIMIT 10"
)
PAGE_BODY = {
    "datasets": ["products"],
    "text": "wireless noise cancelling headphones",
    "additional_columns": ["name"],
    "limit": 3,
}
HEADPHONES = "wireless noise cancelling headphones with a long battery life"


@pytest.fixture(scope="module", params=[PAGE_VECTORS_FORM, PAGE_ACCELERATION_FORM], ids=["vectors", "acceleration.params"])
def project(request, tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("spicepod")
    rows = sample_table.slice(0, 40)
    products = pa.table(
        {
            "product_id": pa.array(range(1, 42), pa.int64()),
            "name": [*rows.column("package").to_pylist(), "quietcomfort-ultra"],
            "description": [*rows.column("short_description").to_pylist(), HEADPHONES],
        }
    )
    pq.write_table(products, tmp / "products.parquet")
    (tmp / "spicepod.yaml").write_text(request.param)
    assert yaml.safe_load(request.param)["kind"] == "Spicepod"
    assert materialize_all(tmp / "spicepod.yaml", tmp / "home").success
    return tmp


def test_the_page_sql_answers_in_spices_columns(project):
    conn = duckdb.connect()
    register(conn, home=project / "home", spec_path=project / "spicepod.yaml")
    rel = conn.sql(PAGE_SQL)
    assert rel.columns == ["product_id", "name", "score"]
    rows = rel.fetchall()
    assert len(rows) == 10 and rows[0][:2] == (41, "quietcomfort-ultra")
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert isinstance(rows[0][0], int) and isinstance(rows[0][2], float)


def test_the_page_search_body_answers_in_spices_shape(project):
    built = (project / "spicepod.yaml", project / "home", None)  # as tests/serving/conftest.py's env_for reads it
    with running_server(built, project / "server.log") as (url, _):
        request = urllib.request.Request(
            f"{url}/v1/search", data=json.dumps(PAGE_BODY).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, json.loads(response.read())
    assert status == 200 and isinstance(body["duration_ms"], int)
    matches = body["matches"]
    assert len(matches) == 3
    first = matches[0]
    assert {"value", "score", "dataset", "primary_key", "metadata"} <= set(first)
    assert first["dataset"] == "products" and first["primary_key"] == {"product_id": 41}
    assert first["metadata"] == {"name": "quietcomfort-ultra"} and first["value"] == HEADPHONES


def test_python_answers_the_same_first_row(project):
    spec = load_spec(project / "spicepod.yaml")
    table = Searcher.for_spec(project / "home", spec).search("products", PAGE_BODY["text"], k=3)
    assert table.column("product_id")[0].as_py() == 41 and "name" in table.column_names
