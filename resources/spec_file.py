"""Where the dataset spec lives and what it names, read without validating it (no pydantic).

The query helper's first answer in a new process waits on whatever it imports, and validating a
spec means importing pydantic (about 90 ms). Serving needs only the dataset names (to refuse an
unknown one) and, for the ``chunk`` result column, each dataset's embedded columns, which it takes
from the validated spec (``spec.load_spec``) the first time it needs them. Both read the file here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

ENV_DATASETS, ENV_HOME = "QUIVER_DATASETS", "QUIVER_HOME"
# Where the index directories live (default: QUIVER_HOME), and where readers cache one on a bucket.
ENV_INDEX_ROOT, ENV_INDEX_CACHE = "QUIVER_INDEX_ROOT", "QUIVER_INDEX_CACHE"
# libyaml's loader where installed (PyYAML wheels ship it): 10x the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecError(ValueError):
    """A mistake in the dataset spec; ``problems`` holds one line per mistake."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class UnknownDatasetError(SpecError, KeyError):
    """A dataset name that the spec does not define."""

    __str__ = ValueError.__str__  # KeyError would repr() the message


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_spec_path() -> Path:
    """``$QUIVER_DATASETS``, else ``datasets.yaml`` at the project root."""
    return Path(os.environ.get(ENV_DATASETS) or _project_root() / "datasets.yaml").expanduser()


def default_home() -> Path:
    """``$QUIVER_HOME``, else ``.quiver/`` at the project root."""
    home = os.environ.get(ENV_HOME)
    if home and home.startswith("s3://"):
        raise SpecError(
            f"{ENV_HOME}={home}: the home holds the DuckDB file, which must be on a local disk; keep {ENV_HOME} local "
            f"and put the index on the bucket with {ENV_INDEX_ROOT}={home}"
        )
    return Path(home or _project_root() / ".quiver").expanduser()


def default_index_root() -> str | None:
    """``$QUIVER_INDEX_ROOT`` (a directory or an ``s3://bucket/prefix`` URL), else None: the home."""
    return os.environ.get(ENV_INDEX_ROOT) or None


def default_index_cache() -> Path:
    """``$QUIVER_INDEX_CACHE``, else ``~/.cache/quiver/index``: readers' copies of indexes on a bucket."""
    return Path(os.environ.get(ENV_INDEX_CACHE) or Path.home() / ".cache" / "quiver" / "index").expanduser()


def read_spec_yaml(path: str | Path | None = None) -> tuple[Any, Path]:
    """The spec file's parsed YAML and its resolved path (default: :func:`default_spec_path`)."""
    path = Path(path).expanduser() if path is not None else default_spec_path()
    path = path.resolve()
    if not path.is_file():
        raise SpecError(f"dataset spec not found: {path}; create it or set {ENV_DATASETS} to its path")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER), path
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from exc


def dataset_names(path: str | Path | None = None) -> tuple[str, ...]:
    """The names of the spec's datasets, in order, as written (a quiver spec and a spicepod both
    list them under ``datasets:`` with ``name:``); the spec is not validated."""
    data, path = read_spec_yaml(path)
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SpecError(f"{path}: the top level must be a mapping with a `datasets:` list")
    return tuple(e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str))
