"""Running every asset of a spec, and reading its metadata back (state read-backs: tests/invariants.py)."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets
from quiver.pipelines.definitions import build_resources
from quiver.resources.spec import load_spec


def materialize_all(spec_path: Path, home: Path, instance=None):
    """Materialize every asset of the spec at ``spec_path`` in this process (an ephemeral instance by default)."""
    spec = load_spec(spec_path)
    assets = [asset for dataset in spec.datasets for asset in dataset_assets(dataset)]
    return materialize(assets, resources=build_resources(spec, home), instance=instance or DagsterInstance.ephemeral())


def metadata_of(result, key: list[str]) -> dict:
    """The materialization metadata of one asset, values unwrapped."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.path == key:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise KeyError(key)
