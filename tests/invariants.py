"""The storage invariants of DESIGN.md §2, one function each, for every kind of test to call.

Each ``check_*`` takes an index directory (and the DuckDB file where the invariant needs it) and
raises ``InvariantError`` naming the invariant and what is wrong; it returns what it read, so a test
can go on from there. The read-backs here are independent of the engine's reader: the snapshot's
files are read with usearch and pyarrow, the segments are folded, DuckDB is read in read-only mode.

    I1 one truth            check_one_truth(database, dataset)
    I2 derived and exact    check_derived_and_exact(root, database, dataset)
                            check_text_index(root): each snapshot's text/ holds exactly its units with text
    I3 all or nothing       check_all_or_nothing(root)
    I4 never rewritten      published_files(root) before, check_never_rewritten(before, root) after
    I5 readers keep serving check_reader_serves(reader, state)
    I6 declared identity    check_identity(root, identity)
    I7 bounded files        check_bounded_files(root)
    all that a directory (and its DuckDB file) can show at rest: check_at_rest(root, database, dataset)
    the same for an index on a bucket: check_bucket_at_rest(url, scratch, database, dataset): every
                            object copied to ``scratch``, which must then pass check_at_rest, and
                            the bucket must hold no object its manifest does not name (I7)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tantivy
from usearch.index import Index

from quiver.resources.files import TEMP_MARKER
from quiver.resources.index import IndexIdentity, IndexReader, commitlog, snapshot
from quiver.resources.index.commitlog import CHUNK, CHUNK_COLUMNS, KEY, OP, OP_DELETE, OP_UPSERT, SEQ, VECTOR
from quiver.resources.index.errors import CorruptFileError
from quiver.resources.index.manifest import MANIFEST_NAME, read_manifest
from quiver.resources.index.store import LOCK_NAME
from quiver.resources.index.text_index import TextConfig, unit_texts
from quiver.resources.warehouse import INTERNAL, q


class InvariantError(AssertionError):
    """An invariant of DESIGN.md §2 does not hold; the message names it and what is wrong."""


def _fail(invariant: str, message: str) -> None:
    raise InvariantError(f"{invariant}: {message}")


@dataclass(frozen=True)
class Entry:
    """One served entry (a row, or one chunk of a row): its primary key, its served columns (with
    the chunk columns ``_chunk``, ``_chunk_start``, ``_chunk_end`` where the log carries them) and
    its vector."""

    pk: object
    columns: dict
    vector: np.ndarray

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Entry)
            and self.pk == other.pk
            and self.columns == other.columns
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None


class State(dict):
    """key -> Entry; equal when the key sets, primary keys, served columns and vectors (exactly) are."""

    def difference(self, other: State) -> str | None:
        missing, extra = sorted(set(other) - set(self)), sorted(set(self) - set(other))
        if missing or extra:
            return f"{len(missing)} keys missing (e.g. {missing[:5]}), {len(extra)} extra (e.g. {extra[:5]})"
        for key in sorted(self):
            if self[key] != other[key]:
                mine, theirs = self[key], other[key]
                if (mine.pk, mine.columns) != (theirs.pk, theirs.columns):
                    return f"key {key}: {mine.pk!r} {mine.columns} != {theirs.pk!r} {theirs.columns}"
                return f"key {key} ({mine.pk!r}): the vectors differ"
        return None

    def __eq__(self, other) -> bool:
        return isinstance(other, dict) and State(other).difference(self) is None

    __hash__ = None


# -- independent read-backs ------------------------------------------------------------------------
def index_state(root: Path) -> State:
    """What the index directory serves: the snapshot's files plus the segments after it, folded."""
    root = Path(root)
    manifest = read_manifest(root)
    pk = manifest.primary_key
    state = State()
    if manifest.snapshot is not None:
        directory = root / manifest.snapshot.dir
        rows = pq.read_table(directory / snapshot.ROWS_FILE)
        keys = rows.column(KEY).to_numpy()
        index = Index.restore(str(directory / snapshot.INDEX_FILE), view=False)
        vectors = np.vstack(index.get(keys, dtype=np.float32)) if len(keys) else []
        for row, vector in zip(rows.to_pylist(), vectors):
            key = row.pop(KEY)
            state[key] = Entry(row.pop(pk), row, np.asarray(vector, dtype=np.float32))
    records, chain = commitlog.read_chain(commitlog.list_segments(root), manifest.snapshot_seq, manifest.identity)
    if chain.problem:
        _fail("I2", f"{root}: the log after the snapshot is broken: {chain.problem}")
    folded = commitlog.fold(records)
    for record in folded.to_pylist() if folded is not None else []:
        key = record.pop(KEY)
        if record.pop(OP) == OP_DELETE:
            state.pop(key, None)
            continue
        record.pop(SEQ)
        vector = np.asarray(record.pop(VECTOR), dtype=np.float32)
        state[key] = Entry(record.pop(pk), record, vector)
    return state


