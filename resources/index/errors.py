"""Errors of the index engine. Each message names the index directory or file and the fix."""

from __future__ import annotations


class IndexError_(Exception):
    """Base class for index-engine errors (named so it does not shadow the builtin IndexError)."""


class IdentityMismatchError(IndexError_, ValueError):
    """The index on disk was built with another dimension, metric, dtype or model (I6)."""


class IndexNotBuiltError(IndexError_, FileNotFoundError):
    """There is no index directory (or no manifest) yet."""


class CorruptFileError(IndexError_, ValueError):
    """A published file fails its size, checksum or header check; it is never served."""


class SequenceError(IndexError_, ValueError):
    """A segment would break the log's monotonic sequence numbers."""


class IndexBusyError(IndexError_, RuntimeError):
    """Another writer holds the index directory's lock."""


class UnsupportedFormatError(IndexError_, ValueError):
    """The directory was written by a newer quiver; it is refused and never modified."""


class SnapshotUnrecoverableError(CorruptFileError):
    """The published snapshot is damaged and no previous snapshot with its segments can replace it."""
