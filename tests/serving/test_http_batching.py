"""Micro-batching of query embeddings: the batcher alone (fake and real embedders), then a real server."""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from quiver.resources.embedding import DEFAULT_MODEL, get_embedder
from quiver.resources.embedding.micro_batch import MicroBatcher
from tests.serving.test_http import call, running_server

DIM = 8


def fake_vector(text: str) -> np.ndarray:
    """A deterministic vector per text, so a row handed to the wrong caller shows."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def fake_rows(model: str, texts: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t) for t in texts]) if texts else np.empty((0, DIM), np.float32)


def real_rows(model: str, texts: list[str]) -> np.ndarray:
    return get_embedder(model).embed(texts)


class CountingEmbed:
    """A fake ``embed(model, texts)`` that records each call's texts and can hold the first call
    until ``release`` is set, so that other threads queue behind it."""

    def __init__(self, hold_first: bool = False, fail: bool = False, rows=fake_rows):
        self.rows = rows
        self.calls: list[list[str]] = []
        self.threads: list[threading.Thread] = []
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, model: str, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
            self.threads.append(threading.current_thread())
            first = len(self.calls) == 1
        if first:
            assert self.release.wait(10), "the test never released the first call"
        if self.fail:
            raise RuntimeError(f"the model {model!r} broke on {len(texts)} texts")
        return self.rows(model, texts)


def call_at_once(batcher: MicroBatcher, calls: list[list[str]], embed: CountingEmbed, model: str = "m") -> list:
    """Each list of texts from its own thread, all released together; the first inner call is held
    until every other caller has had time to queue. Returns each caller's rows or exception."""
    start = threading.Barrier(len(calls))

    def one(texts):
        start.wait()
        try:
            return batcher.embed(model, texts)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(one, texts) for texts in calls]
        time.sleep(0.2)  # the others queue behind the held first call
        embed.release.set()
        return [f.result(timeout=30) for f in futures]


def test_concurrent_calls_share_embedder_calls():
    embed = CountingEmbed(hold_first=True)
    texts = [[f"query {i}"] for i in range(8)]
    results = call_at_once(MicroBatcher(embed, max_batch=16), texts, embed)
    assert len(embed.calls) == 2  # the first alone (the embedder was idle), the seven queued behind it together
    assert sorted(t for c in embed.calls for t in c) == sorted(t for c in texts for t in c)
    for mine, rows in zip(texts, results):
        np.testing.assert_array_equal(rows, np.stack([fake_vector(t) for t in mine]))


@pytest.mark.parametrize("max_batch", [1, 3, 16])
def test_each_caller_gets_its_own_rows(max_batch):
    """Callers with 1, 2 and 3 texts (some repeated across callers): each gets its rows, in its order;
    no embedder call exceeds max_batch texts unless one caller alone has more."""
    embed = CountingEmbed(hold_first=True)
    calls = [[f"t{i}-{j}" for j in range(1 + i % 3)] for i in range(12)] + [["same"], ["same", "t0-0"]]
    results = call_at_once(MicroBatcher(embed, max_batch=max_batch), calls, embed)
    for mine, rows in zip(calls, results):
        np.testing.assert_array_equal(rows, np.stack([fake_vector(t) for t in mine]))
    assert all(len(c) <= max(max_batch, 3) for c in embed.calls)
    if max_batch == 1:  # off: each call its own
        assert sorted(map(tuple, embed.calls)) == sorted(map(tuple, calls))
    else:
        assert len(embed.calls) < len(calls)


