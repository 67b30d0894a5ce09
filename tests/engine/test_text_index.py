"""The full-text index (``index.text_index``): identifiers findable as typed, folded and
lower-cased terms, no query syntax, and exactly ``min(limit, live matches)`` live keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.resources.index.text_index import Analyzer, TextIndex, TextIndexError, write_text_index

TEXTS = {
    1: "py-spy: sampling profiler for Python programs",
    2: "spy: tools to watch python programs",
    3: "h5py: read and write HDF5 files from Python",
    4: "libssl3: Secure Sockets Layer toolkit, shared libraries",
    5: "Café au lait: a crème brûlée theme",
    6: "gcc-c++: the GNU C++ compiler, version v1.2 for x86_64",
    7: None,
    8: "",
}


def index(path=None, analyzer=Analyzer()) -> TextIndex:
    keys = np.array(list(TEXTS), np.uint64)
    return write_text_index(path, keys, TEXTS.values(), analyzer)


@pytest.mark.parametrize(
    "query, first",
    [("py-spy", 1), ("PY-SPY", 1), ("h5py", 3), ("libssl3", 4), ("v1.2", 6), ("x86_64", 6), ("c++", 6), ("gcc-c++", 6),
     ("cafe", 5), ("CRÈME brulee", 5), ("spy", 2)],
)
def test_identifiers_and_folded_words_are_found_first(query, first):
    assert index().search(query, 3).keys[0] == first


def test_a_whole_identifier_outranks_its_parts_found_apart():
    hits = index().search("py-spy", 6)
    assert hits.keys.tolist()[:2] == [1, 2] and hits.scores[0] > 2 * hits.scores[1]


def test_query_syntax_is_text_and_empty_texts_are_not_indexed(tmp_path):
    built = index(tmp_path / "text")
    assert built.documents == 6, "a null or empty text is no document"
    for query in ("-", '"', "", "   ", "((", "OR", "NOT"):
        assert built.search(query, 5).keys.tolist() == []
    assert built.search("AND", 5).keys.tolist() == [3], "a word, found where the text has it, not an operator"
    assert set(built.search("-python", 5).keys.tolist()) == {1, 2, 3}, "no exclusion: a word"


def test_an_index_on_disk_opens_again_with_the_same_answers(tmp_path):
    written = index(tmp_path / "text")
    opened = TextIndex.open(tmp_path / "text", Analyzer())
    for query in ("python", "h5py", "cafe"):
        assert opened.search(query, 5).keys.tolist() == written.search(query, 5).keys.tolist()


def test_a_stemmer_stems_words_and_an_unknown_language_is_refused_by_name():
    stemmed = index(analyzer=Analyzer(stemmer="english"))
    assert stemmed.search("program", 5).keys.tolist() != [] and index().search("program", 5).keys.tolist() == []
    with pytest.raises(TextIndexError, match="'klingon' is not a stemmer language"):
        Analyzer(stemmer="klingon").words()


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta"]), min_size=0, max_size=4), min_size=1, max_size=60),
    dead=st.sets(st.integers(0, 59)),
    limit=st.integers(1, 12),
    word=st.sampled_from(["alpha", "beta", "gamma", "delta"]),
)
def test_exactly_min_limit_live_matches_are_returned(texts, dead, limit, word):
    keys = np.arange(len(texts), dtype=np.uint64)
    built = write_text_index(None, keys, [" ".join(t) for t in texts], Analyzer())
    live = np.array([i not in dead for i in range(len(texts))])
    hits = built.search(word, limit, live=lambda k: live[k.astype(np.int64)])
    matching = {i for i, t in enumerate(texts) if word in t and i not in dead}
    assert len(hits.keys) == min(limit, len(matching)) and set(hits.keys.tolist()) <= matching
    assert len(set(hits.keys.tolist())) == len(hits.keys) and list(hits.scores) == sorted(hits.scores, reverse=True)
