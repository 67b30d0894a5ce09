"""Long text through the whole pipeline with the real model: split into chunks, found by its last
sentences, chunks replaced whole when a row shrinks or grows, all of them gone with the row, and
``k`` distinct rows back however many chunks of one row match."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from quiver.pipelines.cli import dataset_status
from quiver.pipelines.definitions import DUCKDB_FILE
from quiver.pipelines.http_api import create_app
from quiver.resources.search import HYBRID_COLUMNS, Searcher, SearchError
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import materialize_all, metadata_of
from tests.invariants import check_at_rest, table_state

DS = "docs"
ROOT = Path(__file__).resolve().parents[2]
TOPICS = [
    "the lighthouse keeper counts ships in the fog",
    "a baker kneads rye dough before dawn",
    "the violinist tunes her instrument backstage",
    "glaciers carve deep valleys over centuries",
    "the chess engine evaluates a quiet endgame",
    "a beekeeper inspects frames of capped honey",
    "tidal turbines spin under the cold strait",
    "the archivist restores a torn medieval map",
]


WORDS = (
    "system module value network driver config buffer kernel socket thread library format parser "
    "cache index signal stream packet shell script compiler debugger archive display device memory "
    "storage backup server client protocol render widget editor terminal daemon logger monitor"
).split()


def long_text(doc: int, sentences: int) -> str:
    """``sentences`` seeded sentences of technical words (distinct, not near-duplicates of each
    other); the last one is the document's own rare topic."""
    rng = random.Random(doc)
    filler = [" ".join(rng.choice(WORDS) for _ in range(9)).capitalize() + "." for _ in range(sentences - 1)]
    return " ".join([*filler, f"Finally, {TOPICS[doc]}."])


def source(rows: dict[int, str], section: dict[int, str] | None = None) -> pa.Table:
    ids = sorted(rows)
    return pa.table(
        {
            "pkg_id": pa.array(ids, pa.int64()),
            "package": [f"doc-{i}" for i in ids],
            "section": [(section or {}).get(i, "misc") for i in ids],
            "short_description": [rows[i] for i in ids],
        }
    )


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "docs.parquet"
    entry = dataset_entry(
        DS,
        path,
        embeddings={"column": "short_description", "chunking": {"target_chunk_size": 32, "overlap_size": 4}},
    )
    spec = write_spec(tmp_path / "datasets.yaml", [entry])
    return path, spec, tmp_path / "home"


def chunks_of(home, pk: int) -> list[int]:
    return sorted(e.columns["_chunk"] for e in table_state(home / DUCKDB_FILE, DS).values() if e.pk == pk)


def check_in_a_fresh_process(home) -> None:
    code = f"from tests.invariants import check_at_rest; check_at_rest({str(home / DS)!r}, {str(home / DUCKDB_FILE)!r}, {DS!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_long_document_is_found_by_its_last_sentence(project):
    path, spec, home = project
    pq.write_table(source({i: long_text(i, 40) for i in range(len(TOPICS))}), path)
    result = materialize_all(spec, home)
    meta = metadata_of(result, [DS, "embeddings"])
    assert meta["rows_split_into_chunks"] == len(TOPICS) and meta["chunks"] > 10 * len(TOPICS)
    assert meta["dagster/row_count"] == len(TOPICS)
    check_at_rest(home / DS, home / DUCKDB_FILE, DS)
    status = dataset_status(load_spec(spec).get(DS), home)
    assert (status["snapshot_rows"], status["snapshot_vectors"]) == (len(TOPICS), meta["chunks"])

    searcher = Searcher.for_spec(home, load_spec(spec))
    for doc, topic in enumerate(TOPICS):
        hits = searcher.search(DS, topic, k=3, columns=["chunk_number", "chunk_start", "chunk_end", "chunk"])
        assert hits.column("pkg_id").to_pylist()[0] == doc, (topic, hits.to_pylist())
        best = hits.to_pylist()[0]
        text = long_text(doc, 40)
        assert best["chunk"] == text[best["chunk_start"] : best["chunk_end"]] and best["chunk_number"] > 0
        assert topic in best["chunk"] and len(best["chunk"]) < len(text) / 5


def test_chunking_off_reports_the_rows_it_cuts(project, tmp_path):
    path, _spec, home = project
    pq.write_table(source({i: long_text(i, 40) for i in range(3)}), path)
    spec = write_spec(
        tmp_path / "off.yaml",
        [dataset_entry(DS, path, embeddings={"column": "short_description", "chunking": {"enabled": False}})],
    )
    meta = metadata_of(materialize_all(spec, home), [DS, "embeddings"])
    assert (meta["rows_cut_at_the_window"], meta["rows_split_into_chunks"], meta["chunks"]) == (3, 0, 3)


