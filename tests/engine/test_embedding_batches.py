"""Token-sorted batches: every text once, sorted by token count, within the budget, padded right."""

from __future__ import annotations

import numpy as np
import pytest

from quiver.resources.embedding import resolve_model_path
from quiver.resources.embedding.token_batches import load_tokenizer, plan_batches, token_batches


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model_path("all-MiniLM-L6-v2"), 256)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("budget", "max_rows"), [(4096, 256), (512, 8), (64, 1000), (1, 3)])
def test_plan_covers_every_position_once_within_budget(seed, budget, max_rows):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 300, size=int(rng.integers(0, 2000)))
    batches = plan_batches(lengths, budget, max_rows)
    seen = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    previous_max = 0
    for rows in batches:
        batch_lengths = lengths[rows]
        assert len(rows) <= max_rows
        assert np.all(np.diff(batch_lengths) >= 0), "sorted by token count within a batch"
        assert batch_lengths[0] >= previous_max, "and across batches"
        previous_max = batch_lengths[-1]
        assert len(rows) == 1 or len(rows) * batch_lengths[-1] <= budget, "only a lone text may exceed the budget"


def test_plan_rejects_a_zero_budget():
    with pytest.raises(ValueError, match="positive"):
        plan_batches([3, 4], token_budget=0)


def test_short_texts_share_big_batches_long_texts_small_ones():
    lengths = [12] * 500 + [250] * 50
    batches = plan_batches(lengths, token_budget=4096, max_rows=256)
    sizes = [len(b) for b in batches]
    assert max(sizes) == 256  # 256 x 12 tokens fits the budget
    long_sizes = [len(b) for b in batches if lengths[b[0]] == 250]
    assert max(long_sizes) == 4096 // 250


def test_tokenizer_has_no_fixed_padding_and_truncates_at_the_model_limit(tokenizer):
    short = tokenizer.encode("hello world")
    assert len(short.ids) == 4  # [CLS] hello world [SEP], not padded to 128
    long = tokenizer.encode("word " * 1000)
    assert len(long.ids) == 256


def test_same_ids_as_sentence_transformers(tokenizer, sample_table):
    from transformers import AutoTokenizer

    texts = sample_table.column("short_description").to_pylist()[:200] + ["ünïcödé 日本語 テキスト", "x " * 400]
    reference = AutoTokenizer.from_pretrained(str(resolve_model_path("all-MiniLM-L6-v2")))
    want = reference(texts, truncation=True, max_length=256)["input_ids"]
    got = [e.ids for e in tokenizer.encode_batch(texts)]
    assert got == want


def test_batches_are_padded_arrays_that_map_back_to_input_order(tokenizer, sample_table):
    texts = sample_table.column("short_description").to_pylist()[:300] + ["a", "word " * 300]
    total = 0
    for batch in token_batches(tokenizer, texts, token_budget=1024, max_rows=64):
        assert batch.input_ids.dtype == np.int64
        assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape
        for i, row in enumerate(batch.rows):
            ids = tokenizer.encode(texts[row]).ids
            assert batch.input_ids[i, : len(ids)].tolist() == ids
            assert batch.attention_mask[i].sum() == len(ids)
            assert not batch.input_ids[i, len(ids) :].any()
        total += len(batch.rows)
    assert total == len(texts)
