"""Incremental refresh end to end through Dagster with the real model: exact counts, index state.

Every refresh asserts the embeddings asset's counts to the row (embedded == new + changed) and that
the index (snapshot + the segments after it) equals the embedded table (I2).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, Failure, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import DUCKDB_FILE, build_resources
from quiver.resources import warehouse
from quiver.resources.embedding import resolve_model_path
from quiver.resources.index.commitlog import list_segments
from quiver.resources.index.manifest import read_manifest
from quiver.resources.spec import load_spec
from quiver.resources.warehouse import layout_for
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import metadata_of
from tests.invariants import check_derived_and_exact, table_state

DS = "pkgs"
ROWS, EMBEDDINGS, INDEX, SNAPSHOT = (AssetKey([DS, stage]) for stage in ("rows", "embeddings", "index", "snapshot"))


class Project:
    """One dataset in tmp_path (source, spec, home), materialized through Dagster."""

    def __init__(self, tmp_path, monkeypatch, source, **entry):
        self.source, self.home = source, tmp_path / "home"
        self.spec_path = tmp_path / "datasets.yaml"
        self.entry = dataset_entry(DS, source, **entry)
        write_spec(self.spec_path, [self.entry])
        self.last_result = None
        monkeypatch.setenv("QUIVER_DATASETS", str(self.spec_path))
        monkeypatch.setenv("QUIVER_HOME", str(self.home))

    def set_spec(self, **changes) -> None:
        self.entry.update(changes)
        write_spec(self.spec_path, [self.entry])

    def materialize(self, selection=None, run_config=None):
        spec = load_spec(self.spec_path)
        return materialize(
            dataset_assets(spec.get(DS)),
            selection=selection,
            run_config=run_config,
            resources=build_resources(spec, self.home),
            instance=DagsterInstance.ephemeral(),
        )

    def refresh(self, **expected) -> dict:
        """The whole chain; checks the embeddings counts named in ``expected`` and index == table."""
        result = self.materialize()
        meta = metadata_of(result, [DS, "embeddings"])
        assert {name: meta[f"rows_{name}"] for name in expected} == expected
        assert meta["rows_embedded"] == meta["rows_new"] + meta["rows_changed"]
        assert meta["dagster/row_count"] == len(self.table())
        self.assert_index_is_table()
        self.last_result = result
        return meta

    def table(self):
        return table_state(self.home / DUCKDB_FILE, DS)

    def assert_index_is_table(self) -> None:
        check_derived_and_exact(self.home / DS, self.home / DUCKDB_FILE, DS)

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        conn = duckdb.connect(str(self.home / DUCKDB_FILE), read_only=True)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def read(self, reader):
        """``reader(conn, layout)`` on a read-only connection: a warehouse function as an asset calls it."""
        conn = duckdb.connect(str(self.home / DUCKDB_FILE), read_only=True)
        try:
            return reader(conn, layout_for(load_spec(self.spec_path).get(DS)))
        finally:
            conn.close()

    def keys(self) -> dict:
        """primary key -> usearch key of every embedded row."""
        return dict(self.sql(f'SELECT pkg_id, _key FROM "{DS}_embeddings"'))


@pytest.fixture()
def small(sample_table) -> pa.Table:
    return sample_table.slice(0, 40)


@pytest.fixture()
def project(tmp_path, monkeypatch, small) -> Project:
    source = tmp_path / "src.parquet"
    pq.write_table(small, source)
    return Project(tmp_path, monkeypatch, source)


def edit_text(table: pa.Table, ids: list, suffix: str = " (revised)") -> pa.Table:
    texts = [
        f"{text}{suffix}" if pk in ids else text
        for pk, text in zip(table.column("pkg_id").to_pylist(), table.column("short_description").to_pylist())
    ]
    index = table.schema.get_field_index("short_description")
    return table.set_column(index, table.schema.field(index), pa.array(texts, pa.string()))  # same schema


def without(table: pa.Table, ids: list) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("pkg_id"), pa.array(ids, table.schema.field("pkg_id").type))))


# -- full rebuild --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_16d(tmp_path_factory) -> str:
    """A local model of another dimension: the packaged one plus a seeded Dense layer 384 -> 16."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    base = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "minilm-16d"
    SentenceTransformer(modules=[*base, Dense(in_features=384, out_features=16)], device="cpu").save(str(path))
    return str(path)


