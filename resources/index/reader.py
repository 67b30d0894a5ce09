"""The read side of one index directory: serves queries from the freshest published state.

State = the manifest's snapshot, memory-mapped (start is near instant and the page cache is shared
between processes), plus the segments after it folded into a small in-memory *delta*: a usearch
index of the upserted vectors searched exactly, and the set of snapshot keys that the delta
deletes or supersedes (*shadowed*). A query searches both, drops shadowed snapshot hits, and merges
by distance. ``refresh`` is a stat of the manifest and a listing of ``log/``; it reloads only what
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from resources.index import commitlog, snapshot
from resources.index.commitlog import KEY, OP, SEQ, VECTOR
from resources.index.errors import CorruptFileError, IndexNotBuiltError, SnapshotUnrecoverableError
from resources.index.identity import IndexIdentity, new_usearch_index, scores_from_distances
from resources.index.manifest import Manifest, manifest_path, read_manifest

log = logging.getLogger(__name__)

_RELOAD_TRIES = 5


@dataclass
class _State:
    manifest: Manifest
    manifest_stat: tuple
    snap: snapshot.SnapshotData | None
    base_seq: int  # seq of the snapshot served (the previous one when the current is damaged)
    snap_keys: np.ndarray  # the snapshot rows' keys, ascending
    segment_names: tuple[str, ...]  # the run of segments applied after ``base_seq``
    served_seq: int  # every change up to here is served
    delta_index: object  # usearch index of the delta's upserts
    delta_rows: pa.Table | None  # the delta's upserts without vectors, ascending by key
    shadowed: np.ndarray  # snapshot keys deleted or superseded by the delta, ascending
    snapshot_problem: str | None = None  # why the previous snapshot is served, if it is
    log_problem: str | None = None  # what ended the run of segments early, if anything

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(p for p in (self.snapshot_problem, self.log_problem) if p)

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
        return _stat(manifest_path(root))
    except FileNotFoundError:
        read_manifest(root)  # no manifest: raises IndexNotBuiltError, which names the fix
        raise


class IndexReader:
    def __init__(self, root: Path, verify: bool = True):
        self.root = Path(root)
        self.verify = verify  # checksums before mapping a snapshot (XXH3-128: 9 GB/s measured, sha256 1.3)
        self._state: _State | None = None
        self._refresh_problem: str | None = None

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
        state = self.state
        names: list[str] = []
        for table in (state.snap.rows if state.snap else None, state.delta_rows):
            if table is not None:
                names += [
                    n for n in table.column_names if n not in names and n not in (KEY, state.manifest.primary_key)
                ]
        return names

    def __len__(self) -> int:
        return self.state.live_vectors

    def refresh(self) -> bool:
        """Pick up a new manifest or new segments; returns whether the served state changed.

        Raises only when there is nothing to serve yet; otherwise a failure keeps the current
        state and is recorded in ``problems``.
        """
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
            names = self._chain_after(current.base_seq)
            if names == current.segment_names:
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
        records, chain = commitlog.read_chain(commitlog.list_segments(self.root), base_seq, manifest.identity)
        log_problem = f"log: {chain.problem}; serving the segments before it" if chain.problem else None
        served_seq = chain.last if chain.last is not None else base_seq
        if served_seq < manifest.snapshot_seq:
            raise SnapshotUnrecoverableError(
                f"{self.root}: the snapshot at seq {manifest.snapshot_seq} is damaged and the previous snapshot's "
                f"segments reach only seq {served_seq} ({chain.problem}); materialize the dataset's index asset, "
                "which rebuilds the directory from DuckDB"
            )
        folded = commitlog.fold(records)
        delta_index = new_usearch_index(manifest.identity, manifest.hnsw)
        delta_rows = None
        shadowed = np.empty(0, dtype=np.uint64)
        if folded is not None:
            changed = np.sort(folded.column(KEY).to_numpy())
            shadowed = changed[np.isin(changed, snap_keys)]
            added = commitlog.upserts(folded).sort_by(KEY)
            if added.num_rows:
                delta_index.add(added.column(KEY).to_numpy(), commitlog.vectors_of(added, manifest.identity.dim))
                delta_rows = added.drop_columns([SEQ, OP, VECTOR])
        return _State(
            manifest=manifest,
            manifest_stat=manifest_stat,
            snap=snap,
            base_seq=base_seq,
            snap_keys=snap_keys,
            segment_names=tuple(ref.name for ref in chain.refs),
            served_seq=served_seq,
            delta_index=delta_index,
            delta_rows=delta_rows,
            shadowed=shadowed,
            snapshot_problem=snapshot_problem,
            log_problem=log_problem,
        )

    # -- search ------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, ef_search: int | None = None, exact: bool = False) -> Hits:
        """The ``k`` nearest live keys to one vector (exactly ``min(k, live)`` of them).

        ``exact``: brute force over every live vector instead of the HNSW graph (the ground truth
        for recall checks; linear in the index size).
        """
        state = self.state
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        keys, distances = [], []
        if state.snap is not None and len(state.snap.index):
            snap_keys, snap_dist = self._search_snapshot(
                state, vector, k, ef_search or state.manifest.hnsw.ef_search, exact
            )
            keys.append(snap_keys)
            distances.append(snap_dist)
        if len(state.delta_index):
            found = state.delta_index.search(vector, min(k, len(state.delta_index)), exact=True)
            keys.append(np.asarray(found.keys, dtype=np.uint64))
            distances.append(np.asarray(found.distances, dtype=np.float32))
        if not keys:
            return Hits(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32))
        all_keys, all_dist = np.concatenate(keys), np.concatenate(distances)
        order = np.argsort(all_dist, kind="stable")[:k]
        return Hits(all_keys[order], all_dist[order])

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
        # Oversample by the shadowed keys (they can displace at most that many hits), then widen.
        count = min(size, k + min(len(state.shadowed), 4 * k + 64))
        while True:
            found = index.search(vector, count, exact=exact)
            keys = np.asarray(found.keys, dtype=np.uint64)
            dist = np.asarray(found.distances, dtype=np.float32)
            live = ~np.isin(keys, state.shadowed)
            if live.sum() >= wanted or count >= size:
                break
            count = min(size, count * 4)
        if live.sum() < wanted:  # the graph could not reach enough live nodes: be exact instead
            found = index.search(vector, size, exact=True)
            keys = np.asarray(found.keys, dtype=np.uint64)
            dist = np.asarray(found.distances, dtype=np.float32)
            live = ~np.isin(keys, state.shadowed)
        return keys[live][:k], dist[live][:k]

    def rows(self, keys: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Primary key and served columns for ``keys``, in the order given."""
        state = self.state
        pk = state.manifest.primary_key
        columns = self.served_columns if columns is None else columns
        if len(keys) == 0:
            return pa.table({name: pa.array([]) for name in [pk, *columns]})
        parts, positions = [], []
        in_delta = np.zeros(len(keys), dtype=bool)
        if state.delta_rows is not None:
            delta_keys = state.delta_rows.column(KEY).to_numpy()
            at = np.searchsorted(delta_keys, keys).clip(max=len(delta_keys) - 1)
            in_delta = delta_keys[at] == keys
            parts.append(_select(state.delta_rows, [pk, *columns]).take(pa.array(at[in_delta])))
            positions.append(np.flatnonzero(in_delta))
        if (~in_delta).any():
            at = np.searchsorted(state.snap_keys, keys[~in_delta])
            parts.append(_select(state.snap.rows, [pk, *columns]).take(pa.array(at)))
            positions.append(np.flatnonzero(~in_delta))
        table = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        return table.take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))

    def search_rows(
        self, vector: np.ndarray, k: int, columns: list[str] | None = None, ef_search: int | None = None
    ) -> pa.Table:
        """Best first: the primary key, ``score`` (higher is better), ``distance``, served columns."""
        hits = self.search(vector, k, ef_search)
        rows = self.rows(hits.keys, columns)
        pk = self.state.manifest.primary_key
        scores = scores_from_distances(self.identity.metric, hits.distances)
        result = pa.table(
            {
                pk: rows.column(pk),
                "score": pa.array(scores, pa.float64()),
                "distance": pa.array(hits.distances.astype(np.float64)),
            }
        )
        for name in rows.column_names:
            if name != pk:
                result = result.append_column(name, rows.column(name))
        return result


def _select(table: pa.Table, columns: list[str]) -> pa.Table:
    """Columns by name; a column a table lacks (added to the spec later) comes back as nulls."""
    arrays = [table.column(c) if c in table.column_names else pa.nulls(table.num_rows) for c in columns]
    return pa.table(arrays, names=columns)
