"""A reader process that queries without pause until the writer is done:

    python -m tests.crash.reader_loop <index root> <workdir>

Each query: refresh (a manifest stat and a listing), then one search of one of eight fixed
vectors, alternating exact and HNSW. Writes ``<workdir>/reader.json``: the number of queries, every
failure, every served seq in the order seen, and for each (served seq, query) the keys answered.
It imports only the index engine: if it ever imported DuckDB, the report says so.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from quiver.resources.index import IndexReader
from tests.crash.hash_embedder import embed

QUERIES = embed([f"reader query {i}" for i in range(8)])


def main(root: Path, work: Path) -> None:
    reader = IndexReader(root)
    queries, failures, seqs = 0, [], []
    answers: dict[str, list[int]] = {}
    started = time.monotonic()
    while not (work / "writer.done").exists() and time.monotonic() - started < 600:
        i = queries % len(QUERIES)
        exact = queries % 2 == 0
        try:
            reader.refresh()
            seq = reader.served_seq
            hits = reader.search(QUERIES[i], k=10, exact=exact)
            if not seqs or seqs[-1] != seq:
                seqs.append(seq)
            answers.setdefault(f"{seq}:{i}:{int(exact)}", hits.keys.tolist())
        except Exception:  # noqa: BLE001 - counted and reported: the test requires zero
            failures.append(traceback.format_exc(limit=3))
        queries += 1
    report = {
        "queries": queries,
        "failures": failures[:20],
        "failure_count": len(failures),
        "seqs": seqs,
        "answers": answers,
        "imported_duckdb": "duckdb" in sys.modules,
        "seconds": time.monotonic() - started,
    }
    (work / "reader.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