def test_a_row_that_shrinks_grows_and_leaves_keeps_no_stale_chunk(project):
    path, spec, home = project
    rows = {i: long_text(i, 40) for i in range(4)}
    pq.write_table(source(rows), path)
    materialize_all(spec, home)
    many = chunks_of(home, 0)
    assert len(many) > 8

    rows[0] = long_text(0, 12)  # shrinks: fewer chunks, the last topic kept
    pq.write_table(source(rows), path)
    meta = metadata_of(materialize_all(spec, home), [DS, "embeddings"])
    few = chunks_of(home, 0)
    assert few == list(range(len(few))) and len(few) < len(many)
    assert meta["rows_changed"] == 1
    check_in_a_fresh_process(home)
    searcher = Searcher.for_spec(home, load_spec(spec))
    stale = searcher.search(DS, long_text(0, 40)[-600:], k=50, group=False, columns=["chunk_number"])
    assert not [h for h in stale.to_pylist() if h["pkg_id"] == 0 and h["chunk_number"] >= len(few)]

    rows[0] = long_text(0, 60)  # grows past where it was
    pq.write_table(source(rows), path)
    materialize_all(spec, home)
    assert len(chunks_of(home, 0)) > len(many)
    check_in_a_fresh_process(home)

    del rows[0]  # leaves: every chunk goes with it
    pq.write_table(source(rows), path)
    meta = metadata_of(materialize_all(spec, home), [DS, "embeddings"])
    assert meta["rows_deleted"] == 1 and chunks_of(home, 0) == []
    check_in_a_fresh_process(home)
    searcher.reader(DS).refresh()
    everything = searcher.search(DS, TOPICS[0], k=1000, group=False)
    assert 0 not in everything.column("pkg_id").to_pylist()


def test_k_distinct_rows_however_many_chunks_match(project):
    path, spec, home = project
    rows = {i: long_text(i, 40) for i in range(len(TOPICS))}
    sections = {0: "rare", 5: "rare", 6: "rare"}
    pq.write_table(source(rows, sections), path)
    materialize_all(spec, home)
    searcher = Searcher.for_spec(home, load_spec(spec))
    query = "system module network driver kernel library"  # every filler chunk of every row matches it

    chunks = searcher.search(DS, query, k=10, group=False)
    assert len(set(chunks.column("pkg_id").to_pylist())) < 10, "the best chunks crowd a few rows"
    for mode, score in (("hybrid", "fused_score"), ("vector", "score")):  # hybrid fuses rows, not chunks
        rows_back = searcher.search(DS, query, k=len(TOPICS), mode=mode)
        assert sorted(rows_back.column("pkg_id").to_pylist()) == list(range(len(TOPICS))), mode
        scores = rows_back.column(score).to_pylist()
        assert scores == sorted(scores, reverse=True), mode

    few = searcher.search(DS, query, k=5, where="section = 'rare'")
    assert sorted(few.column("pkg_id").to_pylist()) == [0, 5, 6]  # min(k, matching rows)


def test_the_command_line_returns_rows_or_chunks(project):
    path, spec, home = project
    pq.write_table(source({i: long_text(i, 40) for i in range(3)}), path)
    materialize_all(spec, home)
    env = {**os.environ, "QUIVER_DATASETS": str(spec), "QUIVER_HOME": str(home)}

    def cli(*args) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "quiver", "search", DS, TOPICS[1], *args, "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    rows = cli("--k", "3", "--columns", "package,chunk_number,chunk_start,chunk_end,chunk")
    assert [r["pkg_id"] for r in rows][0] == 1 and len({r["pkg_id"] for r in rows}) == 3
    assert list(rows[0]) == ["pkg_id", *HYBRID_COLUMNS, "package", "chunk_number", "chunk_start", "chunk_end", "chunk"]
    assert TOPICS[1] in rows[0]["chunk"]
    chunks = cli("--k", "6", "--chunks", "--columns", "chunk_number")
    assert len(chunks) == 6 and len({c["pkg_id"] for c in chunks}) < 6


def test_the_chunk_text_needs_the_embedded_columns_served(project, tmp_path):
    path, _spec, home = project
    pq.write_table(source({i: long_text(i, 40) for i in range(2)}), path)
    # full_text over package alone: its columns are served too, and the embedded one must not be
    entry = dataset_entry(
        DS, path, columns=["package"], embeddings={"column": "short_description"}, full_text={"columns": ["package"]}
    )
    spec = write_spec(tmp_path / "narrow.yaml", [entry])
    materialize_all(spec, home)
    searcher = Searcher.for_spec(home, load_spec(spec))
    with pytest.raises(SearchError, match="short_description is not served; add it to the dataset's `columns:`"):
        searcher.search(DS, TOPICS[0], k=1, columns=["chunk"])
    offsets = searcher.search(DS, TOPICS[0], k=1, columns=["chunk_start", "chunk_end"]).to_pylist()[0]
    assert TOPICS[0] in long_text(0, 40)[offsets["chunk_start"] : offsets["chunk_end"]]
    with pytest.raises(SearchError, match="make it with Searcher.for_spec"):
        Searcher(home, [DS]).search(DS, TOPICS[0], k=1, columns=["chunk"])


def test_the_http_front_returns_rows_or_chunks_with_their_text(project):
    path, spec, home = project
    pq.write_table(source({i: long_text(i, 40) for i in range(3)}), path)
    materialize_all(spec, home)
    loaded = load_spec(spec)
    client = TestClient(create_app(Searcher.for_spec(home, loaded), loaded))

    rows = client.post("/v1/search", json={"text": TOPICS[2], "limit": 3}).json()["matches"]
    assert [m["primary_key"]["pkg_id"] for m in rows][0] == 2 and len({m["primary_key"]["pkg_id"] for m in rows}) == 3
    assert rows[0]["value"] == long_text(2, 40) and "chunk" not in rows[0]

    chunks = client.post("/v1/search", json={"text": TOPICS[2], "limit": 6, "group": False}).json()["matches"]
    assert len(chunks) == 6 and len({m["primary_key"]["pkg_id"] for m in chunks}) < 6
    best = chunks[0]
    assert TOPICS[2] in best["value"] and best["value"] == long_text(2, 40)[best["chunk"]["start"] : best["chunk"]["end"]]
    bad = client.post("/v1/search", json={"text": "x", "group": "no"})
    assert bad.status_code == 400 and '"group" must be true' in bad.json()["error"]
