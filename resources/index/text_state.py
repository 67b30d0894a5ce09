"""The full-text side of a served state: the snapshot's text index and an in-memory index of the
units the segments after it upsert (the delta), searched as one. No Dagster.

The snapshot's ``text/`` index is used when it was written with the manifest's ``TextConfig``;
otherwise (a snapshot from before full-text search, or before a change of ``full_text``) the
reader indexes the snapshot's rows in memory once, with the manifest's config, and says so in the
log; the next snapshot writes it to disk. Both are built on first use, so a reader that only ever
searches vectors never pays for them.

Exactness (I2): a hit counts only when its key is live in the state the vectors serve: snapshot
hits whose key the delta deletes or supersedes (shadowed) are skipped, the delta holds only its
live upserts, and a search widens until it has ``limit`` live keys or no more matches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from quiver.resources.index.commitlog import KEY
from quiver.resources.index.text_index import TextConfig, TextHits, TextIndex, unit_texts, write_text_index

log = logging.getLogger(__name__)

Mask = Callable[[np.ndarray], np.ndarray]


class TextState:
    def __init__(self, config: TextConfig, snapshot_rows: pa.Table | None, snapshot_index: TextIndex | None,
                 snapshot_config: dict | None, delta_rows: pa.Table | None, where: str):
        self.config = config
        self._snapshot_rows = snapshot_rows
        self._written = snapshot_index if snapshot_config == config.to_dict() else None
        self._delta_rows = delta_rows
        self._where = where  # names the index in the log
        self._snapshot: TextIndex | None = None
        self._delta: TextIndex | None = None
        self._lock = threading.Lock()  # one build per state, however many threads query at once

    @property
    def snapshot(self) -> TextIndex | None:
        if self._written is not None or self._snapshot_rows is None:
            return self._written
        with self._lock:
            if self._snapshot is None:
                log.warning(
                    "%s: the snapshot has no text index written with the current full_text settings; indexing "
                    "its %d rows in memory (the next snapshot writes one)", self._where, self._snapshot_rows.num_rows
                )
                self._snapshot = _index_of(self._snapshot_rows, self.config)
            return self._snapshot

    @property
    def delta(self) -> TextIndex | None:
        if self._delta_rows is None:
            return None
        with self._lock:
            if self._delta is None:
                self._delta = _index_of(self._delta_rows, self.config)
            return self._delta

    def search(self, text: str, limit: int, snapshot_live: Mask, delta_live: Mask | None) -> TextHits:
        """The ``limit`` best live units of snapshot and delta together, best first."""
        snapshot, delta = self.snapshot, self.delta
        parts = []
        if snapshot is not None:
            parts.append(snapshot.search(text, limit, live=snapshot_live))
        if delta is not None:
            parts.append(delta.search(text, limit, live=delta_live, statistics=snapshot))
        if not parts:
            return TextHits(np.empty(0, np.uint64), np.empty(0, np.float32))
        keys = np.concatenate([p.keys for p in parts])
        scores = np.concatenate([p.scores for p in parts])
        best = np.lexsort((keys, -scores))[:limit]
        return TextHits(keys[best], scores[best])


def _index_of(rows: pa.Table, config: TextConfig) -> TextIndex:
    return write_text_index(None, rows.column(KEY).to_numpy(), unit_texts(rows, config), config.analyzer)
