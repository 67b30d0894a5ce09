"""The Searcher over an engine-built index with vectors (no model): where, batches, errors."""

from __future__ import annotations

import numpy as np
import pytest

from quiver.resources.search import Searcher, SearchError

DIM = 8


@pytest.fixture
def searcher(tmp_path, kit):
    store = kit.new_store(tmp_path / "products", kit.make_identity(dim=DIM))
    work = kit.Workload(2, DIM)
    store.append_segment(*work.batch(inserts=200))
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=20, updates=30, deletes=10))
    return Searcher(tmp_path, ["products"]), work


def test_where_and_columns(searcher):
    searcher, work = searcher
    table = searcher.search("products", np.ones(DIM), k=5, columns=["name"], where="name LIKE '%-v2'")
    assert table.column_names == ["id", "score", "distance", "name"]
    assert table.num_rows == 5 and all(n.endswith("-v2") for n in table.column("name").to_pylist())
    assert table.column("score").to_pylist() == sorted(table.column("score").to_pylist(), reverse=True)


def test_batch_matches_single_queries(searcher):
    searcher, _ = searcher
    queries = np.random.default_rng(0).normal(size=(4, DIM)).astype(np.float32)
    batch = searcher.search_batch("products", queries, k=3, where="id < 100")
    assert batch.column_names[:2] == ["query", "id"] and batch.num_rows == 12
    for i, query in enumerate(queries):
        single = searcher.search("products", query, k=3, where="id < 100")
        part = batch.filter(np.asarray(batch.column("query")) == i)
        assert part.column("id").to_pylist() == single.column("id").to_pylist()
    empty = searcher.search_batch("products", np.empty((0, DIM), np.float32), k=3)
    assert empty.num_rows == 0 and empty.column_names[:2] == ["query", "id"]


def test_a_batch_of_vectors_is_one_table_equal_to_single_queries(searcher):
    """Without a filter the batch takes the one-call path (reader.search_rows_many): the same rows,
    scores and columns as each query alone, over a snapshot whose keys the delta shadows."""
    searcher, work = searcher
    queries = np.random.default_rng(3).normal(size=(6, DIM)).astype(np.float32)
    batch = searcher.search_batch("products", queries, k=4, columns=["name"])
    assert batch.column_names == ["query", "id", "score", "distance", "name"] and batch.num_rows == 24
    for i, query in enumerate(queries):
        single = searcher.search("products", query, k=4, columns=["name"])
        part = batch.filter(np.asarray(batch.column("query")) == i).drop_columns(["query"])
        assert part.column("id").to_pylist() == single.column("id").to_pylist()
        assert part.column("name").to_pylist() == single.column("name").to_pylist()
        assert part.column("score").to_pylist() == pytest.approx(single.column("score").to_pylist())
    assert len(work.model.rows) > 4 * len(queries) and batch.column("id").null_count == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.search("products", np.ones(DIM), where="price > 1"), "names columns that are not served: price"),
        (lambda s: s.search("products", np.ones(DIM), where="1=1; DROP TABLE t"), "is not a SQL predicate"),
        (lambda s: s.search("products", np.ones(3)), "has 3 dimensions"),
        (lambda s: s.search("products", np.full(DIM, np.nan)), "NaN or infinite"),
        (lambda s: s.search("products", "   "), "the query text is empty"),
        (lambda s: s.search("products", np.ones(DIM), k=0), "k must be a positive integer"),
        (lambda s: s.search("products", np.ones(DIM), ef_search=0), "ef_search must be a positive integer"),
        (lambda s: s.search_batch("products", ["text", [1.0] * DIM]), "either all texts or all vectors"),
        (lambda s: s.search_batch("products", [np.ones(DIM), np.ones(2)]), "query vector 1 has 2 dimensions"),
    ],
)
def test_bad_queries_name_the_fix(searcher, call, message):
    searcher, _ = searcher
    with pytest.raises(SearchError, match=message):
        call(searcher)
