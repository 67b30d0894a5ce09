"""One small dataset built through Dagster, shared by every serving test of the session."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from quiver.resources.embedding import ENV_CACHE, default_cache_dir
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.dagster.helpers import materialize_all

ROWS = 150


@pytest.fixture(scope="session")
def built(tmp_path_factory, sample_table):
    """(spec_path, home, source table) of dataset ``pkgs``: the first ROWS rows of the demo sample."""
    tmp = tmp_path_factory.mktemp("serving")
    table = sample_table.slice(0, ROWS)
    pq.write_table(table, tmp / "src.parquet")
    entry = dataset_entry("pkgs", tmp / "src.parquet", snapshots={"on_startup": False, "interval_seconds": 0})
    spec_path = write_spec(tmp / "datasets.yaml", [entry])
    assert materialize_all(spec_path, tmp / "home").success
    return spec_path, tmp / "home", table


@pytest.fixture(scope="session")
def spec(built):
    return load_spec(built[0])


def env_for(built) -> dict:
    """The environment of a subprocess serving ``built``. It shares this process's ONNX export of the
    model (tests/conftest.py points QUIVER_MODEL_CACHE at one place for the whole run)."""
    spec_path, home, _ = built
    return {
        **os.environ,
        "QUIVER_DATASETS": str(spec_path),
        "QUIVER_HOME": str(home),
        ENV_CACHE: str(default_cache_dir()),
        "PYTHONPATH": str(ROOT),
    }
