"""The read side of one index directory: serves queries from the freshest published state.

State = the manifest's snapshot, memory-mapped (start is near instant and the page cache is shared
between processes), plus the segments after it folded into a small in-memory *delta*: a matrix of
the upserted vectors, searched exactly (SIMD brute force: no graph to build, so picking up a
segment costs reading it), and the set of snapshot keys that the delta deletes or supersedes
(*shadowed*). A delta of ``DELTA_GRAPH_ROWS`` rows or more also gets a graph once a process has
scanned it ``DELTA_GRAPH_AFTER`` times (a service, not a one-shot command), built in a background
thread; queries use it once it is ready and brute force until then. A query searches both, drops shadowed snapshot hits, and merges by distance.
``where=`` filters evaluate a SQL predicate over the served rows (``row_filter``), then search only
the matching keys: exactly when they are few, through the graph with oversampling when many. ``refresh`` is a stat of the manifest and a listing of ``log/``; it reloads only what
changed. The reader never opens the DuckDB file and never writes.

Damage never stops a reader that is serving, and the served state only moves forward:
- the snapshot's checksums and header are verified before usearch maps it; a damaged snapshot is
  replaced by the previous one plus the segments after it (the store keeps them for this);
- the segments are applied up to the first gap or damaged one (a consistent, once-published state);
- if a refresh fails or would go back in seq, the reader keeps what it serves and records the
  problem (``problems``) until the writer repairs the directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.resources.fusion import RRF_K, reciprocal_rank_fusion
from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.commitlog import CHUNK, CHUNK_COLUMNS, KEY, OP, SEQ, VECTOR
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError, SnapshotUnrecoverableError
from quiver.resources.index.identity import IndexIdentity, exact_distances, new_usearch_index, scores_from_distances
from quiver.resources.index.manifest import MANIFEST_NAME, Manifest, read_manifest
from quiver.resources.index.row_filter import RowFilter
from quiver.resources.index.text_index import TextConfig, TextHits
from quiver.resources.index.text_state import TextState

log = logging.getLogger(__name__)

_RELOAD_TRIES = 5
# A filter matching at most this many keys is answered exactly; more are searched through the graph
# with oversampling. Measured at 1M x 384 with 10,000 matching keys (1%): exact 32 ms (gathering
# the vectors from the mapped index dominates), the graph 9 ms at recall@10 0.97.
EXACT_FILTER_KEYS = 4_096
# From this many delta rows a scan costs more than a graph search. Measured beside a 1M-vector
# snapshot (x 384, make bench-serving): at 10,000 rows the scan (one BLAS product, streamed) took
# 0.21 ms and the delta's graph 0.41-0.48 ms, its nodes evicted from cache by the snapshot's
# search; alone, the graph wins from about 10,000 rows and the scan costs 0.6 ms at 20,000.
DELTA_GRAPH_ROWS = 16_384
DELTA_GRAPH_AFTER = 8  # scans of a large delta before its graph is built
# Rows each pass of a hybrid search hands to the fusion (at least k): a row ranked low by one pass
# and high by the other needs to be in both lists to be fused. See make bench-hybrid.
HYBRID_DEPTH = 50
# The passes in fusion order: a tie of fused scores (a row only one pass found, at the same rank as
# a row only the other found) goes to the text pass's row. Measured by make bench-hybrid (10,000
# Debian packages, 1,000 queries, two query seeds): a typed name first 0.959 / 0.954 of the time
# with text first, 0.921 / 0.909 with vector first; a paraphrased description in the top 10 0.838
# / 0.821 against 0.840 / 0.823. A text weight of 1.1 instead won the names as well but let text-only
# rows crowd paraphrase answers (top 10: 0.813).
PASSES = ("text", "vector")


class TextSearchUnavailable(LookupError):
    """The dataset has no full-text index (its spec's ``full_text`` is off)."""


@dataclass
class _State:
    manifest: Manifest
    manifest_stat: tuple
    snap: snapshot.SnapshotData | None
    base_seq: int  # seq of the snapshot served (the previous one when the current is damaged)
    snap_keys: np.ndarray  # the snapshot rows' keys, ascending
    segment_names: tuple[str, ...]  # the run of segments applied after ``base_seq``
    served_seq: int  # every change up to here is served
    delta_keys: np.ndarray  # the delta's upserted keys, ascending
    delta_vectors: np.ndarray  # their vectors (float32, one row per key), searched exactly
    delta_rows: pa.Table | None  # the delta's upserts without vectors, ascending by key
    shadowed: np.ndarray  # snapshot keys deleted or superseded by the delta, ascending
    snapshot_problem: str | None = None  # why the previous snapshot is served, if it is
    log_problem: str | None = None  # what ended the run of segments early, if anything
    _filters: dict = field(default_factory=dict)
    _selected: dict = field(default_factory=dict)
    _schemas: dict = field(default_factory=dict)
    log_listing: tuple[str, ...] = ()  # the log/ names this state was read from (segment_listing)
    # log/'s stat taken before that listing, once it is settled (commitlog.log_stat_settled): while
    # log/ still has it, the listing is the same and a query's refresh is two stats, no listing.
    log_stat: tuple | None = None
    delta_graph: object = None  # the delta's HNSW graph once the background build finished
    delta_scans: int = 0
    _building: bool = False
    text: TextState | None = None  # the full-text side, when the manifest has a text config

    def scanned_delta(self) -> None:
        """Count a brute-force scan of a large delta; start the graph's build after a few.

        The thread is not a daemon: an interpreter exiting mid-build waits for it (usearch must not
        be torn down under a running add), and one-shot commands never start it.
        """
        self.delta_scans += 1
        if self.delta_scans >= DELTA_GRAPH_AFTER and not self._building and len(self.delta_keys) >= DELTA_GRAPH_ROWS:
            self._building = True
            threading.Thread(target=self.build_delta_graph, name="quiver-delta-graph").start()

    def build_delta_graph(self) -> None:
        index = new_usearch_index(self.manifest.identity, self.manifest.hnsw)
        if len(self.delta_keys):
            index.add(self.delta_keys, self.delta_vectors, threads=1)  # leave the other cores to queries
        self.delta_graph = index

    @cached_property
    def delta_sq_norms(self) -> np.ndarray:
        """The delta vectors' squared norms, for the exact scan (``exact_distances``)."""
        return np.einsum("ij,ij->i", self.delta_vectors, self.delta_vectors)

    @cached_property
    def delta_index(self):
        """The delta's graph, built now if the background has not: for checks that compare graphs."""
        if self.delta_graph is None:
            self.build_delta_graph()
        return self.delta_graph

    def selected(self, names: tuple[str, ...]) -> tuple[pa.RecordBatch | None, pa.RecordBatch | None]:
        """The snapshot's and the delta's rows with only ``names``, each one contiguous batch (made
        once per state: a query's rows are then one ``take`` per column, no chunk lookup)."""
        if names not in self._selected:
            self._selected[names] = tuple(
                None if table is None else _one_batch(_select(table, list(names)))
                for table in (self.snap.rows if self.snap else None, self.delta_rows)
            )
        return self._selected[names]

    def row_filter(self, columns: list[str]):
        if "filter" not in self._filters:
            self._filters["filter"] = RowFilter(self.snap.rows if self.snap else None, self.delta_rows, columns)
        return self._filters["filter"]

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(p for p in (self.snapshot_problem, self.log_problem) if p)

    def scored_schema(self, rows: pa.Schema) -> pa.Schema:
        """``rows`` with ``score`` and ``distance`` (float64) after the primary key (made once per state)."""
        schema = self._schemas.get(rows)
        if schema is None:
            fields = list(rows)
            fields[1:1] = [pa.field("score", pa.float64()), pa.field("distance", pa.float64())]
            schema = self._schemas[rows] = pa.schema(fields)
        return schema

    @cached_property
    def served_columns(self) -> list[str]:
        """The served columns of the snapshot's rows and the delta's, in order (see _served_columns)."""
        return _served_columns(self)

    @cached_property
    def chunked(self) -> bool:
        """Whether any row has more than one chunk: only then can hits repeat a primary key."""
        for table in (self.snap.rows if self.snap else None, self.delta_rows):
            if table is not None and CHUNK in table.column_names and (pc.max(table.column(CHUNK)).as_py() or 0) > 0:
                return True
        return False

    @property
    def live_vectors(self) -> int:
        in_snapshot = len(self.snap_keys) - len(self.shadowed)
        return in_snapshot + (self.delta_rows.num_rows if self.delta_rows is not None else 0)


@dataclass(frozen=True)
class Hits:
    keys: np.ndarray
    distances: np.ndarray


class _ManifestMoved(Exception):
    """A writer published a new manifest while this refresh was reading: start again."""


def _stat(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _manifest_stat(root: Path) -> tuple:
    try:
        return _stat(os.path.join(root, MANIFEST_NAME))  # os.path, not pathlib: this runs per query
    except FileNotFoundError:
        read_manifest(root)  # no manifest: raises IndexNotBuiltError, which names the fix
        raise


class IndexReader:
    def __init__(self, root: Path, verify: bool = True):
        self.root = Path(root)
        self.verify = verify  # checksums before mapping a snapshot (XXH3-128: 9 GB/s measured, sha256 1.3)
        self._state: _State | None = None
        self._refresh_problem: str | None = None
        # One refresh at a time: two threads reading the directory at different moments could
        # otherwise publish their states out of order, and the reader would move backwards.
        self._refresh_lock = threading.Lock()

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> _State:
        if self._state is None:
            self.refresh()
        return self._state

    @property
    def manifest(self) -> Manifest:
        return self.state.manifest

    @property
    def identity(self) -> IndexIdentity:
        return self.state.manifest.identity

    @property
    def served_seq(self) -> int:
        return self.state.served_seq

    @property
    def problems(self) -> tuple[str, ...]:
        """What keeps the served state from matching the directory (empty when healthy)."""
        extra = (self._refresh_problem,) if self._refresh_problem else ()
        return self.state.problems + extra

    @property
    def served_columns(self) -> list[str]:
        return list(self.state.served_columns)

    def __len__(self) -> int:
        return self.state.live_vectors

    def refresh(self) -> bool:
        """Pick up a new manifest or new segments; returns whether the served state changed.

        Raises only when there is nothing to serve yet; otherwise a failure keeps the current
        state and is recorded in ``problems``. Thread-safe: searches running meanwhile keep their state.
        """
        with self._refresh_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        for attempt in range(_RELOAD_TRIES):
            last_try = attempt == _RELOAD_TRIES - 1
            try:
                changed = self._refresh_once()
                self._refresh_problem = None
                return changed
            except (FileNotFoundError, _ManifestMoved) as error:
                # A snapshot's cleanup removed a file between the listing and the read, or a new
                # manifest was published meanwhile: the next attempt sees the new state.
                if not last_try:
                    continue
                failure = error
            except (CorruptFileError, IndexNotBuiltError) as error:
                failure = error
            if self._state is None:
                raise (
                    failure
                    if not isinstance(failure, _ManifestMoved)
                    else CorruptFileError(f"{self.root}: the manifest kept changing while it was read")
                )
            self._refresh_problem = f"keeps serving seq {self._state.served_seq}: {failure}"
            log.error("%s: %s", self.root, self._refresh_problem)
            return False
        return False

    def _refresh_once(self) -> bool:
        current = self._state
        stat = _manifest_stat(self.root)
        if current is None or stat != current.manifest_stat:
            manifest = read_manifest(self.root)
            snap, base_seq, snapshot_problem = self._open_snapshot(manifest, stat)
            snap_keys = snap.rows.column(KEY).to_numpy() if snap else np.empty(0, dtype=np.uint64)
            state = self._with_delta(manifest, stat, snap, base_seq, snap_keys, snapshot_problem)
        else:
            # Same names, same log (segments are immutable), unless a damaged one may have been
            # repaired in place: then the names cannot tell, and the chain is read again.
            log_stat = commitlog.log_dir_stat(self.root)
            if current.log_stat is not None and log_stat == current.log_stat and current.log_problem is None:
                return False
            settled = log_stat if commitlog.log_stat_settled(log_stat, time.time_ns()) else None
            listing = commitlog.segment_listing(self.root)
            if listing == current.log_listing and current.log_problem is None:
                current.log_stat = settled
                return False
            names = self._chain_after(current.base_seq)
            if names == current.segment_names:  # e.g. a snapshot's cleanup removed older segments
                current.log_listing, current.log_stat = listing, settled
                return False
            state = self._with_delta(
                current.manifest,
                stat,
                current.snap,
                current.base_seq,
                current.snap_keys,
                current.snapshot_problem,
            )
        if current is not None and state.served_seq < current.served_seq:
            self._refresh_problem = (
                f"keeps serving seq {current.served_seq}: the directory now reaches only seq {state.served_seq} "
                f"({'; '.join(state.problems) or 'log truncated for repair'})"
            )
            log.warning("%s: %s", self.root, self._refresh_problem)
            return False
        self._state = state
        for problem in state.problems:
            log.error("%s: %s", self.root, problem)
        return True

    def _open_snapshot(self, manifest: Manifest, stat: tuple) -> tuple[snapshot.SnapshotData | None, int, str | None]:
        """The manifest's snapshot, or the previous one when it is damaged: (data, seq, why)."""
        entry = manifest.snapshot
        if entry is None:
            return None, 0, None
        try:
            return (
                snapshot.open_snapshot(self.root, entry, manifest.identity, view=True, verify=self.verify),
                entry.seq,
                None,
            )
        except CorruptFileError as error:
            if _manifest_stat(self.root) != stat:
                raise _ManifestMoved from error  # cleaned up by a newer snapshot, not damaged
            previous = manifest.previous_snapshot
            if previous is None:
                raise SnapshotUnrecoverableError(
                    f"{error}; there is no previous snapshot to serve instead: materialize the dataset's index "
                    "asset, which rebuilds the directory from DuckDB"
                ) from error
            try:
                fallback = snapshot.open_snapshot(self.root, previous, manifest.identity, view=True, verify=self.verify)
            except CorruptFileError as second:
                raise SnapshotUnrecoverableError(
                    f"{error}; and the previous snapshot is damaged too: {second}. Materialize the dataset's index "
                    "asset, which rebuilds the directory from DuckDB"
                ) from second
            return (
                fallback,
                previous.seq,
                f"snapshot {entry.dir} is damaged ({error}); serving {previous.dir} and the segments after it",
            )

    def _chain_after(self, base_seq: int) -> tuple[str, ...]:
        return tuple(ref.name for ref in commitlog.chain_after(commitlog.list_segments(self.root), base_seq).refs)

    def _with_delta(
        self,
        manifest: Manifest,
        manifest_stat: tuple,
        snap,
        base_seq: int,
        snap_keys: np.ndarray,
        snapshot_problem: str | None,
    ) -> _State:
        log_stat = commitlog.log_dir_stat(self.root)  # before the listing: a change after it moves the stat
        settled = log_stat if commitlog.log_stat_settled(log_stat, time.time_ns()) else None
        refs = commitlog.list_segments(self.root)
        records, chain = commitlog.read_chain(refs, base_seq, manifest.identity)
        log_problem = f"log: {chain.problem}; serving the segments before it" if chain.problem else None
        served_seq = chain.last if chain.last is not None else base_seq
        if served_seq < manifest.snapshot_seq:
            raise SnapshotUnrecoverableError(
                f"{self.root}: the snapshot at seq {manifest.snapshot_seq} is damaged and the previous snapshot's "
                f"segments reach only seq {served_seq} ({chain.problem}); materialize the dataset's index asset, "
                "which rebuilds the directory from DuckDB"
            )
        folded = commitlog.fold(records)
        delta_keys = np.empty(0, dtype=np.uint64)
        delta_vectors = np.empty((0, manifest.identity.dim), dtype=np.float32)
        delta_rows = None
        shadowed = np.empty(0, dtype=np.uint64)
        if folded is not None:
            changed = np.sort(folded.column(KEY).to_numpy())
            shadowed = changed[np.isin(changed, snap_keys)]
            added = commitlog.upserts(folded).sort_by(KEY)
            if added.num_rows:
                delta_keys = added.column(KEY).to_numpy()
                delta_vectors = np.ascontiguousarray(commitlog.vectors_of(added, manifest.identity.dim))
                delta_rows = added.drop_columns([SEQ, OP, VECTOR]).combine_chunks()  # see snapshot.open_snapshot
        config = TextConfig.from_dict(manifest.text)
        text = None
        if config is not None:
            text = TextState(
                config,
                snap.rows if snap else None,
                snap.text if snap else None,
                snap.text_config if snap else None,
                delta_rows,
                str(self.root),
            )
        return _State(
            text=text,
            manifest=manifest,
            manifest_stat=manifest_stat,
            snap=snap,
            base_seq=base_seq,
            snap_keys=snap_keys,
            segment_names=tuple(ref.name for ref in chain.refs),
            served_seq=served_seq,
            delta_keys=delta_keys,
            delta_vectors=delta_vectors,
            delta_rows=delta_rows,
            shadowed=shadowed,
            snapshot_problem=snapshot_problem,
            log_problem=log_problem,
            log_listing=tuple(sorted(ref.name for ref in refs)),
            log_stat=settled,
        )

    # -- search ------------------------------------------------------------------------------
    def search(
        self, vector: np.ndarray, k: int, ef_search: int | None = None, exact: bool = False, where: str | None = None
    ) -> Hits:
        """The ``k`` nearest live keys to one vector (exactly ``min(k, live)`` of them).

        ``exact``: brute force over every live vector instead of the HNSW graph (the ground truth
        for recall checks; linear in the index size). ``where``: only rows matching this SQL
        predicate over the served columns (exactly ``min(k, matching)`` of them).
        """
        return self._search(self.state, vector, k, ef_search, exact, where)

    def _search(
        self, state: _State, vector: np.ndarray, k: int, ef_search: int | None, exact: bool, where: str | None
    ) -> Hits:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        ef_search = ef_search or state.manifest.hnsw.ef_search
        if where is not None:
            return self._search_filtered(state, vector, k, ef_search, exact, where)
        keys, distances = [], []
        if state.snap is not None and len(state.snap.index):
            snap_keys, snap_dist = self._search_snapshot(state, vector, k, ef_search, exact)
            keys.append(snap_keys)
            distances.append(snap_dist)
        if len(state.delta_keys):
            graph = state.delta_graph
            if graph is not None and not exact:
                graph.expansion_search = ef_search
                found = graph.search(vector, min(k, len(state.delta_keys)))
                keys.append(np.asarray(found.keys, dtype=np.uint64))
                distances.append(np.asarray(found.distances, dtype=np.float32))
            else:
                keys_found, dist_found = self._brute_force(
                    state, state.delta_keys, state.delta_vectors, vector, k, state.delta_sq_norms
                )
                keys.append(keys_found)
                distances.append(dist_found)
                if not exact:
                    state.scanned_delta()
        return _merge(keys, distances, k)

    def search_many(self, vectors: np.ndarray, k: int, ef_search: int | None = None) -> list[Hits]:
        """``search`` for each row of ``vectors``, in one served state: the snapshot's graph is
        searched for all of them in one usearch call (its threads spread the batch over the cores);
        a query whose hits the delta shadows too much is widened alone, as ``search`` does."""
        return self._search_many(self.state, np.asarray(vectors, dtype=np.float32), k, ef_search)

    def _search_many(self, state: _State, vectors: np.ndarray, k: int, ef_search: int | None) -> list[Hits]:
        ef_search = ef_search or state.manifest.hnsw.ef_search
        if len(vectors) < 2 or state.snap is None or not len(state.snap.index) or state.delta_graph is not None:
            return [self._search(state, v, k, ef_search, False, None) for v in vectors]
        index, shadowed = state.snap.index, state.shadowed
        wanted = min(k, len(index) - len(shadowed))
        index.expansion_search = ef_search
        found = index.search(vectors, _oversampled(k, len(index), len(shadowed)))
        out = []
        for i, vector in enumerate(vectors):
            n = int(found.counts[i])
            keys = np.asarray(found.keys[i, :n], dtype=np.uint64)
            dist = np.asarray(found.distances[i, :n], dtype=np.float32)
            live = ~_contains(shadowed, keys)
            if live.sum() < wanted:  # shadowed too much: widened alone (and exact if the graph runs short)
                keys, dist = self._search_snapshot(state, vector, k, ef_search, False)
            else:
                keys, dist = keys[live][:k], dist[live][:k]
            parts = [(keys, dist)]
            if len(state.delta_keys):
                parts.append(
                    self._brute_force(state, state.delta_keys, state.delta_vectors, vector, k, state.delta_sq_norms)
                )
                state.scanned_delta()
            out.append(_merge([p[0] for p in parts], [p[1] for p in parts], k))
        return out

    @property
    def delta_graph_ready(self) -> bool:
        """Whether queries use a graph for the delta (small deltas never need one)."""
        state = self.state
        return state.delta_graph is not None or len(state.delta_keys) < DELTA_GRAPH_ROWS

    @staticmethod
    def _search_snapshot(
        state: _State, vector: np.ndarray, k: int, ef_search: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        index = state.snap.index
        size = len(index)
        wanted = min(k, size - len(state.shadowed))
        if wanted <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        index.expansion_search = ef_search
        shadowed = state.shadowed
        count = _oversampled(k, size, len(shadowed))  # then widened x4 until enough live hits come back
        while True:
            # One vector is one thread's work: threads=1 skips usearch's dispatch to a pool (5 us of a
            # 100 us search at 2k rows); queries run in parallel one level up.
            found = index.search(vector, count, exact=exact, threads=1)
            keys = np.asarray(found.keys, dtype=np.uint64)
            dist = np.asarray(found.distances, dtype=np.float32)
            live = ~_contains(shadowed, keys)
            if live.sum() >= wanted or count >= size:
                break
            count = min(size, count * 4)
        if live.sum() < wanted:  # the graph could not reach enough live nodes: be exact instead
            found = index.search(vector, size, exact=True)
            keys = np.asarray(found.keys, dtype=np.uint64)
            dist = np.asarray(found.distances, dtype=np.float32)
            live = ~_contains(shadowed, keys)
        return keys[live][:k], dist[live][:k]

    def live_keys_by_source(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys served from the snapshot's graph, keys served from the delta), each ascending, of one state."""
        state = self.state
        return state.snap_keys[~np.isin(state.snap_keys, state.shadowed)], state.delta_keys

    def live_keys(self) -> np.ndarray:
        """Every key the reader serves, ascending."""
        snap_keys, delta_keys = self.live_keys_by_source()
        return np.sort(np.concatenate([snap_keys, delta_keys]))

    def graph_search(self, vector: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` but through HNSW graphs everywhere: the snapshot's graph and a graph of the
        delta (``search`` may scan the delta exactly). This is what the graph gives once the next
        snapshot folds the delta in, so the recall check sees a bad graph before it is published.
        Returns (keys, distances), best first; no exact fallback, so a graph's misses show."""
        state = self.state
        keys, distances = [], []
        if state.snap is not None and len(state.snap.index):
            found_keys, found_dist = self._graph_search_snapshot(state, vector, k, ef_search)
            keys.append(found_keys)
            distances.append(found_dist)
        if len(state.delta_index):
            state.delta_index.expansion_search = ef_search
            found = state.delta_index.search(vector, min(k, len(state.delta_index)))
            keys.append(np.asarray(found.keys, dtype=np.uint64))
            distances.append(np.asarray(found.distances, dtype=np.float32))
        if not keys:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        all_keys, all_dist = np.concatenate(keys), np.concatenate(distances)
        order = np.argsort(all_dist, kind="stable")[:k]
        return all_keys[order], all_dist[order]

    @staticmethod
    def _graph_search_snapshot(state: _State, vector: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
        """The snapshot graph's ``k`` best live keys: shadowed keys (deleted or superseded by the delta)
        are dropped, so ask for more (they can displace at most that many hits) and widen if short."""
        index, shadowed = state.snap.index, state.shadowed
        size = len(index)
        wanted = min(k, size - len(shadowed))
        if wanted <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        index.expansion_search = ef_search
        count = min(size, k + min(len(shadowed), 4 * k + 64))
        while True:
            found = index.search(vector, count)
            keys = np.asarray(found.keys, dtype=np.uint64)
            dist = np.asarray(found.distances, dtype=np.float32)
            live = ~np.isin(keys, shadowed)
            if live.sum() >= wanted or count >= size:
                return keys[live][:k], dist[live][:k]
            count = min(size, count * 4)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The served vectors of live ``keys`` (float32, one row per key, in the order given).

        Raises KeyError naming the keys that are not served (never inserted, or deleted).
        """
        return self._vectors(self.state, keys)

    @staticmethod
    def _vectors(state: _State, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.uint64)
        in_delta = _require_served(state, keys)
        out = np.empty((len(keys), state.manifest.identity.dim), dtype=np.float32)
        out[in_delta] = state.delta_vectors[np.searchsorted(state.delta_keys, keys[in_delta])]
        if (~in_delta).any():
            got = state.snap.index.get(keys[~in_delta], dtype=np.float32)
            out[~in_delta] = np.vstack(got) if isinstance(got, tuple) else got
        return out

    @staticmethod
    def _brute_force(
        state: _State, keys: np.ndarray, vectors: np.ndarray, vector: np.ndarray, k: int, sq_norms=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of ``vectors`` (rows of ``keys``), best first."""
        count = min(k, len(keys))
        if count == 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        distances = exact_distances(state.manifest.identity.metric, vectors, vector, sq_norms)
        best = np.argpartition(distances, count - 1)[:count] if count < len(keys) else np.arange(len(keys))
        best = best[np.lexsort((best, distances[best]))]
        return keys[best], distances[best]

    def _search_filtered(
        self, state: _State, vector: np.ndarray, k: int, ef_search: int, exact: bool, where: str
    ) -> Hits:
        """Top ``k`` among the rows matching ``where``: exact over few matches, else the graph."""
        pk = state.manifest.primary_key
        snap_match, delta_match = state.row_filter([pk, *_served_columns(state)]).matching(where)
        if len(state.shadowed) and len(snap_match):
            snap_match = snap_match[~np.isin(snap_match, state.shadowed, assume_unique=True)]
        keys, distances = [], []
        if len(delta_match):
            at = np.searchsorted(state.delta_keys, delta_match)
            found = self._brute_force(state, delta_match, state.delta_vectors[at], vector, k)
            keys.append(found[0])
            distances.append(found[1])
        if len(snap_match):
            if exact or len(snap_match) <= EXACT_FILTER_KEYS:
                found = self._brute_force(state, snap_match, self._vectors(state, snap_match), vector, k)
            else:
                found = self._search_snapshot_matching(state, vector, k, ef_search, snap_match)
            keys.append(found[0])
            distances.append(found[1])
        return _merge(keys, distances, k)

    def _search_snapshot_matching(
        self, state: _State, vector: np.ndarray, k: int, ef_search: int, matching: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The graph, oversampled by the inverse of the filter's selectivity (x2), widened x4 until
        ``k`` matching hits come back; exact over the matching keys if the graph cannot reach them."""
        index = state.snap.index
        size = len(index)
        wanted = min(k, len(matching))
        count = min(size, max(2 * k, int(np.ceil(2.0 * k * size / len(matching)))))
        while True:
            index.expansion_search = max(ef_search, count)
            found = index.search(vector, count)
            found_keys = np.asarray(found.keys, dtype=np.uint64)
            at = np.searchsorted(matching, found_keys).clip(max=len(matching) - 1)
            hit = matching[at] == found_keys
            if hit.sum() >= wanted or count >= size:
                break
            count = min(size, count * 4)
        if hit.sum() < wanted:
            return self._brute_force(state, matching, self._vectors(state, matching), vector, k)
        return found_keys[hit][:k], np.asarray(found.distances, dtype=np.float32)[hit][:k]

    def rows(self, keys: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Primary key and served columns for live ``keys``, in the order given.

        Raises KeyError naming the keys that are not served (never inserted, or deleted): a
        position found by binary search for a missing key would be another row's.
        """
        state = self.state
        keys = np.asarray(keys, dtype=np.uint64)
        _require_served(state, keys)
        return pa.Table.from_batches([self._rows(state, keys, columns)])

    def _rows(self, state: _State, keys: np.ndarray, columns: list[str] | None) -> pa.RecordBatch:
        """``rows`` for keys known to be live in ``state`` (a search's hits in that same state)."""
        pk = state.manifest.primary_key
        names = (pk, *(state.served_columns if columns is None else columns))
        if len(keys) == 0:
            return pa.RecordBatch.from_pydict({name: pa.array([]) for name in names})
        snap_rows, delta_rows = state.selected(names)
        in_delta = _contains(state.delta_keys, keys)  # the delta rows are in delta_keys' order
        if not in_delta.any():  # the usual case: one take, already in the order asked
            return snap_rows.take(_positions(np.searchsorted(state.snap_keys, keys)))
        if in_delta.all():
            return delta_rows.take(_positions(np.searchsorted(state.delta_keys, keys)))
        parts = [
            delta_rows.take(np.searchsorted(state.delta_keys, keys[in_delta])),
            snap_rows.take(np.searchsorted(state.snap_keys, keys[~in_delta])),
        ]
        positions = np.concatenate([np.flatnonzero(in_delta), np.flatnonzero(~in_delta)])
        together = pa.concat_tables([pa.Table.from_batches([p]) for p in parts], promote_options="default")
        return _one_batch(together.take(np.argsort(positions, kind="stable")))

    def search_rows(
        self,
        vector: np.ndarray,
        k: int,
        columns: list[str] | None = None,
        ef_search: int | None = None,
        where: str | None = None,
        group: bool = True,
    ) -> pa.Table:
        """Best first: the primary key, ``score`` (higher is better), ``distance``, served columns.

        ``group``: one result per row, scored by its best chunk: exactly ``min(k, matching rows)``
        distinct primary keys (the search widens until enough rows or the index is exhausted, so
        several chunks of one row never crowd others out). ``group=False``: the ``k`` best chunks.
        ``columns`` may name ``_chunk``, ``_chunk_start`` and ``_chunk_end``: which chunk matched.
        """
        state = self.state  # one served state for the hits and their rows (a refresh may swap it meanwhile)
        hits = self._search(state, vector, k, ef_search, False, where)
        if group and state.chunked:
            hits = self._best_chunk_per_row(state, vector, k, ef_search, where, hits)
        return self._scored_rows(state, hits.keys, hits.distances, columns)

    def _scored_rows(self, state: _State, keys: np.ndarray, distances: np.ndarray, columns: list[str] | None) -> pa.Table:
        """The rows of ``keys`` with ``score`` and ``distance`` after the primary key: one take and one
        Table made from its arrays, on the schema the state keeps for these columns (per query, every
        Arrow call costs the search time too: its code evicts the graph's from the CPU caches)."""
        rows = self._rows(state, keys, columns)
        distances = np.ascontiguousarray(distances, dtype=np.float64)
        scores = scores_from_distances(state.manifest.identity.metric, distances)
        schema = state.scored_schema(rows.schema)
        arrays = rows.columns
        arrays[1:1] = [_float64s(scores), _float64s(distances)]
        return pa.Table.from_arrays(arrays, schema=schema)

    def search_rows_many(
        self, vectors: np.ndarray, k: int, columns: list[str] | None = None, ef_search: int | None = None
    ) -> pa.Table:
        """``search_rows`` for each row of ``vectors`` as one Table, ``query`` (the row's position)
        first: one graph search for the batch (``search_many``) and one ``take`` of rows for all the
        answers. Unit hits: a chunked dataset's rows are grouped by ``search_rows``, one query at a time."""
        state = self.state
        hits = self._search_many(state, np.asarray(vectors, dtype=np.float32), k, ef_search)
        keys = np.concatenate([h.keys for h in hits]) if hits else np.empty(0, np.uint64)
        distances = np.concatenate([h.distances for h in hits]) if hits else np.empty(0, np.float32)
        query = np.repeat(np.arange(len(hits), dtype=np.int32), [len(h.keys) for h in hits])
        table = self._scored_rows(state, keys, distances, columns)
        return table.add_column(0, "query", _arrow(query, np.int32))

    def _best_chunk_per_row(
        self, state: _State, vector: np.ndarray, k: int, ef_search: int | None, where: str | None, hits: Hits
    ) -> Hits:
        """The first (best) hit of each primary key, ``k`` of them (see ``_per_row``)."""
        keys, distances = self._per_row(
            state, k, (hits.keys, hits.distances), lambda n: astuple(self._search(state, vector, n, ef_search, False, where))
        )
        return Hits(keys, distances)

    def _per_row(self, state: _State, k: int, found: tuple[np.ndarray, np.ndarray], fetch) -> tuple[np.ndarray, np.ndarray]:
        """From units ``found`` best first (keys, values), the first (best) unit of each primary key,
        ``k`` of them, fetching wider (``fetch(n)``, x4) while chunks of the same rows fill the answer
        and the pass has more to give."""
        pk = state.manifest.primary_key
        fetched = k
        keys, values = found
        while True:
            owners = self._rows(state, keys, []).column(pk)
            codes = pc.index_in(owners, value_set=pc.unique(owners)).to_numpy(zero_copy_only=False)
            best = np.sort(np.unique(codes, return_index=True)[1])  # each row's first, best, hit
            exhausted = len(keys) < fetched  # the pass gave all it had
            if len(best) >= k or exhausted:
                best = best[:k]
                return keys[best], values[best]
            fetched *= 4
            keys, values = fetch(fetched)

    # -- full text ---------------------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        """Whether the served state has a full-text index."""
        return self.state.text is not None

    def text_keys(self) -> np.ndarray:
        """Every key the full-text side of one state can return, ascending (for checks: I2 says
        they are the live keys whose unit has text)."""
        state = self.state
        if state.text is None:
            return np.empty(0, np.uint64)
        parts = [np.empty(0, np.uint64)]
        if state.text.snapshot is not None:
            keys = state.text.snapshot.keys()
            parts.append(keys[~_contains(state.shadowed, keys)])
        if state.text.delta is not None:
            parts.append(state.text.delta.keys())
        return np.sort(np.concatenate(parts))

    def search_text(self, text: str, k: int, where: str | None = None) -> TextHits:
        """The ``k`` best live units for ``text`` by BM25 (exactly ``min(k, live matches)``)."""
        return self._search_text(self.state, text, k, where)

    def _search_text(self, state: _State, text: str, k: int, where: str | None) -> TextHits:
        if state.text is None:
            raise TextSearchUnavailable(
                f"{self.root}: this index has no full-text index; set `full_text: {{enabled: true}}` in the "
                "dataset's spec (the default) and materialize its index and snapshot, or search by vector"
            )
        shadowed = state.shadowed
        if where is None:
            return state.text.search(text, k, lambda keys: ~_contains(shadowed, keys), None)
        snap_match, delta_match = state.row_filter([state.manifest.primary_key, *_served_columns(state)]).matching(where)
        return state.text.search(
            text,
            k,
            lambda keys: _contains(snap_match, keys) & ~_contains(shadowed, keys),
            lambda keys: _contains(delta_match, keys),
        )

    def _text_ranking(self, state: _State, text: str, k: int, where: str | None, group: bool) -> tuple[np.ndarray, np.ndarray]:
        hits = self._search_text(state, text, k, where)
        found = (hits.keys, hits.scores)
        if group and state.chunked:
            found = self._per_row(state, k, found, lambda n: astuple(self._search_text(state, text, n, where)))
        return found

    def search_text_rows(
        self, text: str, k: int, columns: list[str] | None = None, where: str | None = None, group: bool = True
    ) -> pa.Table:
        """Best first: the primary key, ``score`` (BM25, higher is better; comparable within one
        answer only) and the served columns. ``group`` as in ``search_rows``."""
        state = self.state
        keys, scores = self._text_ranking(state, text, k, where, group)
        return _with_columns(self._rows(state, keys, columns), {"score": _float64s(scores)})

    def search_hybrid_rows(
        self,
        vector: np.ndarray,
        text: str,
        k: int,
        columns: list[str] | None = None,
        ef_search: int | None = None,
        where: str | None = None,
        group: bool = True,
        weights: dict[str, float] | None = None,
        rrf_k: int = RRF_K,
    ) -> pa.Table:
        """The vector pass and the text pass fused by reciprocal rank (per row when ``group``).

        Best first: the primary key, ``fused_score``, ``score`` and ``distance`` (the row's vector
        similarity to the query, also for rows only the text pass found), ``text_score`` (BM25,
        null when the text pass did not find the row), ``vector_rank`` and ``text_rank`` (the row's
        1-based place in each pass, null when that pass did not rank it), then the served columns.
        Exactly ``min(k, rows matching where)`` rows: the vector pass ranks every row.
        """
        state = self.state
        depth = max(k, HYBRID_DEPTH)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        hits = self._search(state, vector, depth, ef_search, False, where)
        if group and state.chunked:
            hits = self._best_chunk_per_row(state, vector, depth, ef_search, where, hits)
        text_keys, text_scores = self._text_ranking(state, text, depth, where, group)
        pk = state.manifest.primary_key
        by_row = group and state.chunked  # fuse rows, not chunks: a unit stands for its row
        ranked = {"vector": hits.keys, "text": text_keys}
        ids = {
            name: self._rows(state, ranked[name], []).column(pk).to_pylist() if by_row else ranked[name].tolist()
            for name in PASSES
        }
        fused = reciprocal_rank_fusion(ids, k=rrf_k, weights=weights)[:k]
        unit = {name: dict(zip(ids[name], keys.tolist())) for name, keys in (("text", text_keys), ("vector", hits.keys))}
        keys = np.array([unit["vector"].get(f.key, unit["text"].get(f.key)) for f in fused], dtype=np.uint64)
        distances = dict(zip(hits.keys.tolist(), hits.distances.tolist()))
        missing = np.array([key for key in keys.tolist() if key not in distances], dtype=np.uint64)
        if len(missing):  # found by text alone: its similarity is still the row's to show
            exact = exact_distances(state.manifest.identity.metric, self._vectors(state, missing), vector)
            distances |= dict(zip(missing.tolist(), exact.tolist()))
        distance = np.array([distances[key] for key in keys.tolist()], dtype=np.float64)
        text_score = dict(zip(ids["text"], text_scores.tolist()))  # by row: its best chunk's, whichever unit shows
        return _with_columns(
            self._rows(state, keys, columns),
            {
                "fused_score": pa.array([f.score for f in fused], pa.float64()),
                "score": pa.array(scores_from_distances(state.manifest.identity.metric, distance), pa.float64()),
                "distance": pa.array(distance),
                "text_score": pa.array([text_score.get(f.key) for f in fused], pa.float64()),
                "vector_rank": pa.array([f.ranks.get("vector") for f in fused], pa.int32()),
                "text_rank": pa.array([f.ranks.get("text") for f in fused], pa.int32()),
            },
        )


def astuple(hits) -> tuple[np.ndarray, np.ndarray]:
    """(keys, distances or scores) of a pass's hits."""
    return (hits.keys, hits.distances) if isinstance(hits, Hits) else (hits.keys, hits.scores)


def _with_columns(rows: pa.RecordBatch, extra: dict[str, pa.Array]) -> pa.Table:
    """``rows`` (primary key first) with ``extra`` columns right after the primary key: one Table
    made once from the arrays."""
    arrays, names = rows.columns, rows.column_names
    arrays[1:1] = list(extra.values())
    names[1:1] = list(extra)
    return pa.Table.from_arrays(arrays, names=names)


def _require_served(state: _State, keys: np.ndarray) -> np.ndarray:
    """KeyError unless every key is live in ``state``: in the delta, or in the snapshot and not
    shadowed (a binary search for a missing key would find another row's position). Returns
    which keys are in the delta."""
    in_delta = _contains(state.delta_keys, keys)
    from_snap = keys[~in_delta]
    served = _contains(state.snap_keys, from_snap) & ~_contains(state.shadowed, from_snap)
    if not served.all():
        missing = from_snap[~served]
        raise KeyError(
            f"{len(missing)} of the {len(keys)} keys asked for are not served at seq {state.served_seq} "
            f"(never inserted, or deleted): {missing[:10].tolist()}"
        )
    return in_delta


def _served_columns(state: _State) -> list[str]:
    names: list[str] = []
    for table in (state.snap.rows if state.snap else None, state.delta_rows):
        if table is not None:
            names += [
                n
                for n in table.column_names
                if n not in names and n not in (KEY, state.manifest.primary_key, *CHUNK_COLUMNS)
            ]
    return names


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``keys`` in ``sorted_keys`` (ascending), by binary search: cheaper than np.isin for a few keys."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def _merge(keys: list[np.ndarray], distances: list[np.ndarray], k: int) -> Hits:
    if not keys:
        return Hits(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32))
    if len(keys) == 1:  # one source: already best first
        return Hits(keys[0][:k], distances[0][:k])
    all_keys, all_dist = np.concatenate(keys), np.concatenate(distances)
    order = np.argsort(all_dist, kind="stable")[:k]
    return Hits(all_keys[order], all_dist[order])


_ARROW_OF = {np.dtype(np.float64): pa.float64(), np.dtype(np.int64): pa.int64(), np.dtype(np.int32): pa.int32()}


def _oversampled(k: int, size: int, shadowed: int) -> int:
    """Hits to ask the snapshot's graph for so that ``k`` stay live: oversampled by twice the share
    of shadowed keys (the hits they are expected to displace)."""
    return min(size, k + int(np.ceil(2 * k * shadowed / size)) + (2 if shadowed else 0))


def _arrow(values: np.ndarray, dtype) -> pa.Array:
    """An Arrow array over ``values``' buffer as ``dtype`` (float64, int64 or int32, no nulls):
    pa.array(ndarray) would first import numpy.ma (25 ms of a new process's first query) to rule
    out a masked array."""
    values = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(_ARROW_OF[values.dtype], len(values), [None, pa.py_buffer(values)])


def _float64s(values: np.ndarray) -> pa.Array:
    return _arrow(values, np.float64)


def _positions(values: np.ndarray) -> pa.Array:
    """Row positions for ``take``."""
    return _arrow(values, np.int64)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """``table`` as one contiguous batch (an empty table too)."""
    return pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns], schema=table.schema)


def _select(table: pa.Table, columns: list[str]) -> pa.Table:
    """Columns by name; a column a table lacks (added to the spec later) comes back as nulls."""
    arrays = [table.column(c) if c in table.column_names else pa.nulls(table.num_rows) for c in columns]
    return pa.table(arrays, names=columns)
