"""DuckDB's vss extension, measured in its own process and virtual environment (``.venv-peers``).

    .venv-peers/bin/python tests/benchmarks/peers/vss_side.py JOB.json RESULT.json

Imports only duckdb 1.5.5, numpy and pyarrow from ``.venv-peers``, never the project (whose DuckDB
may differ). The job names an ``action``: build, query, update, cold, crash_writer or reopen (see
each function); the result is written as JSON. The extension is loaded from the file inside the
``duckdb-extension-vss`` package: ``INSTALL vss`` needs a network.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

STARTED = time.time()  # as early as possible: cold start counts from the process start
TABLE = "items"


def extension_path() -> str:
    import duckdb_extension_vss

    version = duckdb.__version__
    path = Path(duckdb_extension_vss.__file__).parent / "extensions" / f"v{version}" / "vss.duckdb_extension"
    if not path.exists():
        raise FileNotFoundError(f"no vss extension for DuckDB {version} at {path}; reinstall .venv-peers")
    return str(path)


def io_counters() -> dict:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"wchar": int(fields["wchar"]), "write_bytes": int(fields["write_bytes"])}


def written_since(before: dict) -> dict:
    after = io_counters()
    return {name: after[name] - before[name] for name in before}


def state_bytes(db: str) -> dict:
    wal = Path(db + ".wal")
    return {"db": Path(db).stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}


def connect(db: str, load: bool = True) -> duckdb.DuckDBPyConnection:
    # No autoinstall: without a network it would stall on a download instead of saying what is missing.
    conn = duckdb.connect(db, config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if load:
        conn.execute(f"LOAD '{extension_path()}'")
        conn.execute("SET hnsw_enable_experimental_persistence = true")
    return conn


def query_sql(vector: list[float], k: int) -> str:
    """The vector inlined as a literal: with duckdb 1.5.5's Python API a bound 384-float list
    parameter makes each query about 5x slower (110 ms against 22 ms at 2,000 rows), so the
    literal is the fair form for vss. Floats from numpy's tolist() are plain numbers."""
    return (
        f"SELECT pk FROM {TABLE} ORDER BY array_cosine_distance(vec, {vector!r}::FLOAT[{len(vector)}]) LIMIT {int(k)}"
    )


def build(job: dict) -> dict:
    """Load the base rows (untimed: "already in DuckDB"), then CREATE INDEX and CHECKPOINT, timed."""
    conn = connect(job["db"])
    dim = job["dim"]
    conn.execute(
        f"CREATE TABLE {TABLE} AS SELECT pk, text, vec::FLOAT[{dim}] AS vec FROM read_parquet(?)", [job["rows"]]
    )
    conn.execute("CHECKPOINT")
    table_only = state_bytes(job["db"])
    before, started = io_counters(), time.perf_counter()
    conn.execute(
        f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING HNSW (vec) "
        f"WITH (metric = 'cosine', M = {int(job['m'])}, ef_construction = {int(job['ef_construction'])})"
    )
    created = time.perf_counter()
    conn.execute("CHECKPOINT")
    done = time.perf_counter()
    result = {
        "create_index_s": created - started,
        "checkpoint_s": done - created,
        "build_s": done - started,
        "written": written_since(before),
        "table_only_bytes": table_only,
        "bytes": state_bytes(job["db"]),
        "threads": conn.execute("SELECT current_setting('threads')").fetchone()[0],
    }
    conn.close()
    result["bytes_after_close"] = state_bytes(job["db"])
    return result


def plan_uses_hnsw(conn: duckdb.DuckDBPyConnection, dim: int, vector: list[float], k: int) -> tuple[bool, str]:
    plan = "\n".join(row[1] for row in conn.execute("EXPLAIN " + query_sql(vector, k)).fetchall())
    return "HNSW_INDEX_SCAN" in plan, plan


def query(job: dict) -> dict:
    """Per-query latency over ``passes`` passes (the lazy index load is done by a warm-up first)."""
    conn = connect(job["db"])
    conn.execute(f"SET hnsw_ef_search = {int(job['ef_search'])}")
    queries = np.load(job["queries"]).astype(np.float32)
    dim, k = queries.shape[1], job["k"]
    uses_hnsw, plan = plan_uses_hnsw(conn, dim, queries[0].tolist(), k)
    conn.execute(query_sql(queries[0].tolist(), k)).fetchall()
    passes, found = [], []
    for _ in range(job["passes"]):
        times, found = [], []
        for vector in queries:
            as_list = vector.tolist()
            started = time.perf_counter()
            rows = conn.execute(query_sql(as_list, k)).fetchall()
            times.append(time.perf_counter() - started)
            found.append([row[0] for row in rows])
        passes.append(times)
    conn.close()
    return {"passes": passes, "found": found, "plan_uses_hnsw": uses_hnsw, "plan": plan}


