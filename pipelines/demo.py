"""Searches over the demo dataset, printed as tables (``make demo`` runs this).

Three questions in plain words, then a package name typed as is, searched by the vectors alone and
hybrid (the default for text): the model blurs a rare name, the full-text pass finds it first.
"""

from __future__ import annotations

import sys

from quiver.pipelines.cli import format_table
from quiver.pipelines.query import search

QUERIES = ("python web framework", "play chess against the computer", "encrypt files with a password")
NAME = "freebayes"  # a package of the demo data that the vectors alone do not put first
SHOWN = {
    "vector": ["pkg_id", "score", "package", "short_description"],
    "hybrid": ["pkg_id", "fused_score", "vector_rank", "text_rank", "package", "short_description"],
}


def main(dataset: str = "packages") -> int:
    for text in QUERIES:
        _show(dataset, text, "hybrid", k=5)
    for mode in ("vector", "hybrid"):
        _show(dataset, NAME, mode, k=3)
    return 0


def _show(dataset: str, text: str, mode: str, k: int) -> None:
    table = search(dataset, text, k=k, columns=["package", "short_description"], mode=mode)
    print(f'\n{dataset}: "{text}" (mode {mode})')
    print(format_table(table.select(SHOWN[mode]).to_pylist()))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
