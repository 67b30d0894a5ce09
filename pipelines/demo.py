"""Three searches over the demo dataset, printed as tables (``make demo`` runs this)."""

from __future__ import annotations

import sys

from quiver.pipelines.cli import format_table
from quiver.pipelines.query import search

QUERIES = ("python web framework", "play chess against the computer", "encrypt files with a password")


def main(dataset: str = "packages") -> int:
    for text in QUERIES:
        table = search(dataset, text, k=5, columns=["package", "short_description"])
        print(f'\n{dataset}: "{text}"')
        print(format_table(table.to_pylist()))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
