"""Readers and a writer of one index on a bucket, each in its own process, for the many-readers test
and ``make bench-readers``:

python -m tests.serving.bucket_world writer <url> <local> <seconds> <out.json>
    publishes a segment of seeded random changes about every ``WRITE_EVERY`` seconds (a snapshot
    every third), for ``seconds``; writes {"publishes": [{"seq", "at", "live": [keys]}]}: the key set
    live at each published seq and the wall time its publish returned
python -m tests.serving.bucket_world reader <url> <cache> <queries.npy> <seconds> <out.json>
    answers the queries (k=10) back to back from its own cache for ``seconds`` (pulling at most
    every ``POLL`` seconds), then pulls once more and answers them again; writes {"states":
    {state: {"first_at", "seq", "answers"}}, "latencies_ms": [...], "queries": n, "seconds": s}: a state is the served
    snapshot's directory and the served seq, and ``answers`` what it answered there the first time

The tests environment's AWS_* variables name the bucket's endpoint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from quiver.resources.index import IndexReader
from quiver.resources.index.commitlog import KEY, OP, OP_DELETE, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.remote import RemoteIndexStore, RemoteMirror

DIM = 32
K = 10
WRITE_EVERY = 0.5
POLL = 0.2
IDENTITY = IndexIdentity(dim=DIM, metric="cosine", dtype="f32", model="bucket-world")
PARAMS = HnswParams(m=16, ef_construction=64, ef_search=64)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def changes(rng, first: int, upserts: list[int], deletes: list[int]) -> pa.Table:
    n = len(upserts) + len(deletes)
    flat = np.zeros((n, DIM), dtype=np.float32)
    flat[: len(upserts)] = unit(rng, len(upserts))
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(flat.reshape(-1)), DIM, mask=pa.array([False] * len(upserts) + [True] * len(deletes))
    )
    keys = upserts + deletes
    return pa.table({
        SEQ: pa.array(range(first, first + n), pa.int64()),
        OP: pa.array([OP_UPSERT] * len(upserts) + [OP_DELETE] * len(deletes)),
        KEY: pa.array(keys, pa.uint64()),
        "id": pa.array(keys, pa.int64()),
        VECTOR: vectors,
        "name": pa.array([f"row {key}" for key in keys]),
    })


def writer(url: str, local: Path, seconds: float, out: Path, initial: int = 2000, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    store = RemoteIndexStore(url, local, dataset="world", identity=IDENTITY, params=PARAMS, primary_key="id",
                             keep_previous=False)
    store.open()
    live: set[int] = set()
    next_key, seq, rounds = 1, 0, 0
    publishes = [{"seq": 0, "at": time.time(), "live": []}]  # open() published the empty index
    deadline = time.monotonic() + seconds
    while True:
        new = list(range(next_key, next_key + (initial if not rounds else 50)))
        next_key += len(new)
        picked = rng.permutation(sorted(live))[:40] if live else []
        updated, deleted = [int(k) for k in picked[:20]], [int(k) for k in picked[20:]]
        table = changes(rng, seq + 1, new + updated, deleted)
        store.append_segment(table, seq + 1, seq + table.num_rows)
        seq += table.num_rows
        live |= set(new)
        live -= set(deleted)
        publishes.append({"seq": seq, "at": time.time(), "live": sorted(live)})
        rounds += 1
        if rounds % 3 == 0:
            store.take_snapshot()
            publishes.append({"seq": seq, "at": time.time(), "live": sorted(live)})
        if time.monotonic() > deadline:
            break
        time.sleep(WRITE_EVERY)
    out.write_text(json.dumps({"publishes": publishes}))


def reader(url: str, cache: Path, queries: np.ndarray, seconds: float, out: Path) -> None:
    mirror = RemoteMirror(url, cache, poll_seconds=POLL)
    deadline = time.monotonic() + 120
    while True:  # the writer may not have published yet
        try:
            mirror.pull(force=True)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    index = IndexReader(cache)
    states: dict[str, dict] = {}
    latencies: list[float] = []
    answered = 0

    def answer_all(final: bool = False) -> None:
        nonlocal answered
        mirror.pull(force=final)
        index.refresh()
        state = f"{index.manifest.snapshot.dir if index.manifest.snapshot else '-'}@{index.served_seq}"
        answers = []
        for query in queries:
            started = time.perf_counter()
            hits = index.search(query, k=K)
            latencies.append(1000 * (time.perf_counter() - started))
            answers.append([int(key) for key in hits.keys])
        answered += len(queries)
        if state not in states:
            states[state] = {"first_at": time.time(), "seq": index.served_seq, "answers": answers}

    started = time.monotonic()
    while time.monotonic() < started + seconds:
        answer_all()
    elapsed = time.monotonic() - started
    answer_all(final=True)
    out.write_text(json.dumps({"states": states, "latencies_ms": latencies, "queries": answered,
                               "seconds": elapsed, "final": list(states)[-1]}))


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "writer":
        writer(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))
    else:
        reader(sys.argv[2], Path(sys.argv[3]), np.load(sys.argv[4]), float(sys.argv[5]), Path(sys.argv[6]))
