"""A large delta gets a graph built in the background; answers stay exact-k and ghost-free."""

from __future__ import annotations

import time

import numpy as np

from quiver.resources.index import reader as reader_module
from quiver.resources.index.reader import IndexReader

DIM = 16


def test_the_delta_graph_takes_over_without_changing_answers(tmp_path, kit, monkeypatch):
    monkeypatch.setattr(reader_module, "DELTA_GRAPH_ROWS", 100)
    store = kit.new_store(tmp_path, kit.make_identity(dim=DIM))
    work = kit.Workload(9, DIM, centers=np.random.default_rng(2).normal(size=(8, DIM)).astype(np.float32))
    store.append_segment(*work.batch(inserts=400))
    store.take_snapshot()
    store.append_segment(*work.batch(inserts=300, updates=100, deletes=50))  # 400 upserts in the delta
    reader = IndexReader(tmp_path)
    rng = np.random.default_rng(4)
    queries = [kit.random_unit(rng, DIM) for _ in range(30)]
    before = [reader.search(q, 10).keys for q in queries]  # the delta scanned; the graph's build starts
    deadline = time.monotonic() + 30
    while not reader.delta_graph_ready:
        assert time.monotonic() < deadline, "the delta graph was never built"
        time.sleep(0.01)
    assert reader.state.delta_graph is not None and len(reader.state.delta_graph) == 400
    live = set(work.model.rows)
    recalls, earlier_recalls = [], []
    for q, earlier in zip(queries, before):
        hits = reader.search(q, 10).keys
        exact = reader.search(q, 10, exact=True).keys
        assert len(hits) == 10 and set(hits.tolist()) <= live
        recalls.append(len(set(hits.tolist()) & set(exact.tolist())) / 10)
        earlier_recalls.append(len(set(earlier.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.95 and np.mean(earlier_recalls) >= 0.95
    assert reader.search(queries[0], len(live) + 5).keys.size == len(live)  # exactly min(k, live)


def test_a_few_queries_never_start_a_build(tmp_path, kit, monkeypatch):
    monkeypatch.setattr(reader_module, "DELTA_GRAPH_ROWS", 10)
    store = kit.new_store(tmp_path, kit.make_identity(dim=DIM))
    work = kit.Workload(3, DIM)
    store.append_segment(*work.batch(inserts=50))
    reader = IndexReader(tmp_path)
    for _ in range(reader_module.DELTA_GRAPH_AFTER - 1):  # a one-shot command queries once or twice
        reader.search(np.ones(DIM, dtype=np.float32), 5)
    assert not reader.state._building and reader.state.delta_graph is None


def test_a_small_delta_needs_no_graph(tmp_path, kit):
    store = kit.new_store(tmp_path, kit.make_identity(dim=DIM))
    work = kit.Workload(1, DIM)
    store.append_segment(*work.batch(inserts=50))
    reader = IndexReader(tmp_path)
    assert reader.delta_graph_ready and reader.state.delta_graph is None
