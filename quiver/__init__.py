"""quiver: durable, fresh and fast vector search over DuckDB data, run by Dagster.

The public API, importable from here without loading Dagster or torch:

    from quiver import search
    search("packages", "a tiling window manager", k=5, columns=["package"])

``search``/``search_batch`` answer queries from the freshest index, ``SearchError`` and
``UnknownDatasetError`` are what a bad query raises, ``load_spec`` reads the dataset spec
(``QuiverSpec``, ``DatasetSpec``; a bad one raises ``SpecError``), and ``defs`` is the project's
Dagster ``Definitions`` (loaded on first access: ``quiver.pipelines.definitions``).
The packages beneath: ``quiver.resources`` (the spec, the engine, the Dagster resources),
``quiver.assets``, ``quiver.sensors``, ``quiver.pipelines`` (definitions, jobs, command line, HTTP, SQL).
"""

from quiver.pipelines.query import search, search_batch
from quiver.resources.search import SearchError
from quiver.resources.spec_file import SpecError, UnknownDatasetError

__all__ = [
    "DatasetSpec", "QuiverSpec", "SearchError", "SpecError", "UnknownDatasetError", "defs", "load_spec",
    "search", "search_batch",
]


# The validated spec's names load pydantic (about 90 ms): on first access, so that a process that
# only queries (``from quiver import search``) answers its first query sooner.
_SPEC_NAMES = ("DatasetSpec", "QuiverSpec", "load_spec")


def __getattr__(name: str):
    if name in _SPEC_NAMES:
        from quiver.resources import spec

        return getattr(spec, name)
    # The Definitions load Dagster (seconds): only when asked for.
    if name == "defs":
        from quiver.pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'quiver' has no attribute {name!r}")
