"""Command line over the query helper and the index state, for people and scripts.

    python -m quiver search DATASET "text" [--mode hybrid|vector|text] [--keywords WORDS] [--k 10] [--columns a,b]
                                          [--where SQL] [--ef-search N] [--chunks] [--json]
    python -m quiver status [DATASET] [--json]
    python -m quiver validate [DATASET ...]                  (the spec, the sources' columns, the model: one line per problem)
    python -m quiver serve [--host 127.0.0.1] [--port 8000] [--api-keys-file F] [--max-limit N] [--timeout S] ...
                                                              (HTTP, see quiver.pipelines.http_api)
    python -m quiver refresh [DATASET ...] [--no-snapshot]    (the refresh jobs, through Dagster: quiver.pipelines.runner)

``search`` prints the columns of its mode, best first: ``hybrid`` (the default when the dataset has a
full-text index: vectors and full text fused by reciprocal rank) ``pk, fused_score, score, distance,
text_score, vector_rank, text_rank``; ``vector`` (the default otherwise) ``pk, score, distance``;
``text`` (BM25 alone) ``pk, score``; then the served columns. ``--keywords``: the words the text pass
searches instead of the query text (an identifier, a product code).

``refresh`` loads Dagster; the other commands never do (``runner`` is a lazy module attribute).
Errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

import pyarrow as pa

from quiver.pipelines.http_api import serve
from quiver.pipelines.query import search
from quiver.resources.index import read_stats
from quiver.resources.index.manifest import manifest_path, read_manifest
from quiver.resources.index.remote import index_dir_for
from quiver.resources.index.snapshot import distinct_rows
from quiver.resources.index.snapshot_policy import SnapshotPolicy, decide
from quiver.resources.preflight import preflight
from quiver.resources.search import MODES
from quiver.resources.spec import SpecError, default_home, load_spec
from quiver.resources.spec_file import default_index_root
from quiver.resources.values import dumps, format_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quiver", description="quiver: query and inspect indexes")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="top-k rows for a text")
    s.add_argument("dataset")
    s.add_argument("text")
    s.add_argument(
        "--mode",
        choices=MODES,
        help="hybrid: vectors and full text fused (the default when the dataset has a full-text index); "
        "vector: the vectors alone (the default otherwise); text: the full-text index alone (BM25)",
    )
    s.add_argument("--keywords", metavar="WORDS", help="what the text pass searches instead of TEXT (hybrid or text mode)")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--columns", help="comma-separated served columns (default: all); chunk, chunk_number, chunk_start, chunk_end: the matching chunk")
    s.add_argument("--where", help="SQL predicate over served columns, e.g. \"section = 'python'\"")
    s.add_argument("--ef-search", type=_positive, help="HNSW ef_search for this query (default: the spec's)")
    s.add_argument("--chunks", action="store_true", help="the k best chunks (a long row may repeat), not k rows")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st = sub.add_parser("status", help="snapshot, log and file counts per dataset")
    st.add_argument("dataset", nargs="?")
    st.add_argument("--json", action="store_true")
    va = sub.add_parser("validate", help="check the spec, each source and the model before any work: one line per problem")
    va.add_argument("datasets", nargs="*", help="default: every dataset of the spec")
    rf = sub.add_parser("refresh", help="embed what changed (each dataset's refresh job), then snapshot when due")
    rf.add_argument("datasets", nargs="*", help="default: every dataset of the spec")
    rf.add_argument("--no-snapshot", action="store_true", help="leave folding the log to the snapshot sensor")
    sv = sub.add_parser("serve", help="HTTP search API (Spice's POST /v1/search)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-keys-file", help="API keys, one a line (default: $QUIVER_API_KEYS_FILE); needed off loopback")
    sv.add_argument("--max-body-bytes", type=_positive, help="413 above it (default: $QUIVER_MAX_BODY_BYTES, else 65536)")
    sv.add_argument("--max-limit", type=_positive, help="largest \"limit\" (default: $QUIVER_MAX_LIMIT, else 1000)")
    sv.add_argument("--max-text-chars", type=_positive, help="longest text or keywords (default: $QUIVER_MAX_TEXT_CHARS, else 10000)")
    sv.add_argument("--timeout", type=_seconds, help="504 past it, in seconds (default: $QUIVER_TIMEOUT_S, else 30)")
    sv.add_argument("--workers", type=_positive, help="requests in progress at once (default: $QUIVER_WORKERS, else 32, or the cores if more)")
    sv.add_argument("--embed-batch", type=_positive, help="query texts per embedder call (default: $QUIVER_EMBED_BATCH, else 8; 1: each query alone)")
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _search(args) -> int:
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    table: pa.Table = search(
        args.dataset, args.text, k=args.k, columns=columns, where=args.where, ef_search=args.ef_search,
        group=not args.chunks, mode=args.mode, keywords=args.keywords,
    )
    rows = table.to_pylist()
    print(dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def _serve(args) -> int:
    serve(
        args.host, args.port, args.api_keys_file, max_body_bytes=args.max_body_bytes, max_limit=args.max_limit,
        max_text_chars=args.max_text_chars, timeout_s=args.timeout, workers=args.workers,
        embed_batch=args.embed_batch,
    )
    return 0


def dataset_status(spec, home) -> dict:
    root = index_dir_for(home, default_index_root(), spec.name)
    if not manifest_path(root).exists():
        return {"dataset": spec.name, "index": str(root), "built": False}
    manifest, stats = read_manifest(root), read_stats(root)
    decision = decide(stats, SnapshotPolicy.from_spec(spec.snapshots))  # what the sensor decides on any tick but its first
    return {
        "dataset": spec.name,
        "index": str(root),
        "built": True,
        "identity": manifest.identity.to_dict(),
        "snapshot_seq": stats.snapshot_seq,
        "snapshot_vectors": stats.snapshot_vectors,  # one per chunk: a long row is several
        "snapshot_rows": distinct_rows(root, manifest.snapshot, manifest.primary_key) if manifest.snapshot else 0,
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


def _validate(args) -> int:
    """Exit 0 when every dataset can be refreshed, else 2 with one line per problem on stderr."""
    spec = load_spec()
    datasets = [spec.get(name) for name in args.datasets] if args.datasets else list(spec.datasets)
    failed = False  # the spec's warnings are logged as it loads
    for dataset in datasets:
        problems = preflight(dataset)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"ok: dataset {dataset.name!r}: {dataset.source_path}, model {dataset.embeddings.identity}")
        failed = failed or bool(problems)
    return 2 if failed else 0


def _status(args) -> int:
    spec, home = load_spec(), default_home()
    datasets = [spec.get(args.dataset)] if args.dataset else list(spec.datasets)
    states = [dataset_status(d, home) | {"problems": preflight(d)} for d in datasets]
    if args.json:
        print(dumps(states, indent=2))
    else:
        for state in states:
            print(f"{state['dataset']}:")
            for name, value in state.items():
                if name not in ("dataset", "problems"):
                    print(f"  {name:30} {value}")
    problems = [p for state in states for p in state["problems"]]
    for problem in problems:  # what stops the next refresh: on stderr, and the exit code says so
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _refresh(args) -> int:
    runner = sys.modules[__name__].runner  # loads Dagster and the definitions (see the module doc)
    spec = load_spec()
    datasets = args.datasets or list(spec.names)
    for name in datasets:
        spec.get(name)  # an unknown name fails here, before anything runs
    with runner.open_instance() as instance:
        runner.refresh(spec, datasets, instance, snapshot=not args.no_snapshot)
    return 0


def __getattr__(name: str):
    """``runner``, imported on first use: only ``refresh`` needs Dagster (about a second to import)."""
    if name == "runner":
        from quiver.pipelines import runner

        return runner
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "search" and args.keywords is not None and args.mode == "vector":
        parser.error("--keywords are what the text pass searches: use them with --mode hybrid or text (or leave --mode out)")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "refresh":
            return _refresh(args)
        if args.command == "validate":
            return _validate(args)
        return _search(args) if args.command == "search" else _status(args)
    except (SpecError, ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
