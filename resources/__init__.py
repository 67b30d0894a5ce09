"""The engine, and below it the dataset spec; above it, in ``dagster/``, the thin Dagster resources.

Bottom to top: ``spec`` (the dataset spec, the engine's input), ``faults``, ``files``, ``values``
(formats and primitives) -> ``index``, ``warehouse``, ``embedding``, ``health``, ``search``,
``log_sync`` (the engine; no Dagster) -> ``dagster`` (the Dagster resources and asset names).
``tests/test_layers.py`` holds every import to that order.
"""
