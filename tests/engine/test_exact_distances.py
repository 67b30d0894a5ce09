"""``identity.exact_distances`` (the reader's exact scan) gives usearch's own distances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from usearch.index import search

from quiver.resources.index.identity import USEARCH_METRIC, exact_distances


@settings(max_examples=60, deadline=None)
@given(
    metric=st.sampled_from(sorted(USEARCH_METRIC)),
    rows=st.integers(1, 300),
    dim=st.sampled_from([3, 16, 384]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_same_distances_as_usearchs_exact_search(metric, rows, dim, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    query = rng.standard_normal(dim, dtype=np.float32)
    if metric == "inner_product":  # usearch's ip is meant for unit vectors
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        query /= np.linalg.norm(query)
    ours = exact_distances(metric, vectors, query)
    theirs = search(vectors, query, rows, USEARCH_METRIC[metric], exact=True)
    expected = np.empty(rows, dtype=np.float32)
    expected[np.asarray(theirs.keys, dtype=np.int64)] = theirs.distances
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ours, expected, atol=2e-5 * scale)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_kept_squared_norms_give_the_same_distances(metric):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8), dtype=np.float32)
    query = rng.standard_normal(8, dtype=np.float32)
    norms = np.einsum("ij,ij->i", vectors, vectors)
    np.testing.assert_array_equal(
        exact_distances(metric, vectors, query, norms), exact_distances(metric, vectors, query)
    )


def test_a_zero_vector_is_at_cosine_distance_one():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(exact_distances("cosine", vectors, np.array([1.0, 0.0], np.float32)), [1.0, 0.0])
