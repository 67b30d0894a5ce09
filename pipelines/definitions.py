"""This project's own ``Definitions``: every dataset of the spec, side by side.

``QUIVER_DATASETS`` names the spec and ``QUIVER_HOME`` the state directory (see quiver.resources.spec);
``QUIVER_EXECUTOR`` the executor of the jobs (in_process by default; see quiver.pipelines.jobs).
The assembly itself is ``build_definitions`` in quiver.pipelines.component, which QuiverComponent
also calls when a Dagster user's project loads quiver from a ``defs.yaml``: one code path, two ways
in. Importing this module reads the spec; importing the component's does not.
"""

from __future__ import annotations

from quiver.pipelines.component import DUCKDB_FILE, build_definitions, build_resources
from quiver.resources.spec import default_home, load_spec

__all__ = ["DUCKDB_FILE", "build_definitions", "build_resources", "defs"]

defs = build_definitions(load_spec(), default_home())
