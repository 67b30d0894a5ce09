"""``where=`` filters: exactly the top min(k, matching) live rows, through both paths, and refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from quiver.resources.index import reader as reader_module
from quiver.resources.index.reader import IndexReader
from quiver.resources.index.row_filter import FilterError

DIM = 16


def truth(model, query, predicate, k):
    """Exact top-k keys (cosine) among the model's rows whose name satisfies ``predicate``."""
    rows = [(key, row) for key, row in model.rows.items() if predicate(row.name)]
    if not rows:
        return []
    vectors = np.stack([row.vector for _, row in rows]).astype(np.float64)
    q = query.astype(np.float64)
    dist = 1.0 - vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    order = np.argsort(dist, kind="stable")[:k]
    return [rows[i][0] for i in order]


@pytest.fixture
def churned(tmp_path, kit):
    """600 rows in a snapshot, then a delta that updates 150 (new names) and deletes 100."""
    centers = np.random.default_rng(3).normal(size=(12, DIM)).astype(np.float32)
    store = kit.new_store(tmp_path, kit.make_identity(dim=DIM))
    work = kit.Workload(5, DIM, centers=centers)
    store.append_segment(*work.batch(inserts=600))
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=40, updates=150, deletes=100))
    return IndexReader(tmp_path), work


# name = f"row-{pk}-v{version}": v1 rows are the snapshot's, v2 rows the delta's updates and inserts.
FILTERS = {
    "name LIKE '%-v2'": lambda name: name.endswith("-v2"),  # only the delta
    "name LIKE 'row-1%'": lambda name: name.startswith("row-1"),  # both, about 1/5 of the rows
    "name LIKE 'row-5__-v1'": lambda name: re.fullmatch(r"row-5\d\d-v1", name) is not None,  # snapshot only
    "name = 'row-7-v1' OR name = 'row-8-v2'": lambda name: name in ("row-7-v1", "row-8-v2"),
    "name = 'nobody'": lambda name: False,
}


@pytest.mark.parametrize("where", list(FILTERS))
@pytest.mark.parametrize("path", ["exact", "graph"])
def test_filtered_results_are_the_top_matching_live_rows(churned, kit, monkeypatch, where, path):
    reader, work = churned
    if path == "graph":
        monkeypatch.setattr(reader_module, "EXACT_FILTER_KEYS", 0)
    rng = np.random.default_rng(11)
    recalls = []
    for _ in range(20):
        query = kit.random_unit(rng, DIM)
        for k in (1, 10, 50):
            want = truth(work.model, query, FILTERS[where], k)
            hits = reader.search(query, k, where=where)
            got = hits.keys.tolist()
            assert len(got) == len(want) == len(set(got)), (where, k)  # exactly min(k, matching)
            assert all(FILTERS[where](work.model.rows[key].name) for key in got)  # never a stale version
            assert list(hits.distances) == sorted(hits.distances)
            if want:
                recalls.append(len(set(got) & set(want)) / len(want))
    if recalls:
        assert np.mean(recalls) >= (1.0 if path == "exact" else 0.95), np.mean(recalls)


def test_an_update_that_leaves_the_filter_removes_the_row(tmp_path, kit):
    store = kit.new_store(tmp_path, kit.make_identity(dim=DIM))
    work = kit.Workload(1, DIM)
    store.append_segment(*work.batch(inserts=50))
    store.take_snapshot()
    store.append_segment(*work.batch(updates=50))  # every name becomes *-v2
    reader = IndexReader(tmp_path)
    query = np.ones(DIM, dtype=np.float32)
    assert reader.search(query, 10, where="name LIKE '%-v1'").keys.size == 0
    assert reader.search(query, 10, where="name LIKE '%-v2'").keys.size == 10
    assert reader.search_rows(query, 3, where="id < 3").column("id").to_pylist() != []


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("", "non-empty SQL predicate"),
        ("name = 'a'; DROP TABLE rows", "is not a SQL predicate"),
        ("1=1) UNION SELECT 1 FROM rows WHERE (1=1", "is not a SQL predicate"),
        ("name = 'a' ORDER BY 1", "is not a plain predicate"),
        ("name = 'a' LIMIT 1", "is not a plain predicate"),
        ("name IN (SELECT name FROM rows)", "has a subquery"),
        ("price > 3", "names columns that are not served: price; served columns: id, name"),
        ("_vector IS NOT NULL", "names columns that are not served: _vector"),
        ("read_text('/etc/passwd') IS NOT NULL", "cannot be evaluated"),
        ("name ===", "cannot be evaluated"),
    ],
)
def test_anything_but_a_plain_predicate_is_refused(churned, where, message):
    reader, _ = churned
    with pytest.raises(FilterError, match=re.escape(message)):
        reader.search(np.ones(DIM, dtype=np.float32), 5, where=where)
    assert reader.search(np.ones(DIM, dtype=np.float32), 5).keys.size == 5  # still serving


def test_filters_follow_new_segments(churned, kit):
    reader, work = churned
    store = kit.new_store(reader.root, kit.make_identity(dim=DIM))
    where = "name LIKE '%-v3'"
    assert reader.search(np.ones(DIM, dtype=np.float32), 5, where=where).keys.size == 0
    store.append_segment(*work.batch(updates=7))
    reader.refresh()
    assert reader.search(np.ones(DIM, dtype=np.float32), 5, where=where).keys.size == 5
