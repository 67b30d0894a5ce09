"""Asset factories, one per stage; ``dataset_assets`` makes a dataset's whole chain, ``dataset_checks``
its asset checks, ``evaluation_asset`` its on-demand recall/latency evaluation."""

from quiver.assets.checks import dataset_checks
from quiver.assets.embeddings import embeddings_asset
from quiver.assets.embeddings_fanout import embeddings_fanout_asset
from quiver.assets.evaluation import evaluation_asset
from quiver.assets.index import index_asset
from quiver.assets.rows import rows_asset
from quiver.assets.snapshot import snapshot_asset
from quiver.resources.dagster_resources import source_spec
from quiver.resources.spec import DatasetSpec

__all__ = ["dataset_assets", "dataset_checks", "evaluation_asset"]


def dataset_assets(spec: DatasetSpec) -> list:
    """source Parquet -> rows -> embeddings -> index (commit log) -> snapshot, keys under ``spec.name``;
    the embeddings as partitioned work (a graph of plan, embed per part, commit) when the spec sets
    ``embeddings.fan_out`` above 1."""
    embeddings = embeddings_fanout_asset(spec) if spec.embeddings.fan_out > 1 else embeddings_asset(spec)
    return [source_spec(spec), rows_asset(spec), embeddings, index_asset(spec), snapshot_asset(spec)]
