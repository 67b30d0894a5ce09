"""The index engine against a plain Python model, under random upserts, deletes, segments,
snapshots and restarts (hypothesis stateful testing, as Chroma does).

After every step the reader must hold exactly the model's keys, serve each live row's name, and
find each live vector when searching for that vector, also after a disk error damages the
published snapshot (the reader serves the previous one plus its segments; the next snapshot
repairs it). A second test replays a random history,
then re-opens the directory in a fresh Python process, so no in-process state can hide a
persistence bug.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from quiver.resources.index import IndexReader, IndexStore, read_stats, snapshot
from quiver.resources.index.commitlog import vector_type
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.manifest import read_manifest
from quiver.resources.index.text_index import TextConfig
from tests.invariants import Entry, State, check_at_rest

REPO = Path(__file__).resolve().parents[2]
DIM = 6
PK = "id"
PARAMS = HnswParams(m=8, ef_construction=32, ef_search=32)
TEXT = TextConfig(("name",), ("name",))  # the names are identifiers: pk<pk>-seq<seq>
KEY_SPACE = 12
pks = st.integers(0, KEY_SPACE - 1)
vector_seeds = st.integers(0, 2**20)


def key_of(pk: int) -> int:
    return (pk * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & ((1 << 64) - 1)


def vector_of(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def changes_table(records: list[tuple]) -> pa.Table:
    """records: (seq, op, pk, vector or None, name or None) in the commit-log segment format."""
    flat = np.concatenate([np.zeros(DIM, np.float32) if r[3] is None else r[3] for r in records])
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(flat, pa.float32()), DIM, mask=pa.array([r[3] is None for r in records])
    )
    assert vectors.type == vector_type(DIM)
    return pa.table(
        {
            "_seq": pa.array([r[0] for r in records], pa.int64()),
            "_op": pa.array([r[1] for r in records], pa.string()),
            "_key": pa.array([key_of(r[2]) for r in records], pa.uint64()),
            PK: pa.array([r[2] for r in records], pa.int64()),
            "_vector": vectors,
            "name": pa.array([r[4] for r in records], pa.string()),
        }
    )


class Index:
    """Drives a store and keeps the model: key -> (pk, vector, name) of every appended change."""

    def __init__(self, root: Path, metric: str):
        self.root = root
        self.identity = IndexIdentity(dim=DIM, metric=metric, dtype="f32", model="fake")
        self.model: dict[int, tuple[int, np.ndarray, str]] = {}
        self.pending: list[tuple] = []
        self.last_seq = 0
        self.segments_since_snapshot = 0
        self.segments_kept_for_fallback = 0  # the run after the previous snapshot (I7 fallback)
        self.snapshot_damaged = False
        self.store = self.open_store()

    def open_store(self) -> IndexStore:
        store = IndexStore(self.root, "prop", self.identity, PARAMS, PK, text=TEXT)
        store.open()
        return store

    def upsert(self, pk: int, seed: int) -> None:
        seq = self.last_seq + len(self.pending) + 1
        self.pending.append((seq, "upsert", pk, vector_of(seed), f"pk{pk}-seq{seq}"))

    def delete(self, pk: int) -> None:
        self.pending.append((self.last_seq + len(self.pending) + 1, "delete", pk, None, None))

    def append(self) -> None:
        first, last = self.last_seq + 1, self.last_seq + len(self.pending)
        self.store.append_segment(changes_table(self.pending), first, last)
        for _seq, op, pk, vector, name in self.pending:
            if op == "delete":
                self.model.pop(key_of(pk), None)
            else:
                self.model[key_of(pk)] = (pk, vector, name)
        self.pending, self.last_seq = [], last
        self.segments_since_snapshot += 1

    def damage_snapshot(self) -> None:
        """Flip one byte of the published snapshot's index file (a disk error, not a crash)."""
        path = self.root / read_manifest(self.root).snapshot.dir / "index.usearch"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        self.snapshot_damaged = True

    def snapshot(self, rebuild_percent: float):
        if self.snapshot_damaged:  # the writer makes the previous snapshot current again first
            self.segments_since_snapshot += self.segments_kept_for_fallback
            self.segments_kept_for_fallback = 0
            self.snapshot_damaged = False
        result = self.store.take_snapshot(rebuild_tombstone_percent=rebuild_percent)
        assert (result is None) == (self.segments_since_snapshot == 0)
        if result is not None:
            assert result.entry.seq == self.last_seq
            assert result.entry.vectors == len(self.model)
            self.segments_kept_for_fallback = self.segments_since_snapshot
            self.segments_since_snapshot = 0
        return result


