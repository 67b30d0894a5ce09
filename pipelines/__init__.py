"""The top layer: the one Definitions, jobs, schedules, the command line, HTTP and SQL surfaces,
and the query helpers ``search``/``search_batch`` (also at ``quiver.search``).

The dataset spec lives in the engine (``quiver.resources.spec``, its input); it is re-exported
here for the Dagster layer's users. Importing this package stays light (no Dagster, no torch).
"""

from quiver.pipelines.query import search, search_batch
from quiver.resources.spec_file import SpecError, UnknownDatasetError

__all__ = ["DatasetSpec", "QuiverSpec", "SpecError", "UnknownDatasetError", "load_spec", "search", "search_batch"]

# The validated spec's names load pydantic (about 90 ms): on first access, so that a process that
# only queries (``from quiver import search``) answers its first query sooner.
_SPEC_NAMES = ("DatasetSpec", "QuiverSpec", "load_spec")


def __getattr__(name: str):
    if name in _SPEC_NAMES:
        from quiver.resources import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'quiver.pipelines' has no attribute {name!r}")
