"""Churn: mixed adds, updates and deletes through the store and the reader (issue 3, section 4).

The workload, the model and the checks live in tests/benchmarks/churn_workload.py, shared with
``make bench-churn``. The default run drives a small plan (32 dims, 2,000 rows, 12,000 operations);
QUIVER_CHURN_FULL=1 runs the issue's figure: 1,000,000 operations on 100,000 vectors of 384 dims.
"""

from __future__ import annotations

import os

import pytest

from quiver.resources.index.identity import HnswParams
from tests.benchmarks.churn_workload import ChurnPlan, ChurnRun, full_plan, run_churn


def small_plan(seed: int, snapshot_every: int) -> ChurnPlan:
    return ChurnPlan(
        dim=32,
        initial_rows=2_000,
        operations=12_000,
        batch_ops=300,
        phase_batches=6,  # six shrink batches delete 27% of the rows: past the 20% rebuild bound
        snapshot_every=snapshot_every,
        params=HnswParams(m=16, ef_construction=64, ef_search=64),
        queries=40,
        seed=seed,
    )


def assert_churn_held(figures) -> None:
    assert figures.failures() == []
    assert figures.live_reader == figures.live_model
    # The run exercised what it claims to check.
    assert figures.readds > 0, "some adds bring back a deleted key"
    assert figures.hits_checked >= figures.queries * 10
    assert figures.file_ratios, "at least one comparison with a fresh index"
    assert 0 < figures.rebuilds < figures.snapshots, "the bound decides: some snapshots rebuild, some do not"
    assert max(figures.tombstone_percents) > 0, "some snapshots carry tombstones below the bound"


@pytest.mark.parametrize(("seed", "snapshot_every"), [(0, 3), (1, 2)])
def test_churn_keeps_search_exact_and_the_index_bounded(tmp_path, kit, seed, snapshot_every):
    run = ChurnRun(tmp_path / "churn", small_plan(seed, snapshot_every))

    figures = run.run()

    assert_churn_held(figures)
    assert figures.operations == 12_000
    # I2 after all that churn: the files on disk hold exactly the model's rows.
    live = run.workload.live
    model = kit.Model(
        {
            key: kit.Row(pk, vector, f"row-{pk}-v{version}")
            for key, pk, version, vector in zip(
                live.keys.tolist(), live.pks.tolist(), live.versions.tolist(), live.vectors
            )
        }
    )
    kit.assert_state_matches(kit.read_state(tmp_path / "churn"), model)


def test_a_snapshot_past_the_bound_rebuilds_and_one_below_does_not(tmp_path):
    plan = ChurnPlan(
        dim=16,
        initial_rows=1_000,
        operations=0,
        batch_ops=1,
        phase_batches=1,
        params=HnswParams(m=8, ef_construction=32, ef_search=32),
    )
    run = ChurnRun(tmp_path / "churn", plan)
    run.run()

    def delete_share(percent: float):
        live = run.workload.live
        run.append(run.workload.make_batch(0, 0, round(len(live) * percent / (100 + percent))))
        return run.store.take_snapshot(plan.rebuild_tombstone_percent)

    below = delete_share(15.0)  # 13% of the rows: 15% tombstones per remaining vector
    past = delete_share(10.0)  # on top of those: about 26%
    assert (below.rebuilt, round(100 * below.entry.tombstones / below.entry.vectors)) == (False, 15)
    assert (past.rebuilt, past.entry.tombstones) == (True, 0)
    assert past.entry.vectors == len(run.workload.live)


@pytest.mark.skipif(
    os.environ.get("QUIVER_CHURN_FULL") != "1",
    reason="1,000,000 operations take many minutes: set QUIVER_CHURN_FULL=1 (or run make bench-churn)",
)
def test_churn_full(tmp_path):
    figures = run_churn(tmp_path / "churn", full_plan())
    assert_churn_held(figures)
    assert figures.operations == 1_000_000
