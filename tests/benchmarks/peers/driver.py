"""Runs every measure on quiver, DuckDB vss and raw usearch in one run, then prints one table.

Order per run: corpus -> builds (repeated, systems interleaved so machine load hits each alike)
-> queries -> 3 update rounds -> cold starts -> quiver's snapshot after the rounds -> the vss
crash experiment -> embedding rows/s. The vss side runs as a subprocess in ``.venv-peers``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.benchmarks.peers import corpus as corpora
from tests.benchmarks.peers.quiver_side import PARAMS, QuiverSide
from tests.benchmarks.peers.report import build_table, render
from tests.benchmarks.peers.stats import latency, spread
from tests.benchmarks.peers.usearch_side import UsearchSide

ROOT = Path(__file__).resolve().parents[3]
PEERS_PYTHON = Path(os.environ.get("BENCH_PEERS_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))
VSS_SIDE = Path(__file__).with_name("vss_side.py")
COLD_QUERY = Path(__file__).with_name("cold_query.py")
CRASH_ROWS = 20_000  # the vss crash runs on its own table of at most this many base rows


@dataclass(frozen=True)
class Size:
    source: str  # real | synthetic
    rows: int
    changes: int  # inserts, updates and deletes per round, each
    queries: int
    builds: int  # build repetitions
    passes: int  # query passes over all queries
    colds: int  # cold-start repetitions
    dtypes: bool  # also build quiver at f16, i8 and without keep_previous for the size figures
    rounds: int = 3


SIZES = {
    "small": Size("real", 2_000, 100, 50, builds=3, passes=3, colds=3, dtypes=True),
    "medium": Size("synthetic", 100_000, 1_000, 200, builds=2, passes=3, colds=3, dtypes=True),
    "large": Size("synthetic", 1_000_000, 1_000, 200, builds=1, passes=2, colds=3, dtypes=False),
}


def chosen_size() -> tuple[str, Size]:
    name = os.environ.get("BENCH_SIZE", "small")
    if name not in SIZES:
        raise SystemExit(f"BENCH_SIZE must be one of {', '.join(SIZES)} (got {name!r})")
    size = SIZES[name]
    overrides = {
        key: int(os.environ[f"BENCH_{key.upper()}"])
        for key in ("rows", "builds", "dtypes")
        if f"BENCH_{key.upper()}" in os.environ
    }
    if "BENCH_SOURCE" in os.environ:
        overrides["source"] = os.environ["BENCH_SOURCE"]
    return name, Size(**(asdict(size) | overrides))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_vss(job: dict, work: Path, timeout: float = 3600) -> dict:
    """Run one vss_side action in .venv-peers; its result, or the error it died with."""
    job_file, out = work / f"job-{job['action']}.json", work / f"out-{job['action']}.json"
    job_file.write_text(json.dumps(job))
    out.unlink(missing_ok=True)
    started = time.time()
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(VSS_SIDE), str(job_file), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 and job["action"] != "crash_writer":
        raise RuntimeError(f"vss_side {job['action']} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(out.read_text()) if out.exists() else {}
    return result | {"returncode": proc.returncode, "spawned_at": started}


def write_rows(rows: corpora.Rows, path: Path) -> str:
    pq.write_table(rows.to_arrow(), path)
    return str(path)


def build_all(size: Size, corpus: corpora.Corpus, work: Path) -> tuple[dict, QuiverSide, UsearchSide, str]:
    base = write_rows(corpus.base, work / "base.parquet")
    results = {"quiver": [], "quiver_load": [], "vss": [], "usearch": []}
    for repetition in range(size.builds):
        progress(f"build {repetition + 1}/{size.builds}: quiver")
        quiver = QuiverSide(work / f"quiver-{repetition}", corpus)
        results["quiver_load"].append(quiver.load())
        results["quiver"].append(quiver.build())
        progress(f"build {repetition + 1}/{size.builds}: vss")
        vss_db = str(work / f"vss-{repetition}.duckdb")
        job = {
            "action": "build",
            "db": vss_db,
            "rows": base,
            "dim": corpora.DIM,
            "m": PARAMS.m,
            "ef_construction": PARAMS.ef_construction,
        }
        results["vss"].append(run_vss(job, work))
        progress(f"build {repetition + 1}/{size.builds}: usearch")
        raw = UsearchSide(work / f"usearch-{repetition}.usearch")
        results["usearch"].append(raw.build(corpus.base))
        if repetition < size.builds - 1:  # keep only the last build's state on disk
            shutil.rmtree(quiver.home)
            for path in Path(vss_db).parent.glob(Path(vss_db).name + "*"):
                path.unlink()
    return results, quiver, raw, vss_db


VARIANTS = {  # label -> QuiverSide options, for the size figures (the default is f32, no fallback copy)
    "an f16 index": {"dtype": "f16"},
    "an i8 index": {"dtype": "i8"},
    "an f32 index, snapshots.keep_previous: true": {"keep_previous": True},
}


def variant_sizes(corpus: corpora.Corpus, work: Path) -> dict:
    """quiver's state (DuckDB file + index directory) after a build, and its recall@10 against exact
    search (one pass of the queries through the helper), for each of ``VARIANTS``."""
    truth = corpora.exact_top_k(corpus.base, corpus.queries, 10)
    out = {}
    for label, options in VARIANTS.items():
        progress(f"quiver with {label}")
        side = QuiverSide(work / f"quiver-variant-{len(out)}", corpus, **options)
        side.load()
        out[label] = side.build()["bytes"] | {"recall_at_10": corpora.recall(side.query(corpus.queries, 1)["found"], truth)}
        shutil.rmtree(side.home)
    return out


def queries_all(
    size: Size, corpus: corpora.Corpus, quiver: QuiverSide, raw: UsearchSide, vss_db: str, work: Path
) -> dict:
    truth = corpora.exact_top_k(corpus.base, corpus.queries, 10)
    np.save(work / "queries.npy", corpus.queries)
    progress("queries: quiver")
    results = {"quiver": quiver.query(corpus.queries, size.passes)}
    progress("queries: vss")
    job = {
        "action": "query",
        "db": vss_db,
        "queries": str(work / "queries.npy"),
        "ef_search": PARAMS.ef_search,
        "k": 10,
        "passes": size.passes,
    }
    results["vss"] = run_vss(job, work)
    progress("queries: usearch")
    results["usearch"] = raw.query(corpus.queries, size.passes)
    for result in results.values():
        result["latency"] = latency(result["passes"])
        result["recall_at_10"] = corpora.recall(result["found"], truth)
        del result["found"], result["passes"]
    results["quiver"]["reader_latency"] = latency(results["quiver"].pop("reader_passes"))
    return results


def updates_all(corpus: corpora.Corpus, quiver: QuiverSide, vss_db: str, work: Path) -> dict:
    files = []
    for number, change in enumerate(corpus.rounds):
        deletes = corpora.Rows(
            change.deletes, [""] * len(change.deletes), np.zeros((len(change.deletes), corpora.DIM), np.float32)
        )
        files.append(
            {
                kind: write_rows(rows, work / f"round{number}-{kind}.parquet")
                for kind, rows in (("inserts", change.inserts), ("updates", change.updates), ("deletes", deletes))
            }
        )
    progress("update rounds: quiver")
    results = {"quiver": [quiver.update_round(change) for change in corpus.rounds]}
    progress("update rounds: vss")
    results["vss"] = run_vss({"action": "update", "db": vss_db, "dim": corpora.DIM, "rounds": files}, work)
    results["changed_per_round"] = corpus.rounds[0].changed
    results["raw_bytes_per_round"] = [change.raw_bytes() for change in corpus.rounds]
    return results


def queries_after_updates(corpus: corpora.Corpus, quiver: QuiverSide, vss_db: str, work: Path) -> dict:
    """One pass after the rounds: recall against exact search over the live rows, and short answers."""
    truth = corpora.exact_top_k(corpus.live_after_rounds(), corpus.queries, 10)
    job = {"action": "query", "db": vss_db, "queries": str(work / "queries.npy"), "ef_search": PARAMS.ef_search}
    found = {
        "quiver": quiver.query(corpus.queries, 1)["found"],
        "vss": run_vss(job | {"k": 10, "passes": 1}, work)["found"],
    }
    return {
        name: {
            "recall_at_10": corpora.recall(hits, truth),
            "short_answers": sum(len(h) < 10 for h in hits),
            "queries": len(hits),
        }
        for name, hits in found.items()
    }


def cold_all(size: Size, corpus: corpora.Corpus, quiver: QuiverSide, raw: UsearchSide, vss_db: str, work: Path) -> dict:
    """New process -> first answered query, counted from the moment this driver spawns it."""
    np.save(work / "cold.npy", corpus.queries[0])
    env = os.environ | {"QUIVER_HOME": str(quiver.home), "QUIVER_DATASETS": str(quiver.spec)}
    results = {"quiver": [], "usearch": [], "vss": []}
    for _ in range(size.colds):
        for name, path in (("quiver", ""), ("usearch", str(raw.path))):
            started = time.time()
            proc = subprocess.run(
                [sys.executable, str(COLD_QUERY), name, path, str(work / "cold.npy")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name].append(result | {"seconds": result["answered_at"] - started})
        job = {"action": "cold", "db": vss_db, "vector": corpus.queries[0].tolist(), "ef_search": PARAMS.ef_search}
        result = run_vss(job, work)
        results["vss"].append(result | {"seconds": result["answered_at"] - result["spawned_at"]})
    return {name: {"seconds": spread([r["seconds"] for r in runs]), "runs": runs} for name, runs in results.items()}


def crash_vss(corpus: corpora.Corpus, work: Path) -> dict:
    """Commit inserts, SIGKILL before a checkpoint, then reopen a copy with and without vss loaded first."""
    crash_dir = work / "crash"
    crash_dir.mkdir()
    base = corpora.Rows(corpus.base.pks[:CRASH_ROWS], corpus.base.texts[:CRASH_ROWS], corpus.base.vectors[:CRASH_ROWS])
    inserts = corpus.rounds[0].inserts
    db = str(crash_dir / "crash.duckdb")
    build = {
        "action": "build",
        "db": db,
        "rows": write_rows(base, crash_dir / "base.parquet"),
        "dim": corpora.DIM,
        "m": PARAMS.m,
        "ef_construction": PARAMS.ef_construction,
    }
    run_vss(build, crash_dir)
    marker = crash_dir / "committed.json"
    killed = run_vss(
        {
            "action": "crash_writer",
            "db": db,
            "dim": corpora.DIM,
            "inserts": write_rows(inserts, crash_dir / "inserts.parquet"),
            "committed_marker": str(marker),
        },
        crash_dir,
    )
    np.save(crash_dir / "inserted.npy", inserts.vectors)
    out = {
        "base_rows": len(base),
        "inserted": len(inserts),
        "writer_returncode": killed["returncode"],
        "committed_before_kill": json.loads(marker.read_text()) if marker.exists() else None,
    }
    for load_first in (True, False):
        copy = crash_dir / f"reopen-{'load-first' if load_first else 'no-load'}"
        copy.mkdir()
        for path in crash_dir.glob("crash.duckdb*"):
            shutil.copy(path, copy / path.name)
        job = {
            "action": "reopen",
            "db": str(copy / "crash.duckdb"),
            "load_first": load_first,
            "inserted_pks": inserts.pks.tolist(),
            "inserted_vectors": str(crash_dir / "inserted.npy"),
        }
        out["load_first" if load_first else "no_load"] = run_vss(job, copy, timeout=600)
    return out


def embedding_rate(texts: list[str], runs: int = 3) -> dict:
    """Rows/s of the project's embedder (whatever backend it picks now) on real texts."""
    from quiver.resources.embedding import get_embedder

    embedder = get_embedder()
    embedder.embed(texts[:8])  # load outside the timing
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        embedder.embed(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return {"rows_per_s": spread(rates), "texts": len(texts), "model": embedder.model}


def machine() -> dict:
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "loadavg": [round(x, 2) for x in load], "uname": " ".join(os.uname()[:3])}


