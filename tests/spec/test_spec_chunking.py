"""The spec's ``embeddings.chunking`` block: Spice's keys, the model's bounds, the content identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quiver.resources.spec import MODEL_WINDOWS, ChunkingSpec, SpecError, default_chunk_tokens, parse_spec

BASE = Path("/specs")
DATASET = {"name": "articles", "from": "a.parquet", "primary_key": "id"}


def _embeddings(block: dict | None, model: str | None = None):
    embeddings = {"column": "body", **({"chunking": block} if block is not None else {})}
    if model:
        embeddings["model"] = model
    return parse_spec({"datasets": [{**DATASET, "embeddings": embeddings}]}, BASE).datasets[0].embeddings


def _problem(block: dict, model: str | None = None) -> str:
    with pytest.raises(SpecError) as caught:
        _embeddings(block, model)
    (problem,) = caught.value.problems
    return problem


def test_without_the_block_rows_are_chunked_only_when_longer_than_the_window():
    embeddings = _embeddings(None)
    assert embeddings.chunking == ChunkingSpec(enabled=True, target_chunk_size=None, overlap_size=None)
    assert default_chunk_tokens(MODEL_WINDOWS[embeddings.model]) == 64  # a quarter of the window (bench-chunking)
    assert embeddings.content_identity == embeddings.identity == "all-MiniLM-L6-v2"  # hashes as before chunking


def test_spices_form_of_the_block_is_accepted():
    spice = yaml.safe_load(
        """
        chunking:
          enabled: true
          target_chunk_size: 128
          overlap_size: 16
          trim_whitespace: false
        """
    )["chunking"]
    chunking = _embeddings(spice).chunking
    assert (chunking.enabled, chunking.target_chunk_size, chunking.overlap_size, chunking.trim_whitespace) == (
        True, 128, 16, False,
    )


def test_a_chunking_other_than_the_default_is_part_of_the_content_identity():
    a, b = _embeddings({"target_chunk_size": 128}), _embeddings({"target_chunk_size": 64})
    off = _embeddings({"enabled": False})
    identities = {a.content_identity, b.content_identity, off.content_identity, _embeddings(None).content_identity}
    assert len(identities) == 4, "changing the chunking re-embeds every row"
    assert a.identity == off.identity == "all-MiniLM-L6-v2", "the model identity the index records is unchanged"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"target_chunk_size": 255}, "chunking.target_chunk_size 255 is larger than all-MiniLM-L6-v2 reads: 8..254 tokens"),
        ({"target_chunk_size": 7}, "embeddings.chunking.target_chunk_size: Input should be greater than or equal to 8"),
        ({"target_chunk_size": 64, "overlap_size": 64}, "overlap_size (64) must be smaller than target_chunk_size (64)"),
        ({"overlap_size": 64}, "chunking.overlap_size 64 must be smaller than the default chunk size (64 tokens)"),
        ({"overlap_size": -1}, "embeddings.chunking.overlap_size: Input should be greater than or equal to 0"),
        ({"enabled": "yes"}, "embeddings.chunking.enabled: Input should be a valid boolean"),
        ({"target_size": 64}, "embeddings.chunking.target_size: unknown key; allowed keys: enabled, target_chunk_size"),
    ],
)
def test_bad_blocks_name_the_dataset_the_key_and_the_range(block, message):
    problem = _problem(block)
    assert problem.startswith("dataset 'articles': embeddings") and message in problem, problem


def test_a_local_models_window_is_checked_when_it_loads_not_here():
    assert _embeddings({"target_chunk_size": 400}, model="/models/long-window").chunking.target_chunk_size == 400
