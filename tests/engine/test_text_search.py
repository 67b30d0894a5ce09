"""Full text in the index directory: a snapshot's ``text/``, the reader's delta, hybrid fusion.

The text index is derived from the same log as the vectors, so it must answer exactly the units
the vectors answer (I2), move with every segment, survive damage like the snapshot's other files,
and take any text a user types as words.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.resources.fusion import RRF_K
from quiver.resources.index import IndexReader
from quiver.resources.index.commitlog import CHUNK, CHUNK_END, CHUNK_START
from quiver.resources.index.errors import CorruptFileError
from quiver.resources.index.manifest import read_manifest
from quiver.resources.index.reader import TextSearchUnavailable
from quiver.resources.index.snapshot import TEXT_DIR, check_snapshot, verify_snapshot
from quiver.resources.index.store import IndexStore
from quiver.resources.index.text_index import TextConfig, unit_texts
from quiver.resources.search import EmbeddedText
from tests.invariants import check_at_rest, check_reader_serves, index_state

NAMES = TextConfig(("name",), ("name",))
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon"]


def store_with_text(kit, root, text=NAMES) -> IndexStore:
    store = IndexStore(root, "products", kit.make_identity(), kit.FAST_PARAMS, kit.PK, text=text)
    store.open()
    return store


def append(store, kit, records):
    first = records[0].seq
    store.append_segment(kit.changes_table(records, 8), first, records[-1].seq)


def upsert(kit, seq, pk, name, rng):
    return kit.Record(seq, "upsert", kit.key_of(pk), pk, kit.random_unit(rng, 8), name)


# -- what a unit's text is ---------------------------------------------------------------------------
def test_a_chunk_is_indexed_with_its_own_span_of_the_embedded_text():
    embedded = EmbeddedText(("title", "body"), ": ")
    row = {"title": "py-spy", "body": "a sampling profiler. It attaches to running programs."}
    whole = embedded.of(row)
    spans = [(0, 0, 22), (1, 22, len(whole))]
    rows = pa.table(
        {
            "title": [row["title"]] * 2,
            "body": [row["body"]] * 2,
            CHUNK: pa.array([n for n, _, _ in spans], pa.int32()),
            CHUNK_START: pa.array([a for _, a, _ in spans], pa.int32()),
            CHUNK_END: pa.array([b for _, _, b in spans], pa.int32()),
        }
    )
    texts = unit_texts(rows, TextConfig(("title", "body"), ("title", "body"), ": "))
    assert texts == [whole[a:b] for _, a, b in spans], "the same units the vectors index, cut the same way"


def test_blank_columns_and_columns_that_are_not_embedded():
    rows = pa.table(
        {
            "title": ["  ", "zstd", None],
            "body": ["fast compression", "\t", None],
            "code": ["SKU-1", "SKU-2", None],
            CHUNK: pa.array([0, 0, 0], pa.int32()),
            CHUNK_START: pa.array([0, 0, 0], pa.int32()),
            CHUNK_END: pa.array([None, None, None], pa.int32()),
        }
    )
    config = TextConfig(("body", "code"), ("title", "body"), "\n")
    assert unit_texts(rows, config) == ["fast compression\nSKU-1", "SKU-2", None]


def test_a_later_chunk_does_not_repeat_the_columns_that_are_not_embedded():
    rows = pa.table({"body": ["one two three four"] * 2, "code": ["X-9"] * 2, CHUNK: [0, 1], CHUNK_START: [0, 8], CHUNK_END: [8, 18]})
    assert unit_texts(rows, TextConfig(("body", "code"), ("body",))) == ["one two \nX-9", "three four"]


# -- the snapshot's text index -----------------------------------------------------------------------
def test_a_snapshot_writes_its_text_index_with_checksums_and_serves_it(kit, tmp_path):
    rng = np.random.default_rng(1)
    store = store_with_text(kit, tmp_path)
    append(store, kit, [upsert(kit, i + 1, i, f"{WORDS[i % 5]} item-{i}", rng) for i in range(30)])
    result = store.take_snapshot()
    text_files = [name for name in result.entry.files if name.startswith(f"{TEXT_DIR}/")]
    assert "text/meta.json" in text_files and len(text_files) >= 3
    assert result.entry.text == NAMES.to_dict() == read_manifest(tmp_path).text
    check_at_rest(tmp_path)
    reader = IndexReader(tmp_path)
    assert reader.state.text.snapshot is reader.state.snap.text, "the written index, not one built in memory"
    assert reader.search_text("item-7", 1).keys.tolist() == [kit.key_of(7)]
    assert set(reader.search_text("gamma", 50).keys.tolist()) == {kit.key_of(i) for i in range(2, 30, 5)}


def test_segments_after_the_snapshot_are_searchable_at_once_and_deletes_vanish(kit, tmp_path):
    rng = np.random.default_rng(2)
    store = store_with_text(kit, tmp_path)
    append(store, kit, [upsert(kit, i + 1, i, f"{WORDS[i % 5]} item-{i}", rng) for i in range(20)])
    store.take_snapshot()
    reader = IndexReader(tmp_path)
    append(
        store,
        kit,
        [
            upsert(kit, 21, 100, "gamma brand-new-thing", rng),  # new
            upsert(kit, 22, 3, "renamed zeta", rng),  # was "delta item-3"
            kit.Record(23, "delete", kit.key_of(2), 2, None, None),  # was "gamma item-2"
        ],
    )
    reader.refresh()
    assert reader.search_text("brand-new-thing", 3).keys.tolist()[0] == kit.key_of(100)
    assert kit.key_of(3) not in reader.search_text("delta", 50).keys.tolist(), "the old text is gone with its row"
    assert reader.search_text("zeta", 5).keys.tolist() == [kit.key_of(3)]
    gamma = set(reader.search_text("gamma", 50).keys.tolist())
    assert gamma == {kit.key_of(i) for i in (7, 12, 17, 100)}, "exactly the live matches, none deleted"
    check_reader_serves(reader, index_state(tmp_path))


def test_the_delta_is_scored_with_the_snapshot_term_rarity(kit, tmp_path):
    """The same text in the delta and in the snapshot scores (nearly) the same: a small delta must
    not make its terms look rarer, or common, or rank a fresh row below a stale one."""
    rng = np.random.default_rng(3)
    store = store_with_text(kit, tmp_path)
    filler = [upsert(kit, i + 1, i, f"{WORDS[i % 5]} {WORDS[(i + 2) % 5]} filler", rng) for i in range(200)]
    append(store, kit, [*filler, upsert(kit, 201, 500, "rare-term beta", rng)])
    store.take_snapshot()
    more = [upsert(kit, 202 + i, 600 + i, f"{WORDS[i % 5]} {WORDS[(i + 1) % 5]} filler", rng) for i in range(4)]
    append(store, kit, [*more, upsert(kit, 206, 501, "rare-term beta", rng)])  # a delta like the snapshot
    reader = IndexReader(tmp_path)
    hits = reader.search_text("rare-term beta", 2)
    assert set(hits.keys.tolist()) == {kit.key_of(500), kit.key_of(501)}
    assert abs(float(hits.scores[0]) - float(hits.scores[1])) < 0.05 * float(hits.scores[0])


def test_a_damaged_text_file_is_never_served_and_the_previous_snapshot_serves(kit, tmp_path):
    rng = np.random.default_rng(4)
    store = store_with_text(kit, tmp_path)
    append(store, kit, [upsert(kit, i + 1, i, f"name-{i}", rng) for i in range(10)])
    store.take_snapshot()
    append(store, kit, [upsert(kit, 11, 10, "name-10", rng)])
    entry = store.take_snapshot().entry
    victim = max((n for n in entry.files if n.startswith("text/")), key=lambda n: entry.files[n].bytes)
    path = tmp_path / entry.dir / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="fails its checksum"):
        check_snapshot(tmp_path, entry, kit.make_identity())
    reader = IndexReader(tmp_path)
    assert reader.state.snapshot_problem and "damaged" in reader.state.snapshot_problem
    assert reader.search_text("name-10", 1).keys.tolist() == [kit.key_of(10)], "previous snapshot + its segments"
    recovery = store.recover()
    assert recovery.demoted_snapshot == entry.seq and not recovery.needs_rebuild
    store.take_snapshot()
    check_at_rest(tmp_path)


def test_a_change_of_settings_serves_at_once_and_the_next_snapshot_writes_it(kit, tmp_path):
    rng = np.random.default_rng(5)
    store = store_with_text(kit, tmp_path)
    append(store, kit, [upsert(kit, 1, 1, "running programs", rng), upsert(kit, 2, 2, "walks", rng)])
    store.take_snapshot()
    stemmed = TextConfig(("name",), ("name",), stemmer="english")
    store = store_with_text(kit, tmp_path, stemmed)
    assert IndexReader(tmp_path).search_text("run", 5).keys.tolist() == [], "the manifest's settings until a snapshot"
    append(store, kit, [upsert(kit, 3, 3, "walking", rng)])
    store.take_snapshot()
    reader = IndexReader(tmp_path)
    assert read_manifest(tmp_path).text == stemmed.to_dict()
    assert reader.search_text("run", 5).keys.tolist() == [kit.key_of(1)]
    assert set(reader.search_text("walk", 5).keys.tolist()) == {kit.key_of(2), kit.key_of(3)}
    check_at_rest(tmp_path)


def test_a_snapshot_from_before_full_text_is_indexed_in_memory(kit, tmp_path):
    rng = np.random.default_rng(6)
    old = store_with_text(kit, tmp_path, text=None)
    append(old, kit, [upsert(kit, 1, 1, "legacy-name", rng)])
    old.take_snapshot()
    assert not IndexReader(tmp_path).has_text
    with pytest.raises(TextSearchUnavailable, match="full_text"):
        IndexReader(tmp_path).search_text("legacy-name", 1)
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    manifest["text"] = NAMES.to_dict()  # as the next snapshot would record it, without one yet
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    assert IndexReader(tmp_path).search_text("legacy-name", 1).keys.tolist() == [kit.key_of(1)]


# -- hybrid -----------------------------------------------------------------------------------------
def hybrid_world(kit, tmp_path, rows=60):
    rng = np.random.default_rng(7)
    store = store_with_text(kit, tmp_path, TextConfig(("name",), ("name",)))
    records = [upsert(kit, i + 1, i, f"{WORDS[i % 5]} part-{i}", rng) for i in range(rows)]
    append(store, kit, records)
    store.take_snapshot()
    append(store, kit, [upsert(kit, rows + 1, 1000, "gamma part-1000", rng)])
    return IndexReader(tmp_path), {r.key: r for r in records}


def test_hybrid_fuses_ranks_and_fills_every_column(kit, tmp_path):
    reader, _ = hybrid_world(kit, tmp_path)
    vector = np.random.default_rng(8).normal(size=8).astype(np.float32)
    table = reader.search_hybrid_rows(vector, "part-33", 10)
    rows = table.to_pylist()
    assert table.column_names[:7] == [kit.PK, "fused_score", "score", "distance", "text_score", "vector_rank", "text_rank"]
    assert rows[0][kit.PK] == 33 and rows[0]["text_rank"] == 1, "the identifier's row comes first"
    for row in rows:
        want = sum(1 / (RRF_K + row[r]) for r in ("vector_rank", "text_rank") if row[r] is not None)
        assert row["fused_score"] == pytest.approx(want)
        assert row["score"] is not None and row["distance"] is not None, "text-only rows still get their similarity"
    assert [r["fused_score"] for r in rows] == sorted((r["fused_score"] for r in rows), reverse=True)
    exact = reader.search(vector, 61, exact=True)
    key_of_pk = {kit.key_of(pk): pk for pk in range(61)} | {kit.key_of(1000): 1000}
    by_pk = dict(zip((key_of_pk[k] for k in exact.keys.tolist()), exact.distances.tolist()))
    for row in rows:
        assert row["distance"] == pytest.approx(by_pk[row[kit.PK]], abs=1e-5)


@pytest.mark.parametrize("k", [1, 5, 61, 100])
def test_hybrid_returns_exactly_min_k_matching_rows_and_filters_both_passes(kit, tmp_path, k):
    reader, _ = hybrid_world(kit, tmp_path)
    vector = np.random.default_rng(k).normal(size=8).astype(np.float32)
    everything = reader.search_hybrid_rows(vector, "gamma", k)
    assert everything.num_rows == min(k, 61) and len(set(everything.column(kit.PK).to_pylist())) == everything.num_rows
    where = "name LIKE 'beta%' OR name LIKE '%1000'"
    filtered = reader.search_hybrid_rows(vector, "gamma", k, where=where).to_pylist()
    assert len(filtered) == min(k, 13)
    assert all(r["name"].startswith("beta") or r[kit.PK] == 1000 for r in filtered)
    assert [r[kit.PK] for r in filtered if r["text_rank"] is not None] == [1000], "the text pass filtered too"


def test_weights_move_the_balance(kit, tmp_path):
    reader, _ = hybrid_world(kit, tmp_path)
    vector = np.random.default_rng(9).normal(size=8).astype(np.float32)
    text_heavy = reader.search_hybrid_rows(vector, "epsilon", 12, weights={"vector": 0.0, "text": 1.0}).to_pylist()
    assert all(r["name"].startswith("epsilon") for r in text_heavy), "weight 0: the vector pass adds nothing"
    vector_heavy = reader.search_hybrid_rows(vector, "epsilon", 12, weights={"vector": 1.0, "text": 0.0})
    assert vector_heavy.column(kit.PK).to_pylist() == reader.search_rows(vector, 12).column(kit.PK).to_pylist()


# -- bad input --------------------------------------------------------------------------------------
NASTY = st.one_of(
    st.text(max_size=200),
    st.sampled_from(['"', '"unbalanced', "a:b", "name:gamma", "AND", "OR NOT", "*", "?", "~2", "^3", "(", ")(", "\\", "\x00",
                     "gamma AND NOT beta", "part-1*", "🙂 emoji", "x" * 10_000, "gamma " * 2_000]),
)


_WORLD: dict = {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=NASTY)
def test_any_query_text_is_words_never_syntax(kit, tmp_path_factory, query):
    if "reader" not in _WORLD:  # one index for every example (kit is stateless helpers)
        _WORLD["reader"] = hybrid_world(kit, tmp_path_factory.mktemp("nasty"), rows=12)[0]
    reader = _WORLD["reader"]
    hits = reader.search_text(query, 5)
    assert len(hits.keys) <= 5 and len(set(hits.keys.tolist())) == len(hits.keys)
    table = reader.search_hybrid_rows(np.ones(8, np.float32), query, 5)
    assert table.num_rows == 5


# -- chunked rows -----------------------------------------------------------------------------------
def chunked_world(kit, tmp_path):
    """Rows of ``body`` text split into chunks (one key each, as the log carries them); the word
    ``needle`` only in the last chunk of row 7, and ``hay`` in every chunk of every row."""
    rng = np.random.default_rng(11)
    store = store_with_text(kit, tmp_path, TextConfig(("body",), ("body",)))
    seq, rows = 0, []
    for pk in range(12):
        parts = [f"hay part{n} of row{pk}" for n in range(3)] + (["hay needle at the end"] if pk == 7 else [])
        body = " ".join(parts)
        at = 0
        for number, part in enumerate(parts):
            seq += 1
            start = body.index(part, at)
            at = start + len(part)
            rows.append({"_seq": seq, "_op": "upsert", "_key": kit.key_of(pk * 100 + number), kit.PK: pk, "_vector": kit.random_unit(rng, 8).tolist(),
                         "_chunk": number, "_chunk_start": start, "_chunk_end": at, "body": body})
    schema = pa.schema([("_seq", pa.int64()), ("_op", pa.string()), ("_key", pa.uint64()), (kit.PK, pa.int64()),
                        ("_vector", pa.list_(pa.float32(), 8)), ("_chunk", pa.int32()), ("_chunk_start", pa.int32()),
                        ("_chunk_end", pa.int32()), ("body", pa.string())])
    store.append_segment(pa.Table.from_pylist(rows, schema), 1, seq)
    store.take_snapshot()
    return IndexReader(tmp_path)


def test_chunks_are_text_units_and_fusion_is_per_row(kit, tmp_path):
    reader = chunked_world(kit, tmp_path)
    assert reader.state.chunked
    needle = reader.search_text_rows("needle", 5, columns=["_chunk"]).to_pylist()
    assert [(r[kit.PK], r["_chunk"]) for r in needle] == [(7, 3)], "found in the chunk that holds it, and only there"
    hay = reader.search_text_rows("hay", 20)
    assert sorted(hay.column(kit.PK).to_pylist()) == list(range(12)), "one result per row, not per chunk"
    chunks = reader.search_text_rows("hay", 20, group=False)
    assert chunks.num_rows == 20 and len(set(chunks.column(kit.PK).to_pylist())) < 20
    vector = np.random.default_rng(12).normal(size=8).astype(np.float32)
    fused = reader.search_hybrid_rows(vector, "needle", 12).to_pylist()
    assert len(fused) == 12 and len({r[kit.PK] for r in fused}) == 12, "rows fused, each once"
    assert fused[0][kit.PK] == 7 or fused[0]["vector_rank"] == 1
    row7 = next(r for r in fused if r[kit.PK] == 7)
    assert row7["text_rank"] == 1 and row7["vector_rank"] is not None, "both passes ranked the row, not its chunks"
    assert all((r["text_score"] is None) == (r["text_rank"] is None) for r in fused), "a row's text score is its best chunk's"
    assert row7["text_score"] == pytest.approx(needle_score(reader))


def needle_score(reader):
    return reader.search_text_rows("needle", 1).column("score")[0].as_py()


def test_a_snapshot_updates_the_previous_text_index_at_the_cost_of_the_change(kit, tmp_path):
    rng = np.random.default_rng(13)
    store = store_with_text(kit, tmp_path)
    append(store, kit, [upsert(kit, i + 1, i, f"{WORDS[i % 5]} item-{i}", rng) for i in range(50)])
    first = store.take_snapshot().entry
    append(store, kit, [upsert(kit, 51, 3, "renamed-three", rng), kit.Record(52, "delete", kit.key_of(4), 4, None, None),
                        upsert(kit, 53, 77, "brand-new", rng)])
    second = store.take_snapshot().entry
    shared = [
        name for name in first.files
        if name.startswith("text/") and name in second.files and not name.endswith(".json")
        and (tmp_path / first.dir / name).stat().st_ino == (tmp_path / second.dir / name).stat().st_ino
    ]
    assert shared, "the unchanged segment files are linked, not rewritten"
    verify_snapshot(tmp_path, first)  # the previous snapshot's files are untouched: sizes and checksums hold
    check_at_rest(tmp_path)
    reader = IndexReader(tmp_path)
    assert reader.search_text("renamed-three", 1).keys.tolist() == [kit.key_of(3)]
    assert kit.key_of(4) not in reader.search_text("epsilon", 50).keys.tolist()
    assert kit.key_of(3) not in reader.search_text("delta", 50).keys.tolist()
    check_reader_serves(reader, index_state(tmp_path))
    # A graph rebuild (many tombstones) writes the text index whole: deleted documents go too.
    append(store, kit, [kit.Record(54 + i, "delete", kit.key_of(10 + i), 10 + i, None, None) for i in range(20)])
    third = store.take_snapshot().entry
    assert not any(
        (tmp_path / second.dir / n).exists() and (tmp_path / second.dir / n).stat().st_ino == (tmp_path / third.dir / n).stat().st_ino
        for n in third.files if n.startswith("text/")
    )
    check_at_rest(tmp_path)
