"""The crash matrix: SIGKILL the real writers at every named point, then prove the invariants.

Each trial builds a seeded history (two snapshots, so a previous one exists, and a segment after
the current one), opens a reader, then runs one writer in a subprocess that kills itself at the
point (``QUIVER_KILL_AT``; resources/faults.py names the points). Then:

- the reader that was serving before the kill still serves exactly what it served (I5), and after
  a refresh it serves a published state, never an older one;
- a fresh process opens the directory and runs the next refresh and snapshot; afterwards no temp
  file remains, no published file was rewritten (I3, I4), the directory holds exactly what the
  manifest and its fallback need (I7), DuckDB holds every change of the source, and the index
  equals DuckDB: same keys, vectors and served columns (I1, I2).

``QUIVER_CRASH_TRIALS`` sets the trials per point (default 3; ``make test-slow`` runs more).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from quiver.resources.faults import POINTS, REFRESH_POINTS
from quiver.resources.index import IndexReader
from quiver.resources.index.manifest import read_manifest
from tests.crash import scenario
from tests.invariants import (
    check_at_rest,
    check_never_rewritten,
    check_reader_serves,
    index_state,
    published_files,
)

TRIALS = int(os.environ.get("QUIVER_CRASH_TRIALS", "3"))


def queries(seed: int) -> np.ndarray:
    return scenario.embed([f"query {seed} {i}" for i in range(5)])


def answers(reader: IndexReader, vectors: np.ndarray) -> list[tuple[list[int], list[float]]]:
    out = []
    for vector in vectors:
        hits = reader.search(vector, k=10)
        out.append((hits.keys.tolist(), np.round(hits.distances, 6).tolist()))
    return out


@pytest.mark.parametrize("seed", range(TRIALS))
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_point_then_recover(tmp_path, point, seed):
    source = scenario.prepare(tmp_path, seed)
    root = scenario.index_root(tmp_path)
    reader = IndexReader(root)
    probe = queries(seed)
    served_seq, served_answers = reader.served_seq, answers(reader, probe)
    published = published_files(root)

    command = "refresh" if point in REFRESH_POINTS else "snapshot"
    if command == "refresh":
        source.step()
        source.write(tmp_path)
    killed = scenario.run_writer(command, tmp_path, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, f"the writer never reached {point}: {killed.stderr[-2000:]}"

    # A reader serving before the kill keeps serving; a refresh moves it to a published state.
    assert reader.served_seq == served_seq and answers(reader, probe) == served_answers
    reader.refresh()
    assert reader.served_seq >= served_seq
    check_reader_serves(reader, index_state(root))

    # The next runs, each in a fresh process, finish the work.
    for step in ("refresh", "snapshot"):
        done = scenario.run_writer(step, tmp_path)
        assert done.returncode == 0, f"{step} after a kill at {point} failed: {done.stderr[-2000:]}"

    check_never_rewritten(published, root)
    committed = scenario.assert_index_equals_source(tmp_path, source)  # I1, I2
    check_at_rest(root, scenario.database_path(tmp_path), scenario.DATASET)  # I3, I6, I7 too
    reader.refresh()
    assert reader.served_seq == read_manifest(root).snapshot_seq and reader.problems == ()
    check_reader_serves(reader, committed)


def test_every_point_is_in_the_matrix():
    assert len(set(POINTS)) == len(POINTS) >= 13
