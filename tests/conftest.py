"""Shared fixtures: small projects (a spec, Parquet sources and a home) in ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# One ONNX export of the model for the whole run, shared by every temporary home and subprocess
# (daemon runs, CLI, crash writers) instead of one export per QUIVER_HOME.
os.environ.setdefault("QUIVER_MODEL_CACHE", str(ROOT / ".quiver" / "models"))
SAMPLE = ROOT / "data" / "debian_sample.parquet"


@pytest.fixture(scope="session")
def sample_table() -> pa.Table:
    return pq.read_table(SAMPLE)


def dataset_entry(name: str, source: Path, **overrides) -> dict:
    entry = {
        "name": name,
        "from": str(source),
        "primary_key": "pkg_id",
        "columns": ["package", "section", "short_description"],
        "embeddings": {"columns": ["package", "short_description"], "separator": ": "},
        "vectors": {"metric": "cosine", "m": 16, "ef_construction": 128, "ef_search": 64},
    }
    entry.update(overrides)
    return entry


def write_spec(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"datasets": entries}, sort_keys=False))
    return path