def check_reader(reader: IndexReader, index: Index) -> None:
    reader.refresh()
    model = index.model
    assert len(reader) == len(model)
    # Full text answers exactly the live keys (I2), and each name, an identifier, finds its row first.
    assert sorted(reader.text_keys().tolist()) == sorted(model)
    for key, (_pk, _vector, name) in list(model.items())[:5]:
        assert reader.search_text(name, 3).keys[0] == key, name
    everything = reader.search(np.ones(DIM, np.float32), k=len(model) + 3)
    assert sorted(everything.keys.tolist()) == sorted(model)
    if not model:
        return
    keys = np.array(list(model), dtype=np.uint64)
    rows = reader.rows(keys)
    assert rows.column(PK).to_pylist() == [model[int(k)][0] for k in keys]
    assert rows.column("name").to_pylist() == [model[int(k)][2] for k in keys]
    for key, (_pk, vector, _name) in model.items():
        top = reader.search(vector, k=1)
        assert abs(float(top.distances[0])) < 1e-5, "its own vector (or an identical one) comes first"
        hits = reader.search(vector, k=len(model))
        listed = hits.keys.tolist()
        assert key in listed and abs(float(hits.distances[listed.index(key)])) < 1e-5


class IndexMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="quiver-prop-"))
        self.index: Index | None = None
        self.reader: IndexReader | None = None

    @initialize(metric=st.sampled_from(["cosine", "l2", "inner_product"]))
    def create(self, metric):
        self.index = Index(self.tmp / "idx", metric)
        self.reader = IndexReader(self.index.root)

    @rule(pk=pks, seed=vector_seeds)
    def upsert(self, pk, seed):
        self.index.upsert(pk, seed)

    @rule(pk=pks)
    def delete(self, pk):
        self.index.delete(pk)

    @rule(pk=pks, data=st.data())
    def delete_a_live_key(self, pk, data):
        if self.index.model:
            live = sorted(self.index.model[k][0] for k in self.index.model)
            self.index.delete(data.draw(st.sampled_from(live)))

    @precondition(lambda self: self.index is not None and bool(self.index.pending))
    @rule()
    def append_segment(self):
        self.index.append()

    @rule(rebuild_percent=st.sampled_from([0.0, 20.0, 1e9]))
    def take_snapshot(self, rebuild_percent):
        result = self.index.snapshot(rebuild_percent)
        if result is not None and rebuild_percent == 0.0:
            assert result.entry.tombstones == 0

    @precondition(
        lambda self: self.index is not None
        and not self.index.snapshot_damaged
        and read_manifest(self.index.root).previous_snapshot is not None
    )
    @rule()
    def damage_snapshot(self):
        """A fresh reader serves the previous snapshot plus the segments after it: the same rows."""
        self.index.damage_snapshot()
        self.reader = IndexReader(self.index.root)

    @rule()
    def restart(self):
        """New objects over the same directory: nothing may live only in memory."""
        self.index.store = self.index.open_store()
        self.reader = IndexReader(self.index.root)

    @invariant()
    def reader_matches_the_model(self):
        if self.index is not None:
            check_reader(self.reader, self.index)

    @invariant()
    def files_stay_bounded(self):
        if self.index is not None:
            stats = read_stats(self.index.root)
            assert stats.last_seq == self.index.last_seq
            assert stats.segments == self.index.segments_since_snapshot
            # manifest, lock, 2 snapshots x (2 files + the text index's), the segments after each of them (I7)
            manifest = read_manifest(self.index.root)
            text_files = sum(
                len(entry.files) - 2 + len(snapshot.TANTIVY_LOCKS)
                for entry in (manifest.snapshot, manifest.previous_snapshot)
                if entry is not None
            )
            assert stats.files <= 6 + text_files + stats.segments + self.index.segments_kept_for_fallback

    @invariant()
    def the_directory_alone_holds_the_model(self):
        """Read back without the reader: I2 against the model, I3, I6 and I7 (a damaged snapshot
        breaks I3 on purpose until the next snapshot repairs it)."""
        if self.index is not None and not self.index.snapshot_damaged:
            on_disk = check_at_rest(self.index.root)
            want = State({k: Entry(pk, {"name": name}, vector) for k, (pk, vector, name) in self.index.model.items()})
            assert on_disk.difference(want) is None, on_disk.difference(want)

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


