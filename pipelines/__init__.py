"""quiver's Dagster project: definitions, jobs, schedules, the dataset spec, the command line,
and the query helper ``search`` (``from pipelines import search``).

Importing this package stays light (no Dagster, no torch): the helper loads what it needs on use.
"""

from pipelines.query import search, search_batch

__all__ = ["search", "search_batch"]
