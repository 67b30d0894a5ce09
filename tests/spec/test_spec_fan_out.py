"""``embeddings.fan_out``: 1 by default (the single-step asset), 2..256 parts, bad values named with
the dataset, the key and what is allowed; it is not part of the content identity (switching it
re-embeds nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver.resources.spec import MAX_FAN_OUT, SpecError, parse_spec

BASE = Path("/specs")


def spec_with(embeddings: dict):
    entry = {"name": "products", "from": "p.parquet", "primary_key": "id", "embeddings": embeddings}
    return parse_spec({"datasets": [entry]}, base_dir=BASE).get("products")


def test_fan_out_is_one_by_default_and_changes_no_identity():
    plain = spec_with({"column": "description"}).embeddings
    fanned = spec_with({"column": "description", "fan_out": 4}).embeddings
    assert (plain.fan_out, fanned.fan_out) == (1, 4)
    assert (fanned.identity, fanned.content_identity) == (plain.identity, plain.content_identity)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "greater than or equal to 1 (got 0)"),
        (-2, "greater than or equal to 1 (got -2)"),
        (MAX_FAN_OUT + 1, f"less than or equal to {MAX_FAN_OUT} (got {MAX_FAN_OUT + 1})"),
        ("2", "a valid integer (got '2')"),
        (1.5, "a valid integer (got 1.5)"),
        (True, "a valid integer (got True)"),
    ],
)
def test_a_bad_fan_out_names_the_dataset_the_key_and_the_bounds(value, problem):
    with pytest.raises(SpecError) as error:
        spec_with({"column": "description", "fan_out": value})
    assert "dataset 'products': embeddings.fan_out: " in str(error.value)
    assert problem in str(error.value)
