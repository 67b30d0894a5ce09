"""Names whose modules are slow to import, loaded on first use (PEP 562): the query path's.

A process that only answers queries by vector never needs the embedding model's code nor the
validated spec (pydantic, about 90 ms to import), and a new process's first answer waits on
every import it makes. ``quiver.resources.search`` reaches them through this module's attributes.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "get_embedder":
        from quiver.resources.embedding import get_embedder

        return get_embedder
    if name == "load_spec":
        from quiver.resources.spec import load_spec

        return load_spec
    if name == "remote":  # an index root on a bucket: object storage's client, only where one is used
        from quiver.resources.index import remote

        return remote
    raise AttributeError(f"module 'quiver.resources.deferred' has no attribute {name!r}")