def test_dimension_change_fails_clearly_then_full_rebuild_replaces_everything(project, small, sample_table, model_16d):
    project.refresh(new=40, changed=0, deleted=0, embedded=40)
    keys_before, table_before = project.keys(), project.table()
    segments_before = list_segments(project.home / DS)

    # The source changes as well (3 rows leave, 4 arrive), so the rebuild's counts show both.
    ids = small.column("pkg_id").to_pylist()
    pq.write_table(pa.concat_tables([without(small, ids[:3]), sample_table.slice(40, 4)]), project.source)
    project.set_spec(embeddings={**project.entry["embeddings"], "model": model_16d})
    with pytest.raises(Failure) as failure:  # quiver's own error, as the run's failure description
        project.materialize()
    message = failure.value.description
    assert f"model {model_16d!r} gives 16-dimensional vectors" in message
    assert "holds 384-dimensional ones" in message
    assert "set `full_rebuild: true` in the run config of pkgs/embeddings" in message
    assert project.table() == table_before  # nothing embedded, nothing committed
    assert list_segments(project.home / DS) == segments_before

    # The message's own --config-json is a valid run config that asks for the rebuild.
    command = re.search(r"dg launch .* --config-json '([^']+)'", message)
    run_config = json.loads(command.group(1))
    meta = metadata_of(project.materialize(selection=[ROWS, EMBEDDINGS], run_config=run_config), [DS, "embeddings"])
    assert (meta["full_rebuild"], meta["committed"]) == (True, True)
    assert (meta["rows_new"], meta["rows_changed"], meta["rows_unchanged"], meta["rows_deleted"]) == (4, 37, 0, 3)
    assert meta["rows_embedded"] == meta["rows_new"] + meta["rows_changed"] == 41
    assert (meta["dagster/row_count"], meta["seq_first"], meta["seq_last"]) == (41, 41, 84)  # seqs keep growing
    # Replaced whole, in one transaction: 16 dims, and only the new state's change records.
    assert {len(row.vector) for row in project.table().values()} == {16}
    assert project.sql(f'SELECT count(*), min(_seq) FROM "{DS}_changes"') == [(44, 41)]
    assert project.sql(f'SELECT _seq, dim, model, rows FROM "{DS}_rebuilds"') == [(41, 16, model_16d, 41)]
    kept = project.keys()
    assert {pk: kept[pk] for pk in ids[3:]} == {pk: keys_before[pk] for pk in ids[3:]}  # usearch keys are stable

    # The index asset follows: its log predates the rebuild, so the directory is moved aside and
    # written afresh from DuckDB, and the moved directory is removed once the new log is published.
    root = project.home / DS
    assert project.read(warehouse.last_rebuild_seq) == 41
    result = project.materialize(selection=[INDEX, SNAPSHOT])
    index_meta = metadata_of(result, [DS, "index"])
    assert (index_meta["records"], index_meta["rebuilt_from_duckdb"]) == (44, True)  # 41 upserts + 3 deletes
    assert read_manifest(root).identity.dim == 16
    assert not list(root.parent.glob(f"{DS}.replaced-*"))
    project.assert_index_is_table()
    assert metadata_of(project.materialize(selection=[INDEX]), [DS, "index"])["rebuilt_from_duckdb"] is False

    # With the new model in place, refreshes are incremental again.
    meta = project.refresh(new=0, changed=0, deleted=0, embedded=0)
    assert meta["committed"] is False


def test_full_rebuild_with_the_same_model_reembeds_every_row(project, small):
    project.refresh(new=40, embedded=40)
    pq.write_table(without(small, small.column("pkg_id").to_pylist()[:2]), project.source)
    result = project.materialize(run_config={"ops": {"pkgs__embeddings": {"config": {"full_rebuild": True}}}})
    meta = metadata_of(result, [DS, "embeddings"])
    assert (meta["rows_new"], meta["rows_changed"], meta["rows_deleted"], meta["rows_embedded"]) == (0, 38, 2, 38)
    # Same identity: the index catches up by appending (an upsert per row, a delete per departed row).
    project.assert_index_is_table()
    assert len(project.table()) == 38


