"""Materialize every asset of a spec through Dagster, in this process:

    python -m tests.crash.dagster_run <spec> <home>

The Dagster-level crash test runs it with ``QUIVER_KILL_AT`` set, so the kill lands inside a real
asset run (with the real model), not in a test double.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import DagsterInstance, materialize

from assets import dataset_assets
from pipelines.definitions import build_resources
from pipelines.spec import load_spec


def materialize_all(spec_path: Path, home: Path, instance: DagsterInstance | None = None):
    spec = load_spec(spec_path)
    assets = [asset for dataset in spec.datasets for asset in dataset_assets(dataset)]
    return materialize(assets, resources=build_resources(spec, home), instance=instance or DagsterInstance.ephemeral())


if __name__ == "__main__":
    result = materialize_all(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.exit(0 if result.success else 1)
