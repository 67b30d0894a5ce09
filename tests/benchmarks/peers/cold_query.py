"""A new process that answers one query and says when: quiver's helper or raw usearch.

    .venv/bin/python tests/benchmarks/peers/cold_query.py quiver|usearch PATH VECTOR.npy

quiver: ``PATH`` is unused (QUIVER_HOME and QUIVER_DATASETS place the index); the helper opens the
manifest, maps the snapshot and replays the segments after it. usearch: ``PATH`` is the index
file, viewed (memory-mapped) as quiver does. Prints JSON with the wall-clock time of the answer,
so the caller can count from the moment it started this process.
"""

import time

STARTED = time.time()

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np


def main() -> None:
    system, path, vector_file = sys.argv[1:4]
    vector = np.load(vector_file)
    imported = opened = time.perf_counter()
    if system == "quiver":
        from quiver.pipelines import search

        imported = time.perf_counter()
        hits = search("bench", vector, k=10, ef_search=64).num_rows
    else:
        from usearch.index import Index

        imported = time.perf_counter()
        hits = len(Index.restore(path, view=True).search(vector, 10).keys)
    answered = time.perf_counter()
    print(
        json.dumps(
            {
                "process_started_at": STARTED,
                "answered_at": time.time(),
                "hits": hits,
                "import_s": imported - opened,
                "open_and_query_s": answered - imported,
            }
        )
    )


if __name__ == "__main__":
    main()
