"""The Dagster layer of the resources: the only package under ``resources/`` that imports Dagster.

``resources`` holds the ``ConfigurableResource`` classes over the engine; ``naming`` the asset keys
and tags that assets, checks, sensors and jobs share.
"""
