"""The dataset spec: good specs parse right; each mistake names the dataset, the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from quiver.resources.spec import (
    DEFAULT_MODEL,
    DTYPES,
    METRICS,
    RESERVED_COLUMNS,
    DatasetSpec,
    EmbeddingsSpec,
    QuiverSpec,
    SpecError,
    UnknownDatasetError,
    default_home,
    default_spec_path,
    load_spec,
    parse_spec,
)

BASE = Path("/specs")

MINIMAL = {
    "name": "products",
    "from": "data/products.parquet",
    "primary_key": "product_id",
    "embeddings": {"column": "description"},
}

FULL = {
    "name": "products",
    "from": "data/products.parquet",
    "primary_key": "product_id",
    "refresh_mode": "append",
    "time_column": "updated_at",
    "columns": ["name", "description"],
    "embeddings": {"columns": ["title", "description"], "model": "my-model", "separator": " | "},
    "vectors": {"metric": "l2", "m": 32, "ef_construction": 200, "ef_search": 100, "dtype": "f16"},
    "snapshots": {
        "enabled": False,
        "interval_seconds": 60,
        "min_delta_commitlogs": 3,
        "min_delta_size_percent": 2.5,
        "on_startup": False,
        "rebuild_tombstone_percent": 50,
        "keep_previous": True,
    },
    "refresh_cron": "0 * * * *",
}


def parse(*datasets: dict) -> QuiverSpec:
    return parse_spec({"datasets": list(datasets)}, base_dir=BASE)


def with_(base: dict, **changes) -> dict:
    """A deep copy of base; `a__b=v` sets base[a][b], a value of ... deletes the key."""
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(key, None)
        else:
            node[key] = value
    return data


# --- good specs ---------------------------------------------------------------------------


def test_minimal_defaults():
    ds = parse(MINIMAL).get("products")
    assert ds.source == "data/products.parquet"
    assert ds.source_path == (BASE / "data/products.parquet").resolve()
    assert ds.primary_key == "product_id"
    assert ds.refresh_mode == "full" and ds.time_column is None and ds.columns is None
    assert ds.refresh_cron is None
    assert ds.embeddings == EmbeddingsSpec(columns=("description",))
    assert ds.embeddings.model == DEFAULT_MODEL and ds.embeddings.separator == "\n"
    v = ds.vectors
    assert (v.metric, v.m, v.ef_construction, v.ef_search) == ("cosine", 16, 128, 64)
    assert v.dtype == "f32"
    s = ds.snapshots
    assert s.enabled and s.on_startup
    assert (s.interval_seconds, s.min_delta_commitlogs, s.min_delta_size_percent) == (21600, 1, 5)
    assert s.rebuild_tombstone_percent == 20
    assert s.keep_previous is False  # DuckDB rebuilds a damaged snapshot: no second copy by default


def test_full():
    ds = parse(FULL).datasets[0]
    assert ds.refresh_mode == "append" and ds.time_column == "updated_at"
    assert ds.columns == ("name", "description")
    assert ds.embeddings.columns == ("title", "description")
    assert (ds.embeddings.model, ds.embeddings.separator) == ("my-model", " | ")
    assert ds.vectors.model_dump() == {
        "metric": "l2", "m": 32, "ef_construction": 200, "ef_search": 100, "dtype": "f16"
    }
    assert ds.snapshots.model_dump() == {
        "enabled": False, "interval_seconds": 60.0, "min_delta_commitlogs": 3,
        "min_delta_size_percent": 2.5, "on_startup": False, "rebuild_tombstone_percent": 50.0,
        "keep_previous": True,
    }
    assert ds.refresh_cron == "0 * * * *"


def test_models_are_frozen_and_hashable():
    ds = parse(MINIMAL).datasets[0]
    with pytest.raises(Exception):
        ds.name = "other"  # type: ignore[misc]
    assert hash(ds) == hash(parse(MINIMAL).datasets[0])


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("cosine", "cosine"), ("cos", "cosine"), ("COSINE", "cosine"),
        ("l2", "l2"), ("l2sq", "l2"), ("l2_norm", "l2"), ("Euclidean", "l2"),
        ("inner_product", "inner_product"), ("ip", "inner_product"), ("dot", "inner_product"),
        ("dot_product", "inner_product"),
    ],
)
def test_metric_aliases(given, canonical):
    assert parse(with_(MINIMAL, vectors__metric=given)).datasets[0].vectors.metric == canonical


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("f32", "f32"), ("float32", "f32"), ("f16", "f16"), ("float16", "f16"), ("half", "f16"),
        ("bf16", "bf16"), ("bfloat16", "bf16"), ("i8", "i8"), ("int8", "i8"), ("F32", "f32"),
    ],
)
def test_dtype_aliases(given, canonical):
    assert parse(with_(MINIMAL, vectors__dtype=given)).datasets[0].vectors.dtype == canonical


@pytest.mark.parametrize(
    ("vectors", "expected"),
    [
        # Spice's DuckDB vector engine params (strings, as Spice writes them)
        ({"duckdb_distance_metric": "ip", "duckdb_hnsw_m": "8", "duckdb_hnsw_ef_construction": "90",
          "duckdb_hnsw_ef_search": "30"}, ("inner_product", 8, 90, 30)),
        ({"duckdb_metric": "l2sq", "duckdb_m": 12, "duckdb_ef_construction": 100,
          "duckdb_ef_search": 40}, ("l2", 12, 100, 40)),
        # DuckDB vss CREATE INDEX ... WITH (metric, M, ef_construction, ef_search)
        ({"metric": "cosine", "M": 24}, ("cosine", 24, 128, 64)),
    ],
)
def test_duckdb_and_spice_aliases(vectors, expected):
    v = parse(with_(MINIMAL, vectors=vectors)).datasets[0].vectors
    assert (v.metric, v.m, v.ef_construction, v.ef_search) == expected


def test_spice_aliases_for_dataset_and_embeddings():
    data = with_(MINIMAL, primary_key=..., row_id="sku", embeddings__use="other-model")
    ds = parse(data).datasets[0]
    assert ds.primary_key == "sku" and ds.embeddings.model == "other-model"


@pytest.mark.parametrize(
    ("embeddings", "columns"),
    [
        ({"column": "description"}, ("description",)),
        ({"columns": ["description"]}, ("description",)),
        ({"columns": ["title", "description"]}, ("title", "description")),
        ({"column": "product_id"}, ("product_id",)),  # the primary key may be embedded
    ],
)
def test_column_or_columns(embeddings, columns):
    assert parse(with_(MINIMAL, embeddings=embeddings)).datasets[0].embeddings.columns == columns


def test_served_columns_may_include_primary_key():
    assert parse(with_(MINIMAL, columns=["product_id", "name"])).datasets[0].columns == (
        "product_id", "name",
    )


@pytest.mark.parametrize(
    ("source", "relative"),
    [
        ("data/products.parquet", "data/products.parquet"),
        ("file:data/products.parquet", "data/products.parquet"),
        ("file://data/*.parquet", "data/*.parquet"),
        ("./data", "data"),
        ("../shared/p.parquet", "../shared/p.parquet"),
    ],
)
def test_relative_source_resolves_against_spec_dir(tmp_path, source, relative):
    spec_dir = tmp_path / "conf"
    spec_dir.mkdir()
    spec_file = spec_dir / "datasets.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [with_(MINIMAL, **{"from": source})]}))
    spec = load_spec(spec_file)
    assert spec.path == spec_file.resolve()
    ds = spec.get("products")
    assert ds.source == source.removeprefix("file://").removeprefix("file:")
    assert ds.source_path == (spec_dir / relative).resolve()


def test_absolute_source_is_kept(tmp_path):
    target = tmp_path / "p.parquet"
    ds = parse(with_(MINIMAL, **{"from": f"file://{target}"})).datasets[0]
    assert ds.source_path == target.resolve()


def test_several_datasets(tmp_path):
    spec_file = tmp_path / "datasets.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {"datasets": [MINIMAL, with_(FULL, name="articles"), with_(MINIMAL, name="c")]}
        )
    )
    spec = load_spec(str(spec_file))
    assert spec.names == ("products", "articles", "c")
    assert spec.get("articles").vectors.metric == "l2"
    assert spec.get("c").source_path == (tmp_path / "data/products.parquet").resolve()


def test_direct_construction_uses_field_names():
    ds = DatasetSpec(
        name="a", source="x.parquet", primary_key="id", embeddings=EmbeddingsSpec(columns=("t",))
    )
    assert ds.source_path == (Path.cwd() / "x.parquet").resolve()


def test_default_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("QUIVER_DATASETS", raising=False)
    monkeypatch.delenv("QUIVER_HOME", raising=False)
    root = Path(__file__).resolve().parents[2]
    assert default_spec_path() == root / "datasets.yaml"
    assert default_home() == root / ".quiver"
    monkeypatch.setenv("QUIVER_DATASETS", str(tmp_path / "d.yaml"))
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home"))
    assert default_spec_path() == tmp_path / "d.yaml"
    assert default_home() == tmp_path / "home"


def test_load_spec_default_reads_env(monkeypatch, tmp_path):
    spec_file = tmp_path / "d.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [MINIMAL]}))
    monkeypatch.setenv("QUIVER_DATASETS", str(spec_file))
    assert load_spec().names == ("products",)


# --- mistakes -----------------------------------------------------------------------------

# (case id, datasets, fragments the message must contain: dataset, key, an allowed value / fix)
MISTAKES = [
    ("unknown dataset key", [with_(MINIMAL, colour="red")],
     ["dataset 'products'", "colour", "unknown key", "primary_key"]),
    ("unknown embeddings key", [with_(MINIMAL, embeddings__modle="x")],
     ["dataset 'products'", "embeddings.modle", "model", "separator"]),
    ("unknown vectors key", [with_(MINIMAL, vectors__M0=32)],
     ["dataset 'products'", "vectors.M0", "ef_construction", "duckdb_hnsw_m"]),
    ("unknown snapshots key", [with_(MINIMAL, snapshots__every=5)],
     ["dataset 'products'", "snapshots.every", "interval_seconds"]),
    ("source_path is not a key", [with_(MINIMAL, source_path="/x")],
     ["dataset 'products'", "source_path", "allowed keys", "from"]),
    ("missing from", [with_(MINIMAL, **{"from": ...})],
     ["dataset 'products'", "from", "required key is missing"]),
    ("missing primary_key", [with_(MINIMAL, primary_key=...)],
     ["dataset 'products'", "primary_key", "required key is missing"]),
    ("missing embeddings", [with_(MINIMAL, embeddings=...)],
     ["dataset 'products'", "embeddings", "required key is missing"]),
    ("missing name", [with_(MINIMAL, name=...)],
     ["datasets[0]", "name", "required key is missing"]),
    ("bad metric", [with_(MINIMAL, vectors__metric="hamming")],
     ["dataset 'products'", "vectors.metric", "'hamming'", "cosine", "inner_product", "l2sq"]),
    ("bad metric type", [with_(MINIMAL, vectors__metric=3)],
     ["dataset 'products'", "vectors.metric", "got 3", "cosine"]),
    ("bad dtype", [with_(MINIMAL, vectors__dtype="f64")],
     ["dataset 'products'", "vectors.dtype", "'f64'", "f32", "bf16", "i8"]),
    ("bad refresh_mode", [with_(MINIMAL, refresh_mode="incremental")],
     ["dataset 'products'", "refresh_mode", "'incremental'", "full", "append"]),
    ("injection in name", [with_(MINIMAL, name="x; DROP TABLE x")],
     ["dataset 'x; DROP TABLE x'", "name", "must be a plain identifier"]),
    ("injection in primary_key", [with_(MINIMAL, primary_key='id" OR 1=1 --')],
     ["dataset 'products'", "primary_key", "must be a plain identifier"]),
    ("digit-leading column", [with_(MINIMAL, columns=["name", "1st"])],
     ["dataset 'products'", "columns[1]", "'1st'", "not starting with a digit"]),
    ("bad embeddings column", [with_(MINIMAL, embeddings={"column": "a b"})],
     ["dataset 'products'", "embeddings.columns[0]", "'a b'", "plain identifier"]),
    ("bad time_column", [with_(MINIMAL, refresh_mode="append", time_column="t-1")],
     ["dataset 'products'", "time_column", "plain identifier"]),
    ("name too long", [with_(MINIMAL, name="n" * 64)],
     ["name", "63 characters"]),
    ("reserved served column", [with_(MINIMAL, columns=["_key"])],
     ["dataset 'products'", "columns[0]", "'_key'", "reserved", "_vector"]),
    ("reserved primary key", [with_(MINIMAL, primary_key="_SEQ")],
     ["dataset 'products'", "primary_key", "'_SEQ'", "reserved"]),
    ("reserved embeddings column", [with_(MINIMAL, embeddings={"columns": ["_content_hash"]})],
     ["dataset 'products'", "embeddings.columns[0]", "reserved"]),
    ("duplicate served column", [with_(MINIMAL, columns=["name", "Name"])],
     ["dataset 'products'", "columns", "more than once"]),
    ("empty served columns", [with_(MINIMAL, columns=[])],
     ["dataset 'products'", "columns", "leave the key out"]),
    ("both column and columns", [with_(MINIMAL, embeddings={"column": "a", "columns": ["b"]})],
     ["dataset 'products'", "embeddings", "column", "columns", "not both"]),
    ("neither column nor columns", [with_(MINIMAL, embeddings={"model": "x"})],
     ["dataset 'products'", "embeddings", "column: <name>"]),
    ("alias and canonical both set",
     [with_(MINIMAL, vectors={"metric": "l2", "duckdb_metric": "ip"})],
     ["dataset 'products'", "vectors", "duckdb_metric", "metric", "keep one"]),
    ("negative m", [with_(MINIMAL, vectors__m=-1)],
     ["dataset 'products'", "vectors.m", "-1", "greater than or equal to 2"]),
    ("m as string", [with_(MINIMAL, vectors__m="16")],
     ["dataset 'products'", "vectors.m", "valid integer", "'16'"]),
    ("ef_search as bool", [with_(MINIMAL, vectors__ef_search=True)],
     ["dataset 'products'", "vectors.ef_search", "valid integer"]),
    ("zero ef_construction", [with_(MINIMAL, vectors__ef_construction=0)],
     ["dataset 'products'", "vectors.ef_construction", "greater than or equal to 1"]),
    ("enabled as string", [with_(MINIMAL, snapshots__enabled="yes")],
     ["dataset 'products'", "snapshots.enabled", "valid boolean", "'yes'"]),
    ("negative interval", [with_(MINIMAL, snapshots__interval_seconds=-5)],
     ["dataset 'products'", "snapshots.interval_seconds", "greater than or equal to 0"]),
    ("keep_previous as string", [with_(MINIMAL, snapshots__keep_previous="no")],
     ["dataset 'products'", "snapshots.keep_previous", "valid boolean", "'no'"]),
    ("negative tombstone percent", [with_(MINIMAL, snapshots__rebuild_tombstone_percent=-1)],
     ["dataset 'products'", "snapshots.rebuild_tombstone_percent", "greater than or equal to 0"]),
    ("time_column without append", [with_(MINIMAL, time_column="ts")],
     ["dataset 'products'", "time_column", "refresh_mode: append"]),
    ("bad cron", [with_(MINIMAL, refresh_cron="every hour")],
     ["dataset 'products'", "refresh_cron", "'every hour'", "5 fields"]),
    ("remote source", [with_(MINIMAL, **{"from": "s3://bucket/p.parquet"})],
     ["dataset 'products'", "from", "s3://bucket", "file:"]),
    ("empty source", [with_(MINIMAL, **{"from": "file:"})],
     ["dataset 'products'", "from", "Parquet file, directory or glob"]),
    ("dataset not a mapping", [MINIMAL, "products"],
     ["datasets[1]", "valid dictionary"]),
    ("duplicate names", [MINIMAL, with_(MINIMAL, name="Products")],
     ["dataset 'Products'", "more than once", "unique name"]),
]


@pytest.mark.parametrize(
    ("datasets", "fragments"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistakes_name_dataset_key_and_fix(datasets, fragments):
    with pytest.raises(SpecError) as info:
        parse(*datasets)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_one_line_per_problem():
    bad = with_(MINIMAL, vectors__metric="x", vectors__dtype="y", snapshots__enabled=1, extra=1)
    with pytest.raises(SpecError) as info:
        parse(bad, with_(MINIMAL, name="other", refresh_mode="sometimes"))
    problems = info.value.problems
    assert len(problems) == 5
    assert str(info.value).splitlines()[1:] == [f"  {p}" for p in problems]
    assert sum("dataset 'other'" in p for p in problems) == 1
    assert "ValidationError" not in str(info.value) and "errors.pydantic.dev" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (None, ["mapping with a `datasets:` list", "NoneType"]),
        ([MINIMAL], ["mapping with a `datasets:` list", "list"]),
        ("datasets", ["mapping with a `datasets:` list"]),
        ({"dataset": [MINIMAL]}, ["without `datasets:`"]),
        ({"datasets": MINIMAL}, ["`datasets:` must be a list"]),
        ({"datasets": []}, ["`datasets:` is empty", "add at least one dataset"]),
        ({"datasets": [MINIMAL], "versions": "v1"}, ["'versions'", "allowed keys: datasets"]),  # version: a spicepod's, accepted
    ],
)
def test_top_level_mistakes(data, fragments):
    with pytest.raises(SpecError) as info:
        parse_spec(data, base_dir=BASE)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_file_names_path_and_env(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert str(missing) in str(info.value) and "QUIVER_DATASETS" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "mapping with a `datasets:` list"),
        ("- a\n- b\n", "list"),
        ("datasets: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path, text, fragment):
    spec_file = tmp_path / "datasets.yaml"
    spec_file.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(spec_file)
    assert fragment in str(info.value) and str(spec_file) in str(info.value)


def test_errors_name_the_file(tmp_path):
    spec_file = tmp_path / "datasets.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [with_(MINIMAL, vectors__metric="x")]}))
    with pytest.raises(SpecError, match=str(spec_file)):
        load_spec(spec_file)


def test_unknown_dataset_lists_known():
    spec = parse(MINIMAL, with_(MINIMAL, name="articles"))
    with pytest.raises(UnknownDatasetError) as info:
        spec.get("users")
    assert isinstance(info.value, SpecError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown dataset 'users'; known datasets: products, articles"


def test_constants():
    assert METRICS == ("cosine", "l2", "inner_product")
    assert DTYPES == ("f32", "f16", "bf16", "i8")
    # the spec refuses exactly the column names the warehouse and the commit log use for themselves
    from quiver.resources.warehouse import INTERNAL

    assert set(INTERNAL) == RESERVED_COLUMNS and "_chunk" in RESERVED_COLUMNS


def test_no_dagster_import():
    import subprocess
    import sys

    code = "import sys, quiver.resources.spec; assert 'dagster' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
