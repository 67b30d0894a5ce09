"""``embeddings.quantize``: off by default, ``int8`` makes another model identity, bad values name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver.resources.embedding import model_identity, split_identity
from quiver.resources.spec import DEFAULT_MODEL, SpecError, parse_spec

BASE = Path("/specs")


def spec_with(embeddings: dict):
    entry = {"name": "products", "from": "p.parquet", "primary_key": "id", "embeddings": embeddings}
    return parse_spec({"datasets": [entry]}, base_dir=BASE).get("products")


def test_quantize_is_off_by_default_and_the_identity_is_the_model():
    embeddings = spec_with({"column": "description"}).embeddings
    assert embeddings.quantize is None
    assert embeddings.identity == DEFAULT_MODEL


@pytest.mark.parametrize("value", ["int8", "INT8", " int8 "])
def test_int8_is_another_identity(value):
    embeddings = spec_with({"column": "description", "quantize": value}).embeddings
    assert embeddings.quantize == "int8"
    assert embeddings.identity == f"{DEFAULT_MODEL}+int8"
    # The embedder reads the same identity back (what the index records and the searcher loads).
    assert split_identity(embeddings.identity) == (DEFAULT_MODEL, "int8")
    assert model_identity(DEFAULT_MODEL, "int8") == embeddings.identity


def test_an_explicit_null_is_off():
    assert spec_with({"column": "description", "quantize": None}).embeddings.identity == DEFAULT_MODEL


@pytest.mark.parametrize("value", ["int4", "fp16", 8, True, ""])
def test_bad_values_name_the_dataset_key_and_allowed_values(value):
    with pytest.raises(SpecError) as err:
        spec_with({"column": "description", "quantize": value})
    (problem,) = err.value.problems
    assert problem.startswith("dataset 'products': embeddings.quantize: ")
    assert f"got {value!r}; must be one of int8" in problem
