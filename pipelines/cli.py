"""Command line over the query helper and the index state, for people and scripts.

    python -m pipelines search DATASET "text" [--k 10] [--columns a,b] [--where SQL] [--ef-search N] [--json]
    python -m pipelines status [DATASET] [--json]
    python -m pipelines serve [--host 127.0.0.1] [--port 8000]   (HTTP, see pipelines.http_api)

Materializing goes through Dagster itself (``dagster asset materialize -m pipelines.definitions``).
Errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa

from pipelines.query import search
from pipelines.spec import SpecError, default_home, load_spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="quiver: query and inspect indexes")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="top-k rows for a text")
    s.add_argument("dataset")
    s.add_argument("text")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--columns", help="comma-separated served columns (default: all)")
    s.add_argument("--where", help="SQL predicate over served columns, e.g. \"section = 'python'\"")
    s.add_argument("--ef-search", type=_positive, help="HNSW ef_search for this query (default: the spec's)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st = sub.add_parser("status", help="snapshot, log and file counts per dataset")
    st.add_argument("dataset", nargs="?")
    st.add_argument("--json", action="store_true")
    sv = sub.add_parser("serve", help="HTTP search API (Spice's POST /v1/search)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _jsonable(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def format_table(rows: list[dict], max_width: int = 60) -> str:
    if not rows:
        return "(no rows)"
    names = list(rows[0])

    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        text = text.replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(row[n]) for n in names] for row in rows]
    widths = [max(len(n), *(len(r[i]) for r in cells)) for i, n in enumerate(names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(names), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _search(args) -> int:
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    table: pa.Table = search(
        args.dataset, args.text, k=args.k, columns=columns, where=args.where, ef_search=args.ef_search
    )
    rows = [{k: _jsonable(v) for k, v in row.items()} for row in table.to_pylist()]
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_table(rows))
    return 0


def _serve(args) -> int:
    from pipelines.http_api import serve

    serve(args.host, args.port)
    return 0


def dataset_status(spec, home) -> dict:
    from resources.index import read_stats
    from resources.index.manifest import manifest_path, read_manifest
    from sensors.snapshot_policy import decide
    from sensors.snapshot_sensor import policy_for

    root = home / spec.name
    if not manifest_path(root).exists():
        return {"dataset": spec.name, "index": str(root), "built": False}
    manifest, stats = read_manifest(root), read_stats(root)
    decision = decide(stats, policy_for(spec))  # what the sensor decides on any tick but its first
    return {
        "dataset": spec.name,
        "index": str(root),
        "built": True,
        "identity": manifest.identity.to_dict(),
        "snapshot_seq": stats.snapshot_seq,
        "snapshot_vectors": stats.snapshot_vectors,
        "snapshot_tombstones": stats.snapshot_tombstones,
        "snapshot_bytes": stats.snapshot_bytes,
        "snapshot_age_seconds": round(stats.snapshot_age_seconds, 1) if stats.snapshot_age_seconds is not None else None,
        "segments_after_snapshot": stats.segments,
        "segment_bytes_after_snapshot": stats.segment_bytes,
        "segment_records_after_snapshot": stats.segment_records,
        "last_seq": stats.last_seq,
        "files": stats.files,
        "snapshot_due": decision.due,
        "snapshot_decision": decision.reason,
        "next_snapshot": decision.outlook,
    }


def _status(args) -> int:
    spec, home = load_spec(), default_home()
    datasets = [spec.get(args.dataset)] if args.dataset else list(spec.datasets)
    states = [dataset_status(d, home) for d in datasets]
    if args.json:
        print(json.dumps(states, indent=2))
    else:
        for state in states:
            print(f"{state['dataset']}:")
            for name, value in state.items():
                if name != "dataset":
                    print(f"  {name:30} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return _search(args) if args.command == "search" else _status(args)
    except (SpecError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