def table_state(database: Path, dataset: str) -> State:
    """What DuckDB's embedded table holds, in the index's terms (served columns as the index serves them)."""
    with duckdb.connect(str(database), read_only=True) as conn:
        table = f"{dataset}_embeddings"
        columns = [row[0] for row in conn.execute(f"DESCRIBE {q(table)}").fetchall()]
        pk = _primary_key(conn, dataset, columns)
        served = [c for c in columns if (c not in INTERNAL or c in CHUNK_COLUMNS) and c != pk]  # as the log carries them
        select = ", ".join(q(c) for c in [KEY, VECTOR, pk, *served])
        rows = conn.execute(f"SELECT {select} FROM {q(table)}").fetchall()
    return State(
        {
            row[0]: Entry(row[2], dict(zip(served, row[3:])), np.asarray(row[1], dtype=np.float32))
            for row in rows
        }
    )


def _primary_key(conn, dataset: str, embedded_columns: list[str]) -> str:
    """The one column the keys table and the embedded table share besides ``_key``."""
    keys = [row[0] for row in conn.execute(f"DESCRIBE {q(dataset + '_keys')}").fetchall()]
    shared = [c for c in keys if c not in (KEY, CHUNK) and c in embedded_columns]
    assert len(shared) == 1, f"{dataset}: cannot tell the primary key from {keys}"
    return shared[0]


# -- I1 ----------------------------------------------------------------------------------------------
def check_one_truth(database: Path, dataset: str) -> int:
    """Every embedded row is the upsert of its key's latest change record, and every key whose latest
    change is an upsert has its row; seqs are unique. Returns the last committed seq."""
    with duckdb.connect(str(database), read_only=True) as conn:
        changes, embedded = q(f"{dataset}_changes"), q(f"{dataset}_embeddings")
        duplicated = conn.execute(f"SELECT {SEQ} FROM {changes} GROUP BY ALL HAVING count(*) > 1 LIMIT 3").fetchall()
        if duplicated:
            _fail("I1", f"{dataset}: seqs used by more than one change record: {[r[0] for r in duplicated]}")
        latest = (
            f"SELECT {KEY}, arg_max({OP}, {SEQ}) AS op, max({SEQ}) AS seq FROM {changes} GROUP BY {KEY}"
        )
        unmatched = conn.execute(
            f"SELECT e.{KEY}, e.{SEQ}, l.op, l.seq FROM {embedded} e LEFT JOIN ({latest}) l USING ({KEY}) "
            f"WHERE l.seq IS NULL OR l.seq <> e.{SEQ} OR l.op <> '{OP_UPSERT}' LIMIT 5"
        ).fetchall()
        if unmatched:
            _fail("I1", f"{dataset}: embedded rows without their latest change record (key, seq, op, seq): {unmatched}")
        lost = conn.execute(
            f"SELECT l.{KEY}, l.seq FROM ({latest}) l ANTI JOIN {embedded} e USING ({KEY}) "
            f"WHERE l.op = '{OP_UPSERT}' LIMIT 5"
        ).fetchall()
        if lost:
            _fail("I1", f"{dataset}: keys whose latest change is an upsert but that have no row: {lost}")
        return conn.execute(f"SELECT coalesce(max({SEQ}), 0) FROM {changes}").fetchone()[0]


# -- I2 ----------------------------------------------------------------------------------------------
def check_derived_and_exact(root: Path, database: Path, dataset: str) -> State:
    """The snapshot plus the segments after it reproduce the embedded table: keys, vectors, served
    columns. The log must have caught up with the table (its last seq is the table's)."""
    root = Path(root)
    committed = check_one_truth(database, dataset)
    logged = max([read_manifest(root).snapshot_seq, *(ref.last for ref in commitlog.list_segments(root))])
    if logged != committed:
        _fail("I2", f"{root}: the log ends at seq {logged}, DuckDB's change records at {committed}")
    served, table = index_state(root), table_state(database, dataset)
    problem = served.difference(table)
    if problem:
        _fail("I2", f"{root} against {dataset}_embeddings: {problem}")
    return served


