"""Readers during writes (I5): a reader process queries without pause while a writer process
refreshes and snapshots in a loop. Zero failed queries, no DuckDB in the reader, every answer
drawn from a state the writer committed and published, and the served state only moves forward.

``QUIVER_READERS_SECONDS`` sets how long the writer works (default 60).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np

from tests.crash import scenario
from tests.crash.reader_loop import QUERIES

SECONDS = float(os.environ.get("QUIVER_READERS_SECONDS", "60"))


def exact_top(state: np.lib.npyio.NpzFile, query: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    distances = 1.0 - state["vectors"] @ query  # cosine on unit vectors
    order = np.argsort(distances, kind="stable")[:k]
    return state["keys"][order].tolist(), distances[order]


def test_a_reader_keeps_answering_from_published_states_while_a_writer_loops(tmp_path):
    scenario.prepare(tmp_path, seed=11)
    root = scenario.index_root(tmp_path)
    writer = subprocess.Popen(
        scenario.writer_command("loop", tmp_path, str(SECONDS)),
        cwd=scenario.REPO,
        env=scenario.writer_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = subprocess.run(
        [*scenario.writer_command("loop", tmp_path)[:2], "tests.crash.reader_loop", str(root), str(tmp_path)],
        cwd=scenario.REPO,
        env=scenario.writer_env(),
        capture_output=True,
        text=True,
        timeout=SECONDS + 600,
        check=False,
    )
    _, writer_errors = writer.communicate(timeout=600)
    assert writer.returncode == 0, writer_errors[-3000:]
    assert reader.returncode == 0, reader.stderr[-3000:]
    report = json.loads((tmp_path / "reader.json").read_text())
    rounds = int((tmp_path / "writer.done").read_text())

    assert report["failure_count"] == 0, report["failures"]
    assert not report["imported_duckdb"], "the reader must never open the DuckDB file"
    assert rounds >= 10 and report["queries"] >= 1000, (rounds, report["queries"])
    seqs = report["seqs"]
    assert seqs == sorted(seqs) and len(seqs) >= rounds // 2, "the served state moves forward, and it moves"

    states = {int(path.stem): np.load(path) for path in (tmp_path / "states").glob("*.npz")}
    for tag, keys in report["answers"].items():
        seq, i, exact = (int(part) for part in tag.split(":"))
        assert seq in states, f"served seq {seq} was never a committed state"
        live = set(states[seq]["keys"].tolist())
        assert set(keys) <= live, f"seq {seq}: answered keys that were not live then: {set(keys) - live}"
        assert len(keys) == min(10, len(live))
        if exact:
            want, distances = exact_top(states[seq], QUERIES[i], 10)
            tie_free = set(want[:-1]) if np.isclose(distances[-1], distances[-2]) else set(want)
            assert tie_free <= set(keys), f"seq {seq}, query {i}: exact answer differs from the committed state"
    print(
        f"\nreader during writes: {report['queries']} queries in {report['seconds']:.0f} s, "
        f"{report['failure_count']} failed, {len(seqs)} states served, writer rounds {rounds}"
    )
