"""The engine, and below it the dataset spec; above it, in ``dagster_resources``, the thin Dagster layer.

Bottom to top: ``spec`` and ``spec_file`` (the dataset spec, the engine's input), ``faults``, ``files``, ``values``
(formats and primitives) -> ``index``, ``warehouse``, ``embedding``, ``health``, ``search``,
``log_sync``, ``embed_refresh``, ``deferred`` (the engine; no Dagster) -> ``dagster_resources`` (the Dagster
resources and asset names, the one module here that imports Dagster).
``tests/test_layers.py`` holds every import to that order.
"""
