"""Asset factories, one per stage; ``dataset_assets`` makes a dataset's whole chain, ``dataset_checks``
its asset checks, ``evaluation_asset`` its on-demand recall/latency evaluation."""

from quiver.assets.checks import dataset_checks
from quiver.assets.embeddings import embeddings_asset
from quiver.assets.evaluation import evaluation_asset
from quiver.assets.index import index_asset
from quiver.assets.rows import rows_asset
from quiver.assets.snapshot import snapshot_asset
from quiver.resources.dagster_resources import source_spec
from quiver.resources.spec import DatasetSpec

__all__ = ["dataset_assets", "dataset_checks", "evaluation_asset"]


def dataset_assets(spec: DatasetSpec) -> list:
    """source Parquet -> rows -> embeddings -> index (commit log) -> snapshot, keys under ``spec.name``."""
    return [source_spec(spec), rows_asset(spec), embeddings_asset(spec), index_asset(spec), snapshot_asset(spec)]
