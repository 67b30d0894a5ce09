"""The fan-out refresh (``embed_fanout``): parts cover the plan, committed parts equal the
single-step refresh, a plan commits once, a missing part is refused, a row changed since the plan
is not committed with its stale vector. Text is embedded by the crash tests' hash embedder and
their small-window chunker, so long rows span several chunks."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from quiver.resources import warehouse
from quiver.resources.embed_fanout import (
    PLAN_FILE,
    StagingError,
    commit_parts,
    embed_part,
    input_path,
    plan_parts,
    remove_old_plans,
    staged_commits,
    vectors_path,
)
from quiver.resources.embed_refresh import refresh_embeddings
from quiver.resources.embedding.chunking import ChunkSettings
from tests.crash import scenario
from tests.crash.scenario import DATASET, LAYOUT, MODEL, PK, HashModel, Source
from tests.invariants import check_one_truth

COMPARED = f"SELECT * EXCLUDE (_key, _seq) FROM {DATASET}_embeddings ORDER BY {PK}, _chunk"


def connect_to(work: Path):
    return lambda: scenario.writer_connection(work)


def load(work: Path, source: Source) -> None:
    source.write(work)
    with scenario.writer_connection(work) as conn:
        warehouse.load_source(conn, LAYOUT, [str(scenario.source_path(work))])


def fanout(work: Path, parts: int, **options):
    """plan -> every part embedded (as the workers would, in any order) -> commit."""
    staging = work / "staging"
    staged = plan_parts(connect_to(work), LAYOUT, MODEL, staging, parts, **options)
    for part in reversed(staged.parts):
        embed_part(staging, DATASET, staged.plan_id, part, HashModel, ChunkSettings(), LAYOUT, MODEL)
    result = commit_parts(connect_to(work), LAYOUT, staging, staged.plan_id) if staged.parts else None
    return staged, result


def single_step(work: Path):
    return refresh_embeddings(connect_to(work), LAYOUT, MODEL, HashModel, ChunkSettings(), batch_rows=16)


def rows_of(work: Path, sql: str = COMPARED) -> list[tuple]:
    with duckdb.connect(str(scenario.database_path(work)), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def change_count(work: Path) -> int:
    return rows_of(work, f"SELECT count(*) FROM {DATASET}_changes")[0][0]


@pytest.mark.parametrize(("parts", "part_rows", "expected"), [(1, 10_000, 1), (3, 10_000, 3), (2, 25, 4), (500, 10_000, 90)])
def test_the_parts_cover_exactly_the_plan_in_table_order(tmp_path, parts, part_rows, expected):
    load(tmp_path, Source(seed=1, rows=90))
    staged = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, tmp_path / "staging", parts, part_rows=part_rows)
    assert staged.parts == tuple(range(expected))
    inputs = [pq.read_table(input_path(staged.directory, part)) for part in staged.parts]
    keys = [pk for table in inputs for pk in table.column(PK).to_pylist()]
    assert keys == staged.plan.to_embed.column(PK).to_pylist(), "every planned row once, in order, no other"
    assert max(t.num_rows for t in inputs) - min(t.num_rows for t in inputs) <= 1, "parts of even size"
    assert {warehouse.TEXT, warehouse.CONTENT_HASH, warehouse.ROWID, "name"} <= set(inputs[0].column_names)
    assert (staged.directory / PLAN_FILE).exists()
    assert not list(staged.directory.rglob(".tmp-*")), "no temp file left"


def test_an_empty_plan_stages_nothing(tmp_path):
    source = Source(seed=2, rows=20)
    load(tmp_path, source)
    fanout(tmp_path, 2)
    staged, result = fanout(tmp_path, 2)
    assert staged.parts == () and result is None
    assert not staged.directory.exists()


@pytest.mark.parametrize("parts", [1, 2, 5])
def test_committed_parts_equal_the_single_step_refresh(tmp_path, parts):
    """The same source history through both paths: the same rows, chunks, vectors and hashes."""
    single, fanned = tmp_path / "single", tmp_path / "fanned"
    single.mkdir(), fanned.mkdir()
    sources = [Source(seed=11, rows=80), Source(seed=11, rows=80)]
    for round_ in range(3):  # a first build, then changes: inserts, edits, renames, deletes
        for source in sources:
            if round_:
                source.step()
        load(single, sources[0])
        load(fanned, sources[1])
        single_step(single)
        staged, result = fanout(fanned, parts)
        assert result.parts == len(staged.parts) == parts
        if round_:
            assert result.plan.deleted.num_rows and result.plan.changed, "the round changed and deleted rows"
        assert rows_of(single) == rows_of(fanned)
        assert not staged.directory.exists(), "the staging directory is removed once committed"
    check_one_truth(scenario.database_path(fanned), DATASET)
    embedded = {row[0] for row in rows_of(fanned, f"SELECT {PK} FROM {DATASET}_embeddings")}
    assert embedded == set(sources[1].rows)


def test_a_plan_committed_twice_is_committed_once(tmp_path):
    load(tmp_path, Source(seed=3, rows=60))
    staging = tmp_path / "staging"
    staged = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, staging, 3)
    for part in staged.parts:
        embed_part(staging, DATASET, staged.plan_id, part, HashModel, ChunkSettings(), LAYOUT, MODEL)
    kept = tmp_path / "kept"
    shutil.copytree(staged.directory, kept)  # as if the commit died after its last part, before cleanup
    first = commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id)
    changes, state = change_count(tmp_path), rows_of(tmp_path)
    assert first.parts_committed == 3 and changes == first.committed.last_seq

    shutil.copytree(kept, staged.directory)
    again = commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id)
    assert (again.parts_committed, again.parts_already_committed, again.committed) == (0, 3, None)
    assert not staged.directory.exists()
    once_more = commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id)  # directory gone too
    assert (once_more.parts_already_committed, once_more.committed) == (3, None)
    assert (change_count(tmp_path), rows_of(tmp_path)) == (changes, state), "no change record twice"
    with scenario.writer_connection(tmp_path) as conn:
        assert staged_commits(conn, LAYOUT) == [(staged.plan_id, part) for part in range(3)]

    # a retried worker whose vectors file exists does nothing
    shutil.copytree(kept, staged.directory)
    before = vectors_path(staged.directory, 1).read_bytes()
    retried = embed_part(staging, DATASET, staged.plan_id, 1, HashModel, ChunkSettings(), LAYOUT, MODEL)
    assert retried.skipped and vectors_path(staged.directory, 1).read_bytes() == before


def test_a_part_without_its_vectors_is_refused_with_the_part_and_the_fix(tmp_path):
    load(tmp_path, Source(seed=4, rows=40))
    staging = tmp_path / "staging"
    staged = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, staging, 3)
    embed_part(staging, DATASET, staged.plan_id, 0, HashModel, ChunkSettings(), LAYOUT, MODEL)
    with pytest.raises(StagingError) as refused:
        commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id)
    message = str(refused.value)
    assert f"plan {staged.plan_id}: parts 1, 2 have no embedded vectors" in message
    assert "vectors-1.parquet is missing" in message and "nothing was committed" in message
    assert "re-execute the run from its failure" in message
    with scenario.writer_connection(tmp_path) as conn:
        assert warehouse.last_seq(conn, LAYOUT) == 0 and staged_commits(conn, LAYOUT) == []

    for part in (1, 2):  # the fix: embed them, commit again
        embed_part(staging, DATASET, staged.plan_id, part, HashModel, ChunkSettings(), LAYOUT, MODEL)
    assert commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id).parts_committed == 3


def test_a_row_changed_after_the_plan_is_not_committed_with_its_stale_vector(tmp_path):
    source = Source(seed=5, rows=40)
    load(tmp_path, source)
    fanout(tmp_path, 2)
    before = {row[0]: row[1:] for row in rows_of(tmp_path, f"SELECT {PK}, _content_hash, _vector FROM {DATASET}_embeddings WHERE _chunk = 0")}
    source.change(inserts=3, edits=6)
    load(tmp_path, source)
    staging = tmp_path / "staging"
    staged = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, staging, 2)
    planned = staged.plan.to_embed.column(PK).to_pylist()
    for part in staged.parts:
        embed_part(staging, DATASET, staged.plan_id, part, HashModel, ChunkSettings(), LAYOUT, MODEL)
    edited_again, new_row = planned[0], planned[-1]  # an edited row, and a new one
    assert edited_again in before and new_row not in before
    source.rows[edited_again] = (source.rows[edited_again][0], "edited after the plan")
    source.rows[new_row] = (source.rows[new_row][0], "born, then edited after the plan")
    load(tmp_path, source)  # the rows asset of another run, between this plan and its commit

    result = commit_parts(connect_to(tmp_path), LAYOUT, staging, staged.plan_id)
    assert result.rows_stale == 2
    after = {row[0]: row[1:] for row in rows_of(tmp_path, f"SELECT {PK}, _content_hash, _vector FROM {DATASET}_embeddings WHERE _chunk = 0")}
    assert after[edited_again] == before[edited_again], "kept its committed vector, not the stale staged one"
    assert new_row not in after
    check_one_truth(scenario.database_path(tmp_path), DATASET)

    staged, _ = fanout(tmp_path, 2)  # the next refresh embeds them
    assert sorted(staged.plan.to_embed.column(PK).to_pylist()) == sorted([edited_again, new_row])
    state = scenario.duckdb_state(tmp_path)
    assert {e.pk: e.columns["name"] for e in state.values()} == {pk: row[0] for pk, row in source.rows.items()}
    for entry in state.values():
        text = source.rows[entry.pk][1][entry.columns["_chunk_start"] : entry.columns["_chunk_end"]]
        np.testing.assert_array_equal(entry.vector, scenario.embed([text])[0])


def test_plans_left_behind_are_removed_after_a_day(tmp_path):
    load(tmp_path, Source(seed=6, rows=20))
    staging = tmp_path / "staging"
    old = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, staging, 2)
    assert remove_old_plans(staging / DATASET) == []
    newer = plan_parts(connect_to(tmp_path), LAYOUT, MODEL, staging, 2, now=old.directory.stat().st_mtime + 2 * 86400)
    assert not old.directory.exists() and newer.directory.exists()
