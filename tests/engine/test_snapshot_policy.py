"""The snapshot decision: every condition at its boundary, every combination, and the rebuild outlook."""

from __future__ import annotations

import itertools

import pytest

from quiver.resources.index.snapshot_policy import (
    AT_FOLD,
    INCREMENTAL,
    REBUILD,
    SnapshotPolicy,
    decide,
    rebuild_outlook,
)
from quiver.resources.index.store import LogStats

POLICY = SnapshotPolicy(interval_seconds=600, min_delta_commitlogs=3, min_delta_size_percent=5, on_startup=False)


def stats(age=600.0, segments=3, segment_bytes=5_000, snapshot_bytes=100_000, vectors=1_000, tombstones=0, records=10):
    return LogStats(
        snapshot_seq=100,
        snapshot_bytes=snapshot_bytes,
        snapshot_vectors=vectors,
        snapshot_tombstones=tombstones,
        snapshot_age_seconds=age,
        segments=segments,
        segment_bytes=segment_bytes,
        segment_records=records,
        last_seq=100 + (records or 0),
        files=4 + segments,
    )


def test_all_conditions_met_exactly_at_their_bounds():
    decision = decide(stats(), POLICY)
    assert decision.due, decision.reason
    assert decision.reason.startswith("3 segments, 5000 bytes (5.0% of snapshot size) after snapshot seq 100")


@pytest.mark.parametrize(
    ("changed", "unmet"),
    [
        ({"age": 599.5}, "600s since the snapshot < 600s"),
        ({"segments": 2}, "2 segments < 3"),
        ({"segment_bytes": 4_999}, "4.9% of snapshot size < 5%"),  # rounded down, never shown as the bound
    ],
)
def test_each_condition_just_below_its_bound_is_named(changed, unmet):
    decision = decide(stats(**changed), POLICY)
    assert not decision.due
    assert decision.reason.endswith("not due: " + unmet)


@pytest.mark.parametrize("misses", list(itertools.product([False, True], repeat=3)))
def test_every_combination_is_due_only_when_no_condition_is_missed(misses):
    age_short, few_segments, small = misses
    decision = decide(
        stats(
            age=10.0 if age_short else 10_000.0,
            segments=1 if few_segments else 4,
            segment_bytes=100 if small else 50_000,
        ),
        POLICY,
    )
    assert decision.due == (not any(misses))
    named = [
        "since the snapshot <" in decision.reason,
        "segments < 3" in decision.reason,
        "of snapshot size < 5%" in decision.reason,
    ]
    assert named == list(misses)


def test_disabled_is_never_due_even_on_startup():
    policy = SnapshotPolicy(enabled=False, on_startup=True)
    decision = decide(stats(age=1e9, segments=100, segment_bytes=10**9), policy, first_evaluation=True)
    assert not decision.due and "snapshots.enabled: false" in decision.reason


def test_nothing_to_fold_is_never_due_even_on_startup():
    decision = decide(
        stats(segments=0, segment_bytes=0, records=0), SnapshotPolicy(on_startup=True), first_evaluation=True
    )
    assert not decision.due and decision.reason == "no segments after snapshot seq 100: nothing to fold"


def test_on_startup_ignores_the_thresholds_on_the_first_evaluation_only():
    policy = SnapshotPolicy(interval_seconds=600, min_delta_commitlogs=3, min_delta_size_percent=5, on_startup=True)
    young = stats(age=1.0, segments=1, segment_bytes=10)
    first = decide(young, policy, first_evaluation=True)
    assert first.due and first.reason.startswith("on startup: 1 segments")
    assert not decide(young, policy, first_evaluation=False).due
    assert not decide(young, POLICY, first_evaluation=True).due  # on_startup: false


def test_an_index_without_a_snapshot_is_due_once_enough_segments_exist():
    no_snapshot = {"age": None, "snapshot_bytes": 0, "vectors": 0, "segment_bytes": 10}
    decision = decide(stats(segments=3, **no_snapshot), POLICY)
    assert decision.due and "(no snapshot yet)" in decision.reason
    assert decision.outlook == INCREMENTAL
    assert decide(stats(segments=2, **no_snapshot), POLICY).reason.endswith("not due: 2 segments < 3")


def test_zero_thresholds_mean_any_segment_is_enough():
    policy = SnapshotPolicy(interval_seconds=0, min_delta_commitlogs=0, min_delta_size_percent=0, on_startup=False)
    assert decide(stats(age=0.0, segments=1, segment_bytes=1), policy).due


@pytest.mark.parametrize(
    ("vectors", "tombstones", "records", "outlook"),
    [
        (1_000, 0, 100, INCREMENTAL),  # at most 100 / 900 = 11.1%
        (1_000, 0, 166, INCREMENTAL),  # 166 / 834 = 19.9%: below the bound whatever the records do
        (1_000, 0, 167, AT_FOLD),  # 167 / 833 = 20.05%: only the fold can tell
        (1_000, 210, 0, REBUILD),  # already above the bound; folding can only add tombstones
        (1_000, 250, 200, REBUILD),  # at least 250 / 1200 = 20.8%
        (1_000, 230, 200, AT_FOLD),  # 230 / 1200 = 19.2% .. 430 / 800
        (0, 0, 50, INCREMENTAL),  # the first snapshot has no tombstones
    ],
)
def test_rebuild_outlook_bounds(vectors, tombstones, records, outlook):
    got, words = rebuild_outlook(stats(vectors=vectors, tombstones=tombstones, records=records), 20.0)
    assert got == outlook, words
    assert "rebuild above 20%" in words


def test_an_unreadable_footer_leaves_the_outlook_to_the_fold():
    got, words = rebuild_outlook(stats(records=None), 20.0)
    assert got == AT_FOLD and "footer is unreadable" in words
