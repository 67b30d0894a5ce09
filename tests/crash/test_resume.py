"""A refresh killed halfway resumes where it stopped: the rows committed before the kill are not
embedded again (each batch is its own commit), and the rerun finishes with every invariant."""

from __future__ import annotations

import json
import signal

from tests.crash import scenario
from tests.invariants import check_at_rest

ROWS = 200  # 13 batches of scenario.BATCH_ROWS (16)


def test_a_first_build_killed_halfway_embeds_only_the_rest_when_run_again(tmp_path):
    source = scenario.Source(seed=7, rows=ROWS)
    source.write(tmp_path)
    killed = scenario.run_writer("refresh", tmp_path, kill_at="refresh.between_batches@6")
    assert killed.returncode == -signal.SIGKILL, f"the refresh never reached its 6th batch: {killed.stderr[-2000:]}"
    committed = {entry.pk for entry in scenario.duckdb_state(tmp_path).values()}
    assert len(committed) == 6 * scenario.BATCH_ROWS, "six batches, each committed whole"

    rerun = scenario.run_writer("refresh", tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report == {"unchanged": len(committed), "embedded": ROWS - len(committed)}, "nothing embedded twice"

    scenario.assert_index_equals_source(tmp_path, source)  # I1, I2 and no stale chunk
    scenario.take_snapshot(tmp_path)
    check_at_rest(scenario.index_root(tmp_path), scenario.database_path(tmp_path), scenario.DATASET)


def test_a_refresh_killed_between_batches_of_a_change_loses_nothing(tmp_path):
    source = scenario.prepare(tmp_path, seed=3)
    for _ in range(3):  # enough changed rows for several batches
        source.step()
    source.write(tmp_path)
    killed = scenario.run_writer("refresh", tmp_path, kill_at="refresh.between_batches")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = scenario.run_writer("refresh", tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["unchanged"] > 0
    scenario.assert_index_equals_source(tmp_path, source)