def _keys_with_text(rows: pa.Table, config: TextConfig) -> set[int]:
    texts = unit_texts(rows, config)
    return {key for key, text in zip(rows.column(KEY).to_pylist(), texts) if text is not None}


def check_text_index(root: Path) -> None:
    """I2 for full text: each published snapshot with a text index holds one document per unit
    of its rows file that has text, under the unit's key, and no other (read with tantivy directly)."""
    root = Path(root)
    manifest = read_manifest(root)
    for entry in (manifest.snapshot, manifest.previous_snapshot):
        if entry is None or entry.text is None:
            continue
        directory = root / entry.dir
        index = tantivy.Index.open(str(directory / snapshot.TEXT_DIR))
        searcher = index.searcher()
        hits = searcher.search(tantivy.Query.all_query(), limit=max(1, searcher.num_docs), count=False).hits
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        if len(keys) != len(set(keys)):
            _fail("I2", f"{directory}: the text index holds a key twice")
        wanted = _keys_with_text(pq.read_table(directory / snapshot.ROWS_FILE), TextConfig.from_dict(entry.text))
        if set(keys) != wanted:
            _fail("I2", f"{directory}: the text index holds {len(set(keys) - wanted)} keys too many and misses {len(wanted - set(keys))}")


# -- I3 ----------------------------------------------------------------------------------------------
def check_all_or_nothing(root: Path) -> None:
    """No temp file is left; every file the manifest publishes has its size and checksum; every
    segment after the fallback snapshot reads back whole (its checksums hold) and continues the last."""
    root = Path(root)
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMP_MARKER in p.name)
    if leftovers:
        _fail("I3", f"{root}: temp files left: {leftovers}")
    manifest = read_manifest(root)
    for entry in (manifest.snapshot, manifest.previous_snapshot):
        if entry is not None:
            try:
                snapshot.verify_snapshot(root, entry)
            except CorruptFileError as error:
                _fail("I3", f"{root}: snapshot {entry.seq}: {error}")
    starts = {entry.seq for entry in (manifest.snapshot, manifest.previous_snapshot) if entry} or {0}
    for start in sorted(starts):  # the served chain, and the fallback's
        _, chain = commitlog.read_chain(commitlog.list_segments(root), start, manifest.identity)
        if chain.problem:
            _fail("I3", f"{root}: {chain.problem}")


# -- I4 ----------------------------------------------------------------------------------------------
def published_files(root: Path) -> dict[str, bytes]:
    """Every published file under ``root`` (not the writer's lock) -> the digest of its bytes."""
    root = Path(root)
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).digest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != LOCK_NAME
    }


def check_never_rewritten(before: dict[str, bytes], root: Path) -> None:
    """No file published before (but the manifest, the one file replaced to publish) has other bytes now."""
    after = published_files(root)
    rewritten = sorted(n for n in before.keys() & after.keys() if n != MANIFEST_NAME and before[n] != after[n])
    if rewritten:
        _fail("I4", f"{root}: published files rewritten: {rewritten}")


# -- I5 ----------------------------------------------------------------------------------------------
def check_reader_serves(reader: IndexReader, state: State) -> None:
    """The reader answers exactly ``state``: its keys, primary keys, served columns, and each vector
    finds its own key (exact search: the data is under test here, not the graph's recall)."""
    if len(reader) != len(state):
        _fail("I5", f"the reader serves {len(reader)} rows, expected {len(state)}")
    if not state:
        return
    everything = reader.search(np.ones(reader.identity.dim, np.float32), k=len(state) + 5, exact=True)
    if set(everything.keys.tolist()) != set(state):
        _fail("I5", f"the reader's keys differ: {State.fromkeys(everything.keys.tolist()).difference(state)}")
    keys = np.array(sorted(state), dtype=np.uint64)
    names = list(next(iter(state.values())).columns)
    rows = reader.rows(keys, names).to_pylist()
    pk = reader.manifest.primary_key
    for key, row in zip(keys.tolist(), rows):
        want = state[key]
        if (row[pk], {n: row[n] for n in names}) != (want.pk, want.columns):
            _fail("I5", f"key {key}: the reader gives {row}, expected {want.pk!r} {want.columns}")
        hits = reader.search(want.vector, k=3, exact=True)
        if key not in hits.keys.tolist() or float(hits.distances.min()) > 1e-5:
            _fail("I5", f"key {key} ({want.pk!r}) is not found by its own vector")
    config = TextConfig.from_dict(reader.manifest.text)
    if config is not None:  # the full-text side answers exactly the live units that have text (I2)
        keys = pa.array(list(state), pa.uint64())
        table = pa.Table.from_pylist([entry.columns for entry in state.values()]).append_column(KEY, keys)
        if set(reader.text_keys().tolist()) != _keys_with_text(table, config):
            _fail("I5", "the reader's full-text index does not hold exactly the served units that have text")