# -- embedded columns and their joining ----------------------------------------------------------
def test_changing_embedded_columns_or_separator_reembeds_everything(project):
    project.refresh(new=40, changed=0, embedded=40)
    vectors = {k: v.vector for k, v in project.table().items()}

    project.set_spec(embeddings={"columns": ["package", "short_description"], "separator": " -- "})
    project.refresh(new=0, changed=40, unchanged=0, deleted=0, embedded=40)
    assert not any((project.table()[k].vector == v).all() for k, v in vectors.items())

    project.set_spec(embeddings={"column": "short_description"})
    project.refresh(new=0, changed=40, unchanged=0, deleted=0, embedded=40)
    assert metadata_of(project.last_result, [DS, "index"])["records"] == 40

    project.refresh(new=0, changed=0, unchanged=40, embedded=0)  # and then nothing again


# -- append mode ---------------------------------------------------------------------------------
def test_append_mode_adds_new_keys_only(tmp_path, monkeypatch, small, sample_table):
    source = tmp_path / "src.parquet"
    pq.write_table(small.slice(0, 30), source)
    project = Project(tmp_path, monkeypatch, source, refresh_mode="append")
    project.refresh(new=30, embedded=30)
    before = project.table()
    keys = project.keys()

    # Known keys with new text, rows gone from the source, and 4 new keys: only the new keys count.
    ids = small.column("pkg_id").to_pylist()
    edited = without(edit_text(small.slice(0, 30), ids[:3]), ids[3:8])
    pq.write_table(pa.concat_tables([edited, sample_table.slice(40, 4)]), source)
    project.refresh(new=4, changed=0, deleted=0, embedded=4)
    after = project.table()
    assert len(after) == 34
    assert {k: after[k] for k in before} == before  # changed and vanished rows are left as they were
    assert {pk: project.keys()[pk] for pk in ids[:30]} == keys


def test_append_mode_with_time_column_reads_only_newer_rows(tmp_path, monkeypatch, sample_table):
    start = datetime(2024, 1, 1)
    rows = sample_table.slice(0, 50)
    times = pa.array([start + timedelta(hours=i) for i in range(50)], pa.timestamp("us"))
    rows = rows.append_column("updated_at", times)
    source = tmp_path / "src.parquet"
    pq.write_table(rows.slice(0, 30), source)  # hours 0..29
    project = Project(tmp_path, monkeypatch, source, refresh_mode="append", time_column="updated_at")
    project.refresh(new=30, embedded=30)
    assert metadata_of(project.last_result, [DS, "rows"])["time_watermark"] == str(start + timedelta(hours=29))

    # Read next: 5 newer rows (hours 30..34) and a known key with a newer time and new text (read,
    # left as is). Not read: 2 new keys whose time is below the watermark.
    known = rows.slice(0, 1)
    known = edit_text(known, known.column("pkg_id").to_pylist()).set_column(
        known.schema.get_field_index("updated_at"),
        "updated_at",
        pa.array([start + timedelta(hours=40)], pa.timestamp("us")),
    )
    late = rows.slice(45, 2).set_column(
        rows.schema.get_field_index("updated_at"), "updated_at", pa.array([start, start], pa.timestamp("us"))
    )
    pq.write_table(pa.concat_tables([rows.slice(1, 29), known, rows.slice(30, 5), late]), source)
    project.refresh(new=5, changed=0, deleted=0, embedded=5)
    loaded = metadata_of(project.last_result, [DS, "rows"])
    assert (loaded["rows_read"], loaded["dagster/row_count"]) == (6, 35)
    assert loaded["time_watermark"] == str(start + timedelta(hours=40))
    kept_text = project.sql(
        f'SELECT short_description FROM "{DS}_rows" WHERE pkg_id = ?', [known.column("pkg_id")[0].as_py()]
    )
    assert kept_text == [(rows.column("short_description")[0].as_py(),)]  # a known key is left as is

    project.refresh(new=0, changed=0, embedded=0)
    assert metadata_of(project.last_result, [DS, "rows"])["rows_read"] == 0
    assert metadata_of(project.last_result, [DS, "embeddings"])["committed"] is False


