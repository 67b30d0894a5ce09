"""Asset factories, one per stage; ``dataset_assets`` makes a dataset's whole chain, ``dataset_checks``
its asset checks, ``evaluation_asset`` its on-demand recall/latency evaluation."""

from assets.checks import dataset_checks
from assets.embeddings import embeddings_asset
from assets.evaluation import evaluation_asset
from assets.index import index_asset
from assets.naming import source_spec
from assets.rows import rows_asset
from assets.snapshot import snapshot_asset
from pipelines.spec import DatasetSpec

__all__ = ["dataset_assets", "dataset_checks", "evaluation_asset"]


def dataset_assets(spec: DatasetSpec) -> list:
    """source Parquet -> rows -> embeddings -> index (commit log) -> snapshot, keys under ``spec.name``."""
    return [source_spec(spec), rows_asset(spec), embeddings_asset(spec), index_asset(spec), snapshot_asset(spec)]