TestIndexStateMachine = IndexMachine.TestCase


# -- re-open in a fresh process --------------------------------------------------------------------

_CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
from quiver.resources.index import IndexReader, read_stats
reports = []
for root, expected in json.load(open(sys.argv[1])):
    reader = IndexReader(Path(root))
    everything = reader.search(np.ones(reader.identity.dim, np.float32), k=len(reader) + 3)
    report = {"keys": sorted(int(k) for k in everything.keys), "len": len(reader), "rows": {}, "self": {}}
    if expected:
        keys = np.array([int(k) for k in expected], dtype=np.uint64)
        rows = reader.rows(keys)
        for key, pk, name in zip(keys.tolist(), rows.column("id").to_pylist(), rows.column("name").to_pylist()):
            report["rows"][str(key)] = [pk, name]
        for key, item in expected.items():
            hits = reader.search(np.array(item["vector"], np.float32), k=len(reader))
            listed = [int(k) for k in hits.keys]
            report["self"][key] = float(hits.distances[listed.index(int(key))]) if int(key) in listed else None
    report["last_seq"] = read_stats(Path(root)).last_seq
    reports.append(report)
print(json.dumps(reports))
"""

operations = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), pks, vector_seeds),
        st.tuples(st.just("upsert"), pks, vector_seeds),
        st.tuples(st.just("delete"), pks, st.just(0)),
        st.tuples(st.just("append"), st.just(0), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0), st.sampled_from([0, 20, 10**9])),
    ),
    min_size=5,
    max_size=60,
)


def replay(root: Path, metric: str, ops: list[tuple]) -> Index:
    index = Index(root, metric)
    for op, pk, arg in ops:
        if op == "upsert":
            index.upsert(pk, arg)
        elif op == "delete":
            index.delete(pk)
        elif op == "append" and index.pending:
            index.append()
        elif op == "snapshot":
            index.snapshot(float(arg))
    if index.pending:
        index.append()
    return index


# Several histories per example share one child process (its start-up dominates the cost).
@settings(max_examples=max(3, settings.default.max_examples // 8))
@given(
    histories=st.lists(
        st.tuples(st.sampled_from(["cosine", "l2", "inner_product"]), operations), min_size=1, max_size=6
    )
)
def test_a_fresh_process_reads_back_the_model(histories):
    with tempfile.TemporaryDirectory(prefix="quiver-prop-") as tmp:
        indexes, jobs = [], []
        for number, (metric, ops) in enumerate(histories):
            index = replay(Path(tmp) / f"idx{number}", metric, ops)
            expected = {
                str(key): {"pk": pk, "name": name, "vector": vector.tolist()}
                for key, (pk, vector, name) in index.model.items()
            }
            indexes.append(index)
            jobs.append((str(index.root), expected))
        jobs_path = Path(tmp) / "jobs.json"
        jobs_path.write_text(json.dumps(jobs))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(jobs_path)],
            check=False,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        reports = json.loads(done.stdout)

    assert len(reports) == len(indexes)
    for index, (_root, expected), report in zip(indexes, jobs, reports):
        assert report["keys"] == sorted(index.model)
        assert report["len"] == len(index.model)
        assert report["last_seq"] == index.last_seq
        for key, item in expected.items():
            assert report["rows"][key] == [item["pk"], item["name"]]
            assert report["self"][key] is not None and abs(report["self"][key]) < 1e-5
