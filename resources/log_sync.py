"""Bring an index directory's commit log up to DuckDB's change records. No Dagster.

This is the index asset's whole job, kept out of the asset so the crash tests run exactly this
code in a subprocess. Steps, each safe to interrupt anywhere (a rerun finishes the work):

1. A full rebuild: when asked (``force_rebuild``), or when DuckDB's embedded state was replaced
   by a rebuild (``warehouse.last_rebuild_seq``) after the last seq the index holds, the
   directory is moved aside (``<ds>.replaced-*``) and a fresh one is written from DuckDB.
2. ``store.recover()``: damaged files found and repaired from the directory alone; a log that ends
   early (a damaged or missing segment was removed) is simply behind DuckDB, so step 4 re-derives
   it from the change records (I1).
3. If the directory cannot be repaired (a damaged manifest, a damaged snapshot without a sound
   previous one), it is moved aside (``<ds>.damaged-*``, kept for inspection) and rebuilt.
4. The changes after the log's last seq, read from DuckDB, become one new segment; then directories
   a rebuild replaced are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from quiver.resources.files import remove_path
from quiver.resources.index import IndexStore, SequenceError
from quiver.resources.index.commitlog import SegmentRef
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError
from quiver.resources.index.store import REPLACED, Recovery

log = logging.getLogger(__name__)

# after -> (the net changes with seq > after, or None; DuckDB's last seq)
ReadChanges = Callable[[int], tuple[pa.Table | None, int]]


@dataclass(frozen=True)
class SyncResult:
    seq_before: int
    seq_after: int
    segment: SegmentRef | None
    records: int
    recovery: Recovery
    rebuilt: bool  # the directory was written afresh from DuckDB
    moved_aside: Path | None  # where a damaged directory went (kept for inspection)


def predates_rebuild(store: IndexStore, rebuilt_from_seq: int) -> bool:
    """True when the index holds nothing of the state a DuckDB rebuild started at that seq."""
    if rebuilt_from_seq <= 0:
        return False
    try:
        return store.last_seq() < rebuilt_from_seq
    except (IndexNotBuiltError, CorruptFileError):  # nothing to keep; recover() handles damage
        return False


def sync_log(
    store: IndexStore, read_changes: ReadChanges, rebuilt_from_seq: int = 0, force_rebuild: bool = False
) -> SyncResult:
    """Rebuild if needed, repair what is damaged, then append DuckDB's changes after the log's last seq."""
    replaced = (force_rebuild and store.root.exists()) or predates_rebuild(store, rebuilt_from_seq)
    if replaced:
        store.reset(REPLACED)
    recovery = store.recover()
    moved_aside = store.reset() if recovery.needs_rebuild else None
    after = store.last_seq()
    changes, last = read_changes(after)
    if last < after:
        raise SequenceError(
            f"dataset {store.dataset!r}: the index at {store.root} is ahead of DuckDB (log seq {after}, DuckDB seq "
            f"{last}); it belongs to another database: run the index asset with `full_rebuild: true`"
        )
    segment = None
    if changes is not None:
        segment = store.append_segment(changes, after + 1, last)
        log.info("%s: wrote segment %s (%d records)", store.dataset, segment.name, changes.num_rows)
    for path in store.set_aside(REPLACED):  # also ones a crash left after the rename
        remove_path(path)
    return SyncResult(
        seq_before=after,
        seq_after=last,
        segment=segment,
        records=changes.num_rows if changes is not None else 0,
        recovery=recovery,
        rebuilt=replaced or moved_aside is not None,
        moved_aside=moved_aside,
    )
