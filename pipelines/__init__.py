"""The top layer: the one Definitions, jobs, schedules, the command line, HTTP and SQL surfaces,
and the query helpers ``search``/``search_batch`` (also at ``quiver.search``).

The dataset spec lives in the engine (``quiver.resources.spec``, its input); it is re-exported
here for the Dagster layer's users. Importing this package stays light (no Dagster, no torch).
"""

from quiver.pipelines.query import search, search_batch
from quiver.resources.spec import DatasetSpec, QuiverSpec, SpecError, UnknownDatasetError, load_spec

__all__ = ["DatasetSpec", "QuiverSpec", "SpecError", "UnknownDatasetError", "load_spec", "search", "search_batch"]
