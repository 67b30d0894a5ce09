"""Reciprocal rank fusion (``fusion``): Spice's and LanceDB's formula, weights, ties, per-row grouping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiver.resources.fusion import first_per_group, reciprocal_rank_fusion


def test_a_key_both_passes_found_beats_a_key_only_one_found_first():
    fused = reciprocal_rank_fusion({"vector": ["a", "b", "c"], "text": ["b", "d"]})
    assert [f.key for f in fused] == ["b", "a", "d", "c"]
    assert fused[0].ranks == {"vector": 2, "text": 1} and fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[2].ranks == {"text": 2}


def test_weights_and_k_change_the_order_as_the_formula_says():
    rankings = {"vector": ["a", "b"], "text": ["b", "a"]}
    assert [f.key for f in reciprocal_rank_fusion(rankings, weights={"text": 2.0})] == ["b", "a"]
    assert [f.key for f in reciprocal_rank_fusion(rankings, weights={"vector": 2.0})] == ["a", "b"]
    assert reciprocal_rank_fusion({"v": ["a"]}, k=0)[0].score == 1.0
    with pytest.raises(ValueError, match="passes that did not run: \\['words'\\]"):
        reciprocal_rank_fusion(rankings, weights={"words": 1.0})
    with pytest.raises(ValueError, match="k must be 0 or more"):
        reciprocal_rank_fusion(rankings, k=-1)


def test_chunks_collapse_to_their_rows_at_the_best_chunks_place():
    rows = {"r1#0": "r1", "r1#1": "r1", "r2#0": "r2", "r3#0": "r3"}
    assert first_per_group(["r1#1", "r2#0", "r1#0", "r3#0"], rows) == ["r1", "r2", "r3"]


@given(st.dictionaries(st.sampled_from(["vector", "text", "other"]), st.lists(st.integers(0, 30), max_size=30), min_size=1))
def test_every_key_once_scores_descending_ranks_dense(rankings):
    fused = reciprocal_rank_fusion(rankings)
    keys = [f.key for f in fused]
    assert sorted(keys) == sorted({k for ranking in rankings.values() for k in ranking})
    assert [f.score for f in fused] == sorted((f.score for f in fused), reverse=True)
    for name, ranking in rankings.items():
        distinct = list(dict.fromkeys(ranking))
        assert {f.key: f.ranks[name] for f in fused if name in f.ranks} == {k: i + 1 for i, k in enumerate(distinct)}