# -- several source files ------------------------------------------------------------------------
def test_directory_source_add_replace_and_remove_files(tmp_path, monkeypatch, sample_table):
    directory = tmp_path / "parts"
    directory.mkdir()
    part = {i: sample_table.slice(20 * i, 20) for i in range(3)}
    pq.write_table(part[0], directory / "part-0.parquet")
    pq.write_table(part[1], directory / "part-1.parquet")
    project = Project(tmp_path, monkeypatch, directory)
    project.refresh(new=40, embedded=40)

    pq.write_table(part[2], directory / "part-2.parquet")  # a file is added
    project.refresh(new=20, changed=0, unchanged=40, deleted=0, embedded=20)

    ids = part[1].column("pkg_id").to_pylist()  # a file is replaced: 4 texts change, 3 rows go
    pq.write_table(without(edit_text(part[1], ids[:4]), ids[4:7]), directory / "part-1.parquet")
    project.refresh(new=0, changed=4, unchanged=53, deleted=3, embedded=4)

    (directory / "part-0.parquet").unlink()  # a file is removed
    project.refresh(new=0, changed=0, unchanged=37, deleted=20, embedded=0)
    part_1 = part[1].column("pkg_id").to_pylist()
    assert {row.pk for row in project.table().values()} == {
        *part_1[:4],
        *part_1[7:],
        *part[2].column("pkg_id").to_pylist(),
    }


# -- no change: nothing committed, everything identical ------------------------------------------
def _index_files(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tables(project: Project) -> dict:
    return {
        stage: project.sql(f'SELECT * FROM "{DS}_{stage}" ORDER BY ALL')
        for stage in ("rows", "keys", "embeddings", "changes")
    }


def test_refresh_without_change_commits_nothing_and_is_idempotent(project):
    first = project.refresh(new=40, embedded=40)
    assert first["committed"] is True
    tables, files = _tables(project), _index_files(project.home / DS)

    meta = project.refresh(new=0, changed=0, served_only_changed=0, unchanged=40, deleted=0, embedded=0)
    assert (meta["committed"], meta["seq_last"], meta["embedding_rows_per_second"]) == (False, first["seq_last"], 0.0)
    assert meta["summary"].startswith("nothing changed: 40 rows read, 40 unchanged")
    assert metadata_of(project.last_result, [DS, "index"])["records"] == 0
    assert _tables(project) == tables
    assert _index_files(project.home / DS) == files  # the same files, byte for byte


def test_metadata_says_what_the_refresh_did(project, small):
    first = project.refresh(new=40, embedded=40)
    stages = ("plan_seconds", "embedding_seconds", "commit_seconds")
    assert all(isinstance(first[name], float) for name in stages) and first["embedding_seconds"] > 0, first
    # the stages are parts of the whole, and the rate is the rows over the embedding's time
    assert sum(first[name] for name in stages) <= first["seconds"] + 0.003  # each is rounded to a ms
    assert first["embedding_rows_per_second"] == pytest.approx(40 / first["embedding_seconds"], rel=0.02)
    assert metadata_of(project.last_result, [DS, "rows"])["dagster/row_count"] == 40

    ids = small.column("pkg_id").to_pylist()
    pq.write_table(without(edit_text(small, ids[:2]), ids[2:3]), project.source)
    meta = project.refresh(new=0, changed=2, unchanged=37, deleted=1, embedded=2)
    assert meta["summary"] == (
        f"refresh: 39 rows read; 0 new, 2 changed, 0 served columns only, 1 deleted, 37 unchanged, "
        f"0 skipped (empty text); embedded 2; committed seq {first['seq_last'] + 1}..{first['seq_last'] + 3}"
    )
