"""The spec's ``checks:`` block: the bounds of the index's asset checks, validated like the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver.resources.spec import ChecksSpec, SpecError, parse_spec

BASE = Path("/specs")
DATASET = {"name": "products", "from": "p.parquet", "primary_key": "id", "embeddings": {"column": "text"}}


def _checks(block) -> ChecksSpec:
    return parse_spec({"datasets": [{**DATASET, "checks": block}]}, BASE).datasets[0].checks


def _problems(block) -> list[str]:
    with pytest.raises(SpecError) as caught:
        _checks(block)
    return caught.value.problems


def test_defaults_without_the_block():
    checks = parse_spec({"datasets": [DATASET]}, BASE).datasets[0].checks
    assert (checks.recall_at_10_min, checks.recall_at_10_warn, checks.sample) == (0.95, 0.98, 300)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"recall_at_10_min": 0.9, "recall_at_10_warn": 0.97, "sample": 500}, (0.9, 0.97, 500)),
        ({"recall_at_10_min": 1, "recall_at_10_warn": 1}, (1.0, 1.0, 300)),  # YAML integers are numbers too
        ({"recall_at_10_min": 0, "recall_at_10_warn": 0}, (0.0, 0.0, 300)),  # a check that never fails
        ({"sample": 1}, (0.95, 0.98, 1)),
        ({}, (0.95, 0.98, 300)),
    ],
)
def test_good_blocks(block, expected):
    checks = _checks(block)
    assert (checks.recall_at_10_min, checks.recall_at_10_warn, checks.sample) == expected


@pytest.mark.parametrize(
    ("block", "key", "message"),
    [
        ({"recall_at_10_min": 1.5}, "checks.recall_at_10_min", "less than or equal to 1 (got 1.5)"),
        ({"recall_at_10_warn": -0.1}, "checks.recall_at_10_warn", "greater than or equal to 0 (got -0.1)"),
        ({"recall_at_10_min": "high"}, "checks.recall_at_10_min", "valid number (got 'high')"),
        ({"recall_at_10_min": True}, "checks.recall_at_10_min", "valid number (got True)"),
        ({"sample": 0}, "checks.sample", "greater than or equal to 1 (got 0)"),
        ({"sample": 2.5}, "checks.sample", "valid integer (got 2.5)"),
        ({"sample": 10**6}, "checks.sample", "less than or equal to 100000"),
        ({"recall": 0.9}, "checks.recall", "unknown key; allowed keys: recall_at_10_min, recall_at_10_warn, sample"),
        ("strict", "checks", "valid dictionary"),
    ],
)
def test_bad_values_name_the_dataset_key_and_bound(block, key, message):
    (problem,) = _problems(block)
    assert problem.startswith(f"dataset 'products': {key}: ") and message in problem, problem


def test_warning_bound_below_the_failing_bound_is_refused():
    (problem,) = _problems({"recall_at_10_min": 0.97, "recall_at_10_warn": 0.9})
    assert problem.startswith("dataset 'products': checks: ")
    assert "recall_at_10_warn (0.9) is below recall_at_10_min (0.97)" in problem and "at least" in problem


def test_every_mistake_is_listed_once():
    problems = _problems({"recall_at_10_min": 2, "sample": -1, "extra": 1})
    assert len(problems) == 3
