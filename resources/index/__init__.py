"""The index engine: commit log, snapshots, manifest, writer and reader. No Dagster here.

``IndexStore`` writes one index directory, ``IndexReader`` serves it, ``read_stats`` reads the
numbers a snapshot policy needs from the manifest and a directory listing alone.
"""

from quiver.resources.index.errors import (
    CorruptFileError,
    IdentityMismatchError,
    IndexBusyError,
    IndexNotBuiltError,
    SequenceError,
)
from quiver.resources.index.identity import HnswParams, IndexIdentity
from quiver.resources.index.reader import IndexReader
from quiver.resources.index.store import IndexStore, LogStats, SnapshotResult, read_stats

__all__ = [
    "CorruptFileError",
    "HnswParams",
    "IdentityMismatchError",
    "IndexBusyError",
    "IndexIdentity",
    "IndexNotBuiltError",
    "IndexReader",
    "IndexStore",
    "LogStats",
    "SequenceError",
    "SnapshotResult",
    "read_stats",
]