def main() -> int:
    if not PEERS_PYTHON.exists():
        raise SystemExit(
            f"{PEERS_PYTHON} is missing: `make bench` creates .venv-peers (duckdb 1.5.5 + duckdb-extension-vss 1.5.5)"
        )
    name, size = chosen_size()
    cache = Path(os.environ.get("QUIVER_HOME", ROOT / ".quiver")) / "bench"
    started = time.time()
    results = {"size": name, "plan": asdict(size), "machine_at_start": machine(), "params": asdict(PARAMS)}
    progress(
        f"BENCH_SIZE={name}: {size.rows:,} {size.source} rows; load average {results['machine_at_start']['loadavg']}"
    )
    corpus = corpora.make_corpus(size.source, size.rows, size.changes, size.rounds, size.queries, cache)
    results |= {
        "corpus": corpus.label,
        "raw_bytes": corpus.raw_bytes(),
        "raw_text_bytes": corpus.base.text_bytes(),
        "corpus_embedding": corpus.embedding,
    }
    work = Path(tempfile.mkdtemp(prefix=f"quiver-vs-vss-{name}-", dir=os.environ.get("BENCH_TMP")))
    try:
        results["build"], quiver, raw, vss_db = build_all(size, corpus, work)
        if size.dtypes:
            results["variant_bytes"] = variant_sizes(corpus, work)
        results["query"] = queries_all(size, corpus, quiver, raw, vss_db, work)
        results["update"] = updates_all(corpus, quiver, vss_db, work)
        progress("queries after the update rounds")
        results["query_after_updates"] = queries_after_updates(corpus, quiver, vss_db, work)
        progress("cold starts")
        results["cold"] = cold_all(size, corpus, quiver, raw, vss_db, work)
        results["update"]["quiver_snapshot_after"] = quiver.snapshot_after_rounds()
        progress("vss crash experiment")
        results["crash"] = crash_vss(corpus, work)
        progress("embedding rows/s")
        texts = (
            corpus.base.texts if size.source == "real" else corpora.make_corpus("real", 256, 0, 0, 0, cache).base.texts
        )
        results["embedding"] = embedding_rate(texts[:256])
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    results["machine_at_end"] = machine()
    results["seconds"] = time.time() - started
    table = build_table(results)
    results["table"] = table
    out = cache / f"vs-vss-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(render(results, table))
    print(f"\nJSON: {out}")
    return 0