def update(job: dict) -> dict:
    """Each round: inserts, updates and deletes in one transaction, then CHECKPOINT (what persists)."""
    conn = connect(job["db"])
    dim = job["dim"]
    rounds = []
    for files in job["rounds"]:
        before, started = io_counters(), time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {TABLE} SELECT pk, text, vec::FLOAT[{dim}] FROM read_parquet(?)", [files["inserts"]])
        conn.execute(
            f"UPDATE {TABLE} SET text = u.text, vec = u.vec::FLOAT[{dim}] FROM read_parquet(?) u WHERE {TABLE}.pk = u.pk",
            [files["updates"]],
        )
        conn.execute(f"DELETE FROM {TABLE} WHERE pk IN (SELECT pk FROM read_parquet(?))", [files["deletes"]])
        conn.execute("COMMIT")
        committed = time.perf_counter()
        dml_written = written_since(before)
        conn.execute("CHECKPOINT")
        done = time.perf_counter()
        rounds.append(
            {
                "dml_s": committed - started,
                "checkpoint_s": done - committed,
                "seconds": done - started,
                "dml_written": dml_written,
                "written": written_since(before),
                "bytes": state_bytes(job["db"]),
                "rows": conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0],
            }
        )
    conn.close()
    return {"rounds": rounds, "bytes_after_close": state_bytes(job["db"])}


def cold(job: dict) -> dict:
    """A new process: open the database, LOAD, first query (the index is loaded lazily by it)."""
    started = time.perf_counter()
    conn = connect(job["db"], load=False)
    opened = time.perf_counter()
    conn.execute(f"LOAD '{extension_path()}'")
    conn.execute(f"SET hnsw_ef_search = {int(job['ef_search'])}")
    loaded = time.perf_counter()
    vector = job["vector"]
    rows = conn.execute(query_sql(vector, 10)).fetchall()
    answered_at = time.time()
    return {
        "process_started_at": STARTED,
        "answered_at": answered_at,
        "open_s": opened - started,
        "load_s": loaded - opened,
        "first_query_s": time.perf_counter() - loaded,
        "hits": len(rows),
    }


def crash_writer(job: dict) -> dict:
    """Commit the inserts (autocommit), then SIGKILL this process before any checkpoint."""
    conn = connect(job["db"])
    dim = job["dim"]
    conn.execute(f"INSERT INTO {TABLE} SELECT pk, text, vec::FLOAT[{dim}] FROM read_parquet(?)", [job["inserts"]])
    Path(job["committed_marker"]).write_text(json.dumps(state_bytes(job["db"])))
    os.kill(os.getpid(), signal.SIGKILL)
    return {}  # never reached


def reopen(job: dict) -> dict:
    """Reopen after the kill, with the extension loaded first (ATTACH after LOAD) or not; report each step."""
    steps, conn = [], None

    def step(name: str, action):
        try:
            value = action()
            plain = value if isinstance(value, (bool, int, float, str, list)) else "ok"
            steps.append({"step": name, "ok": True, "value": plain})
            return value
        except Exception as error:  # noqa: BLE001 - the point is to record what DuckDB says
            steps.append({"step": name, "ok": False, "error": f"{type(error).__name__}: {error}"[:400]})
            return None

    if job["load_first"]:
        conn = step("open :memory: and LOAD vss", lambda: connect(":memory:"))
        if (
            conn is not None
            and step("ATTACH the database", lambda: conn.execute(f"ATTACH '{job['db']}' AS d; USE d")) is None
        ):
            conn = None
    else:
        conn = step("open the database without vss", lambda: connect(job["db"], load=False))
        if conn is None:
            return {"steps": steps}
        step("LOAD vss after opening", lambda: conn.execute(f"LOAD '{extension_path()}'") and "loaded")
    if conn is None:
        return {"steps": steps}
    pks = job["inserted_pks"]
    step("rows in table", lambda: conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
    step(
        "inserted rows in table",
        lambda: conn.execute(f"SELECT count(*) FROM {TABLE} WHERE pk IN (SELECT unnest(?))", [pks]).fetchone()[0],
    )
    step("indexes", lambda: conn.execute("SELECT index_name FROM duckdb_indexes()").fetchall())
    vectors = np.load(job["inserted_vectors"]).astype(np.float32)
    dim = vectors.shape[1]
    step("plan uses HNSW_INDEX_SCAN", lambda: plan_uses_hnsw(conn, dim, vectors[0].tolist(), 10)[0])

    def inserted_found_by_search() -> int:
        return sum(conn.execute(query_sql(v.tolist(), 10)).fetchall()[0][0] == pk for v, pk in zip(vectors, pks))

    step(f"inserted rows found as their own top-1 by an index search (of {len(pks)})", inserted_found_by_search)
    step("CHECKPOINT", lambda: conn.execute("CHECKPOINT") and "done")
    return {"steps": steps}


ACTIONS = {f.__name__: f for f in (build, query, update, cold, crash_writer, reopen)}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result = ACTIONS[job["action"]](job)
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
