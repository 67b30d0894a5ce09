"""The fan-out refresh killed at its named points (``fanout.*``, resources/faults.py): each step runs
in a process of its own (tests/crash/fanout_writer.py) that SIGKILLs itself there. Afterwards
nothing is half committed (a part is in DuckDB with its change records and its ledger row, or not at
all: I1 holds after every kill), and rerunning, as Dagster's re-execution does (the same plan) or as
a fresh run does (a new plan), finishes: DuckDB holds the source, the index equals DuckDB (I2) and
every invariant holds at rest. A part is never committed twice."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import duckdb

from quiver.resources.embed_fanout import PLAN_FILE, vectors_path
from quiver.resources.faults import FANOUT_POINTS
from tests.crash import fanout_writer as steps
from tests.crash import scenario
from tests.invariants import check_at_rest, check_one_truth

SEED = 5


def changed_world(work):
    """The crash world after a few single-step refreshes and snapshots, its source changed since."""
    source = scenario.prepare(work, SEED)
    for _ in range(2):
        source.step()
    source.write(work)
    return source


def ok(done) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def killed(done) -> None:
    assert done.returncode == -signal.SIGKILL, f"not killed ({done.returncode}): {done.stderr[-3000:]}"


def ledger(work) -> list[tuple[str, int]]:
    with duckdb.connect(str(scenario.database_path(work)), read_only=True) as conn:
        tables = {row[0] for row in conn.execute("SHOW TABLES").fetchall()}
        if f"{scenario.DATASET}_staged_commits" not in tables:
            return []
        return conn.execute(f"SELECT plan_id, part FROM {scenario.DATASET}_staged_commits ORDER BY part").fetchall()


def embedded_table(work) -> list[tuple]:
    with duckdb.connect(str(scenario.database_path(work)), read_only=True) as conn:
        return conn.execute(
            f"SELECT * EXCLUDE (_key, _seq) FROM {scenario.DATASET}_embeddings ORDER BY {scenario.PK}, _chunk"
        ).fetchall()


def changes(work) -> int:
    with duckdb.connect(str(scenario.database_path(work)), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {scenario.DATASET}_changes").fetchone()[0]


def finish_and_check(work, source) -> None:
    """The index asset, a snapshot, then every invariant and the source in DuckDB and the index."""
    ok(steps.run("index", work))
    scenario.assert_index_equals_source(work, source)
    scenario.take_snapshot(work)
    check_at_rest(scenario.index_root(work), scenario.database_path(work), scenario.DATASET)


def test_a_commit_killed_between_parts_finishes_when_re_executed_and_commits_each_part_once(tmp_path):
    control, work = tmp_path / "control", tmp_path / "work"
    control.mkdir(), work.mkdir()
    for world in (control, work):
        source = changed_world(world)
        ok(steps.run("plan", world))
        ok(steps.run("embed", world))
    ok(steps.run("commit", control))  # the same plan, never killed

    killed(steps.run("commit", work, kill_at="fanout.mid_commit"))
    plan_id = steps.plan_id(work)
    assert ledger(work) == [(plan_id, 0)], "part 0 whole, the others not at all"
    check_one_truth(scenario.database_path(work), scenario.DATASET)
    assert json.loads(ok(steps.run("commit", work))) == {"committed": 2, "already": 1, "stale": 0}
    assert ledger(work) == [(plan_id, part) for part in range(3)]
    assert (changes(work), embedded_table(work)) == (changes(control), embedded_table(control)), "nothing twice"
    assert not (steps.staging(work) / scenario.DATASET / plan_id).exists()
    finish_and_check(work, source)


def test_a_part_killed_inside_its_transaction_leaves_nothing_of_it(tmp_path):
    source = changed_world(tmp_path)
    ok(steps.run("plan", tmp_path))
    ok(steps.run("embed", tmp_path))
    before = (changes(tmp_path), embedded_table(tmp_path))
    killed(steps.run("commit", tmp_path, kill_at="fanout.in_transaction"))
    assert ledger(tmp_path) == [] and (changes(tmp_path), embedded_table(tmp_path)) == before
    assert json.loads(ok(steps.run("commit", tmp_path)))["committed"] == 3
    finish_and_check(tmp_path, source)


def test_a_worker_killed_after_its_part_is_refused_until_the_rest_is_embedded(tmp_path):
    source = changed_world(tmp_path)
    ok(steps.run("plan", tmp_path))
    directory = steps.staging(tmp_path) / scenario.DATASET / steps.plan_id(tmp_path)
    killed(steps.run("embed", tmp_path, kill_at="fanout.part_written@2"))  # parts 0 and 1 written, 2 not
    written = {part: vectors_path(directory, part).read_bytes() for part in (0, 1)}
    assert not vectors_path(directory, 2).exists()

    refused = steps.run("commit", tmp_path)
    assert refused.returncode == 1 and "part 2 has no embedded vectors" in refused.stderr, refused.stderr[-2000:]
    assert "nothing was committed" in refused.stderr and ledger(tmp_path) == []

    ok(steps.run("embed", tmp_path))  # the retried step: parts 0 and 1 are kept as they are
    assert {part: vectors_path(directory, part).read_bytes() for part in (0, 1)} == written
    assert json.loads(ok(steps.run("commit", tmp_path)))["committed"] == 3
    finish_and_check(tmp_path, source)


def test_a_commit_killed_before_its_cleanup_commits_nothing_more_when_run_again(tmp_path):
    source = changed_world(tmp_path)
    ok(steps.run("plan", tmp_path))
    ok(steps.run("embed", tmp_path))
    killed(steps.run("commit", tmp_path, kill_at="fanout.before_cleanup"))
    done = (changes(tmp_path), embedded_table(tmp_path))
    assert len(ledger(tmp_path)) == 3
    assert json.loads(ok(steps.run("commit", tmp_path))) == {"committed": 0, "already": 3, "stale": 0}
    assert (changes(tmp_path), embedded_table(tmp_path)) == done
    finish_and_check(tmp_path, source)


def test_killed_plans_and_commits_are_finished_by_a_fresh_run(tmp_path):
    """A run that is not re-executed: the next run plans again and embeds only what is left."""
    source = changed_world(tmp_path)
    killed(steps.run("plan", tmp_path, kill_at="fanout.plan_written"))
    abandoned = [d for d in (steps.staging(tmp_path) / scenario.DATASET).iterdir()]
    assert len(abandoned) == 1 and not (abandoned[0] / PLAN_FILE).exists(), "a plan is whole only with its plan.json"

    ok(steps.run("plan", tmp_path))
    ok(steps.run("embed", tmp_path))
    killed(steps.run("commit", tmp_path, kill_at="fanout.mid_commit"))
    check_one_truth(scenario.database_path(tmp_path), scenario.DATASET)

    first_plan = steps.plan_id(tmp_path)
    ok(steps.run("plan", tmp_path))
    assert steps.plan_id(tmp_path) != first_plan
    ok(steps.run("embed", tmp_path))
    ok(steps.run("commit", tmp_path))
    finish_and_check(tmp_path, source)
    assert abandoned[0].exists(), "left for the cleanup of plans older than a day"


def test_every_fanout_point_is_killed_at_here():
    used = set(re.findall(r'kill_at="(fanout\.[a-z_]+)', Path(__file__).read_text()))
    assert used == set(FANOUT_POINTS)