def test_real_model_rows_equal_each_text_alone():
    """Batched with the real model, each query's vector is the one it gets alone (float noise only:
    ONNX Runtime's kernels depend on the batch's shape)."""
    embedder = get_embedder(DEFAULT_MODEL)
    embed = CountingEmbed(hold_first=True, rows=real_rows)
    calls = [["text editor"], ["network tools", "python library"], ["image viewer for gnome"], ["database server"]]
    calls += [["a command line tool to compress files"], ["fonts"], ["text editor"]]
    results = call_at_once(MicroBatcher(embed), calls, embed, DEFAULT_MODEL)
    assert len(embed.calls) < len(calls)
    for mine, rows in zip(calls, results):
        alone = np.stack([embedder.embed([t])[0] for t in mine])
        assert rows.shape == alone.shape and rows.dtype == np.float32
        np.testing.assert_allclose(rows, alone, atol=1e-5)


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs():
    embed = CountingEmbed(hold_first=True, fail=True)
    batcher = MicroBatcher(embed)
    results = call_at_once(batcher, [[f"q{i}"] for i in range(8)], embed)
    assert len(embed.calls) < 8
    assert all(isinstance(r, RuntimeError) and "broke on" in str(r) for r in results), results
    embed.fail = False
    np.testing.assert_array_equal(batcher.embed("m", ["after"]), fake_vector("after")[None])


def test_wrong_row_count_is_an_error_for_every_caller():
    batcher = MicroBatcher(lambda model, texts: np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError, match="returned 1 rows for 2 texts of model 'm'"):
        batcher.embed("m", ["a", "b"])


def test_a_lone_call_runs_at_once_in_its_own_thread():
    embed = CountingEmbed()
    batcher = MicroBatcher(embed)
    times = []
    for i in range(50):
        started = time.perf_counter()
        batcher.embed("m", [f"alone {i}"])
        times.append(time.perf_counter() - started)
    assert set(embed.threads) == {threading.current_thread()}  # no hand-off to another thread, no window
    assert statistics.median(times) < 0.001  # the fake's own cost is microseconds
    assert batcher.embed("m", []).shape == (0, DIM)


def test_models_batch_apart():
    embed = CountingEmbed(hold_first=True)
    batcher = MicroBatcher(embed)
    start = threading.Barrier(6)

    def one(i):
        start.wait()
        return batcher.embed(f"model-{i % 2}", [f"q{i}"])

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(6)]
        time.sleep(0.2)
        embed.release.set()
        [f.result(timeout=30) for f in futures]
    by_model = {}
    for texts in embed.calls:
        models = {int(t[1:]) % 2 for t in texts}
        assert len(models) == 1  # never two models in one call
        by_model.setdefault(models.pop(), []).append(texts)
    assert set(by_model) == {0, 1}


def test_many_threads_many_rounds_all_answered():
    """Leadership passes on and on: 16 threads x 40 calls of 1 to 4 texts, every answer right."""
    batcher = MicroBatcher(fake_rows, max_batch=8)

    def worker(w):
        rng = np.random.default_rng(w)
        for r in range(40):
            texts = [f"w{w} r{r} {j}" for j in range(int(rng.integers(1, 5)))]
            rows = batcher.embed("m", texts)
            np.testing.assert_array_equal(rows, np.stack([fake_vector(t) for t in texts]))

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(worker, w) for w in range(16)]:
            future.result(timeout=60)


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch must be a positive number of texts, got 0"):
        MicroBatcher(lambda model, texts: None, max_batch=0)


# --- a real server -------------------------------------------------------------------------------

QUERIES = [
    "text editor", "network tools", "image viewer", "python library", "database server", "compression utility",
    "fonts for latex", "music player", "web browser", "robot control framework", "version control", "game engine",
    "email client", "pdf reader", "spell checker", "system monitor",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    with running_server(built, tmp_path_factory.mktemp("http") / "server.log") as running:
        yield running[0]


def _same_answer(one: dict, other: dict) -> None:
    """Equal answers, but for float noise in the vector similarity (a batch's kernels differ)."""
    assert len(one["matches"]) == len(other["matches"]) > 0
    for a, b in zip(one["matches"], other["matches"]):
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


@pytest.mark.parametrize("mode", ["hybrid", "vector"])
def test_concurrent_answers_equal_one_at_a_time(server, mode):
    requests = [{"text": q, "mode": mode, "limit": 5, "additional_columns": ["section"]} for q in QUERIES * 2]
    alone = [call(server, "/v1/search", r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: call(server, "/v1/search", r), requests))
    for (status, one), (status_together, other) in zip(alone, together):
        assert status == status_together == 200, (one, other)
        _same_answer(one, other)
