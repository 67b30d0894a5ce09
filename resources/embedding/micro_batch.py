"""Query texts that arrive together, embedded together: one embedder call per micro-batch. No Dagster.

A server's threads call ``MicroBatcher.embed(model, texts)`` as they would call the embedder. The
first caller that finds the model idle runs at once, alone: a lone query waits for nothing. Callers
that arrive while a batch is running queue up; when it ends, the first of them takes the lead and
runs the whole queue (up to ``max_batch`` texts) as one embedder call, and each caller gets its own
rows. So batches form exactly when there is load, and last as long as it does (the dynamic batching
of model servers, with the running batch as the gathering window).

Why: all-MiniLM-L6-v2 on ONNX Runtime, 2 threads, 2 shared cores, queries of four words: one text
alone costs 3.3 ms of wall time and 5.2 ms of CPU; in a batch of 8, 1.6 ms and 2.8 ms each (1
thread: 3.9 ms alone, 2.3 ms in a batch of 8). The model is compute-bound past that: 16 saves
little more per text and makes a batch's first caller wait longer.

No gathering window beyond the running batch: ``make bench-load`` at 16 clients with a 2 ms window
(the lead waits up to 2 ms for more texts) made batches of 5.5 texts instead of 4.5 and no more
queries per second; at 1 client a window could only add latency. One batch runs at a time per
model: two at once (each on the embedder's 2 threads) gave about 10% more queries per second at 16
clients and a 15% higher p99.

Errors: an exception from the embedder reaches every caller of that batch (the same object, as
``concurrent.futures`` hands one to every waiter); the next batch runs as usual.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Texts per embedder call; 1 turns batching off. ``make bench-load`` at 16 clients, three rounds
# each: 8 gave 278-305 queries/s, 16 gave 267-278 with a higher p99, 1 (off) 215-226.
MAX_BATCH = 8


@dataclass(eq=False)
class _Call:
    """One caller's texts, and what it is woken with: its rows, an error, or the lead."""

    texts: list[str]
    woken: threading.Event = field(default_factory=threading.Event)
    rows: np.ndarray | None = None
    error: BaseException | None = None
    lead: bool = False  # its turn to run the next batch (it is at the head of the queue)


class MicroBatcher:
    """``embed(model, texts)`` for many threads at once, over ``inner(model, texts) -> (n, dim)``."""

    def __init__(self, inner: Callable[[str, list[str]], np.ndarray], max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"max_batch must be a positive number of texts, got {max_batch!r}")
        self.inner = inner
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Call]] = {}  # per model: callers waiting for a batch
        self._busy: set[str] = set()  # models with a batch running (its leader holds the lead)

    def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for ``texts``, one row each, as ``inner`` makes them: batched with the texts
        of other threads calling at the same time for the same model."""
        call = _Call(list(texts))
        if not call.texts or self.max_batch == 1:
            return self.inner(model, call.texts)
        with self._lock:
            self._queues.setdefault(model, deque()).append(call)
            if model not in self._busy:  # idle: nothing is queued, so this call leads at once
                self._busy.add(model)
                call.lead = True
        if not call.lead:
            call.woken.wait()
        if call.lead:
            self._run_batch(model)
        if call.error is not None:
            raise call.error
        return call.rows

    def _run_batch(self, model: str) -> None:
        """Run the head of ``model``'s queue (the leader's own call first) as one ``inner`` call,
        hand each caller its rows, then pass the lead to the next caller queued, if any."""
        with self._lock:
            queue = self._queues[model]
            batch = [queue.popleft()]
            size = len(batch[0].texts)  # a call with more than max_batch texts runs whole, alone
            while queue and size + len(queue[0].texts) <= self.max_batch:
                size += len(queue[0].texts)
                batch.append(queue.popleft())
        try:
            rows = self.inner(model, [text for call in batch for text in call.texts])
            if len(rows) != size:
                raise ValueError(f"the embedder returned {len(rows)} rows for {size} texts of model {model!r}")
            start = 0
            for call in batch:
                call.rows = rows[start : start + len(call.texts)]
                start += len(call.texts)
        except BaseException as error:  # noqa: BLE001 - every caller wakes and raises it, whatever it is
            for call in batch:
                call.error = error
        with self._lock:
            after = queue[0] if queue else None
            if after is not None:
                after.lead = True
            else:
                self._busy.discard(model)
        for call in batch[1:]:  # batch[0] is the leader's own call: it is awake
            call.woken.set()
        if after is not None:
            after.woken.set()