# -- I6 ----------------------------------------------------------------------------------------------
def check_identity(root: Path, identity: IndexIdentity) -> None:
    """The manifest declares ``identity``, and each snapshot's usearch header agrees with it."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest.identity != identity:
        _fail("I6", f"{root}: the manifest declares {manifest.identity}, expected {identity}")
    for entry in (manifest.snapshot, manifest.previous_snapshot):
        if entry is not None:
            try:
                snapshot.check_snapshot(Path(root), entry, identity)
            except CorruptFileError as error:
                _fail("I6", f"{root}: snapshot {entry.seq}: {error}")


# -- I7 ----------------------------------------------------------------------------------------------
def check_bounded_files(root: Path) -> set[str]:
    """The manifest, the published snapshot and at most one previous, the segments after the oldest
    of them, the writer's lock: nothing else. Returns the files found."""
    root = Path(root)
    manifest = read_manifest(root)
    wanted = {MANIFEST_NAME}
    for entry in (manifest.snapshot, manifest.previous_snapshot):
        if entry is not None:
            wanted |= {f"{entry.dir}/{name}" for name in entry.files}
            if entry.text is not None:  # tantivy's own lock files: empty, kept so a reader need not create them
                wanted |= {f"{entry.dir}/{snapshot.TEXT_DIR}/{name}" for name in snapshot.TANTIVY_LOCKS}
    # Segments are kept after the previous snapshot (the fallback replays them), or all of them
    # while there is none (the fallback is the empty index), unless keep_previous: false dropped them.
    kept_after = manifest.previous_snapshot.seq if manifest.previous_snapshot else 0
    wanted |= {f"{commitlog.LOG_DIR}/{ref.name}" for ref in commitlog.list_segments(root) if ref.last > kept_after}
    found = set(published_files(root))
    if found != wanted:
        _fail("I7", f"{root}: unexpected files {sorted(found - wanted)}, missing {sorted(wanted - found)}")
    return found


# -- together ----------------------------------------------------------------------------------------
def check_at_rest(root: Path, database: Path | None = None, dataset: str | None = None) -> State:
    """Every invariant a directory at rest shows (after its writers finished): I3, I6 (against its
    own manifest), I7, and with the DuckDB file I1 and I2. Returns what the index serves."""
    root, database = Path(root), Path(database) if database is not None else None
    check_all_or_nothing(root)
    check_identity(root, read_manifest(root).identity)
    check_bounded_files(root)
    check_text_index(root)
    if database is not None:
        return check_derived_and_exact(root, database, dataset or read_manifest(root).dataset)
    return index_state(root)


def check_bucket_at_rest(url: str, scratch: Path, database: Path | None = None, dataset: str | None = None) -> State:
    """``check_at_rest`` on a copy of every object under ``url`` (an ``s3://`` index root of one
    dataset), after checking that the bucket holds exactly what its manifest names: the manifest,
    the snapshot files (with tantivy's lock files) and the segments it lists (I3, I7 on the bucket).
    Returns what the index serves."""
    import json

    from quiver.resources.index.remote import REMOTE_KEY, snapshot_files
    from quiver.resources.object_store import ObjectStore

    store = ObjectStore(url)
    scratch = Path(scratch)
    objects = {info.path for info in store.list()}
    for path in objects:
        store.download(path, scratch / path)
    if MANIFEST_NAME not in objects:
        _fail("I3", f"{url}: no {MANIFEST_NAME}")
    manifest = read_manifest(scratch)
    named = {MANIFEST_NAME}
    named |= {path for entry in (manifest.snapshot, manifest.previous_snapshot) if entry for path in snapshot_files(entry)}
    listed = json.loads((scratch / MANIFEST_NAME).read_bytes()).get(REMOTE_KEY, {}).get("segments", [])
    named |= {f"{commitlog.LOG_DIR}/{entry['name']}" for entry in listed}
    if objects != named:
        _fail("I7", f"{url}: objects no manifest names {sorted(objects - named)}, named but missing {sorted(named - objects)}")
    return check_at_rest(scratch, database, dataset)
