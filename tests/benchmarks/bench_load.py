"""Load on the HTTP front: ``python -m quiver serve`` driven by concurrent clients, alone and while a
refresh and a snapshot publish run beside it.

    make bench-load                                   # about 90 s on 2 shared cores
    BENCH_LOAD_ROWS=2000 BENCH_LOAD_SECONDS=4 make bench-load      # a quick look

Environment:
    BENCH_LOAD_ROWS      rows of ../shared/data/debian_packages.parquet in the index (5,000)
    BENCH_LOAD_SECONDS   seconds of load per steady level (10)
    BENCH_LOAD_CLIENTS   the levels: concurrent clients, comma-separated (1,4,16)
    BENCH_LOAD_CHANGES   rows one refresh adds; it updates half as many and deletes a quarter (200)
    BENCH_LOAD_TIMEOUT   seconds one refresh may take before the benchmark fails (300)
    QUIVER_EMBED_BATCH, QUIVER_WORKERS, QUIVER_EMBED_THREADS   reach the server as they are
                         (QUIVER_EMBED_BATCH=1 QUIVER_WORKERS=2: the server before micro-batching)

The dataset is built by ``python -m quiver refresh`` in a temporary QUIVER_HOME (its snapshots due
after every refresh), then served on a free loopback port by ``python -m quiver serve``, a
subprocess stopped by its pid at the end. Each client holds one keep-alive connection (raw asyncio
streams: the load generator shares the two cores, so it stays lean) and sends Spice-shaped queries,
``POST /v1/search {"text": ..., "limit": 10}``, back to back: the first words of real package
descriptions, not rows of the index. Per level: p50 and p99 latency (send to last byte), queries per
second, errors, the server's own ``duration_ms`` (p50), and CPU milliseconds per query of the server
and of this load generator, so it shows where the time went.

Then, per level, the source changes (new rows, new descriptions for some rows, some rows deleted)
and ``python -m quiver refresh <dataset>`` runs in another process (the refresh job, then the
snapshot job: a new snapshot published while queries run) under the same load until it exits.
Every answer is checked: status 200, exactly ``matches`` and ``duration_ms``, ``limit`` matches
with distinct keys, ``fused_score`` non-increasing, and each match's ``value`` one that its key
had in the source at some point (a half-published state that paired a key with another row's data,
or a row that never existed, fails it). After each refresh a query for an added row's own text must
find it (the served state moved on).

Goals (issue 24): queries per second at 16 clients at least 3x those at 1, 0 errors, p99 at 16
clients under 50 ms. Prints a markdown table and a line per goal; exits 1 on any error or
inconsistent answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.resources.values import md_table
from tests.conftest import dataset_entry, write_spec

CORPUS = ROOT.parent / "shared" / "data" / "debian_packages.parquet"
DS = "packages"
COLUMNS = ["pkg_id", "package", "section", "short_description"]
LIMIT = 10
QUERIES = 1000  # distinct query texts, drawn from rows outside the index
SETTINGS = ("QUIVER_EMBED_BATCH", "QUIVER_WORKERS", "QUIVER_EMBED_THREADS")  # the server's, printed when set
ALWAYS_DUE = {"interval_seconds": 0, "min_delta_size_percent": 0, "min_delta_commitlogs": 1}


def text_of(row: dict) -> str:
    return f"{row['package']}: {row['short_description']}"  # the spec's embedded text (dataset_entry)


@dataclass
class Level:
    """What one level of load measured."""

    clients: int
    latencies: list[float] = field(default_factory=list)  # seconds, answered queries only
    server_ms: list[int] = field(default_factory=list)  # the answers' duration_ms
    errors: int = 0  # no answer, or a status other than 200
    inconsistent: int = 0  # a 200 whose answer fails the checks
    problems: list[str] = field(default_factory=list)  # the first few, for the report
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def failed(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 5:
            self.problems.append(message)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def qps(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def row(self, label: str) -> list:
        per = max(self.answered, 1)
        server = sorted(self.server_ms)
        return [
            label,
            self.clients,
            self.answered,
            f"{self.qps:.0f}",
            f"{self.quantile_ms(0.5):.1f}",
            f"{self.quantile_ms(0.99):.1f}",
            server[len(server) // 2] if server else "-",
            f"{self.server_cpu_s * 1000 / per:.2f}",
            f"{self.client_cpu_s * 1000 / per:.2f}",
            self.errors,
            self.inconsistent,
        ]


HEADERS = [
    "phase",
    "clients",
    "queries",
    "queries/s",
    "p50 ms",
    "p99 ms",
    "server duration_ms p50",
    "server CPU ms/query",
    "client CPU ms/query",
    "errors",
    "inconsistent",
]


class Connection:
    """One keep-alive HTTP/1.1 connection: a POST, then its status and body (uvicorn always sends
    Content-Length for these answers)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def check(status: int, raw: bytes, versions: dict[int, set[str]]) -> tuple[str | None, int]:
    """(None, the server's duration_ms) for a well-formed, consistent answer, else (what is wrong, 0)."""
    if status != 200:
        return f"status {status}: {raw[:200]!r}", 0
    body = json.loads(raw)
    if set(body) != {"matches", "duration_ms"} or not isinstance(body["duration_ms"], int):
        return f"fields {sorted(body)}", 0
    matches = body["matches"]
    if len(matches) != LIMIT:
        return f"{len(matches)} matches, not {LIMIT}", 0
    keys = [m["primary_key"]["pkg_id"] for m in matches]
    if len(set(keys)) != LIMIT:
        return f"a key twice: {keys}", 0
    for key, match in zip(keys, matches):
        if match["dataset"] != DS or match["value"] not in versions.get(key, ()):
            return f"key {key} answered with {match['value']!r}, which it never had", 0
    fused = [m["fused_score"] for m in matches]
    if fused != sorted(fused, reverse=True):
        return f"fused_score out of order: {fused}", 0
    return None, body["duration_ms"]


async def drive(port: int, level: Level, queries: list[bytes], versions, stop: asyncio.Future) -> None:
    """``level.clients`` clients sending queries back to back until ``stop`` is done."""

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = Connection("127.0.0.1", port)
        try:
            while not stop.done():
                body = queries[rng.randrange(len(queries))]
                started = time.perf_counter()
                try:
                    status, raw = await connection.post("/v1/search", body)
                except (OSError, ValueError, asyncio.IncompleteReadError) as error:
                    level.failed("errors", f"{type(error).__name__}: {error}")
                    connection.close()
                    continue
                elapsed = time.perf_counter() - started
                problem, duration_ms = check(status, raw, versions)
                if problem is None:
                    level.latencies.append(elapsed)
                    level.server_ms.append(duration_ms)
                else:
                    level.failed("errors" if status != 200 else "inconsistent", problem)
        finally:
            connection.close()

    await asyncio.gather(*(client(seed) for seed in range(level.clients)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def measure(port, server_pid, level, queries, versions, until) -> Level:
    """Drive ``level`` until the awaitable ``until`` is done, with its wall and CPU seconds."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    server_cpu, client_cpu, started = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    load = asyncio.ensure_future(drive(port, level, queries, versions, stop))
    try:
        await until
    finally:
        stop.set_result(None)
        await load  # each client finishes the query it has in flight
    level.seconds = time.perf_counter() - started
    level.server_cpu_s = cpu_seconds(server_pid) - server_cpu
    level.client_cpu_s = time.process_time() - client_cpu
    return level


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def server(env: dict, log: Path):
    """``python -m quiver serve`` on a free loopback port: yields (port, pid); stopped by its pid."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quiver", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield port, proc.pid
    finally:
        proc.terminate()  # uvicorn shuts down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


REFRESH = [sys.executable, "-m", "quiver", "refresh", DS]


def write_source(table: pa.Table, path: Path) -> None:
    temp = path.with_suffix(".tmp")
    pq.write_table(table, temp)
    temp.rename(path)  # the refresh reads either the old file or the new one, whole


def change(table: pa.Table, spare: pa.Table, round_: int, count: int, rng: random.Random) -> pa.Table:
    """``table`` with ``count`` rows of ``spare`` added, ``count // 2`` new descriptions and
    ``count // 4`` rows deleted (none of them the rows just added)."""
    indices = rng.sample(range(table.num_rows), count // 2 + count // 4)
    updated, deleted = set(indices[: count // 2]), set(indices[count // 2 :])
    descriptions = table.column("short_description").to_pylist()
    for i in updated:
        descriptions[i] = f"{descriptions[i]} (revised {round_})"
    kept = [i for i in range(table.num_rows) if i not in deleted]
    table = table.set_column(
        table.schema.get_field_index("short_description"), "short_description", pa.array(descriptions)
    )
    return pa.concat_tables([table.take(kept), spare.slice((round_ - 1) * count, count)])


async def refresh_round(port, pid, clients, env, source, state, versions, rng, count, timeout) -> Level:
    """One refresh (and the snapshot it makes due) under ``clients`` clients; the new state checked."""
    before = get_json(f"http://127.0.0.1:{port}/health")["datasets"][0]["served_seq"]
    state["round"] += 1
    table = change(state["table"], state["spare"], state["round"], count, rng)
    for row in table.to_pylist():
        versions.setdefault(row["pkg_id"], set()).add(text_of(row))  # valid from now on (and before)
    write_source(table, source)
    state["table"] = table
    proc = await asyncio.create_subprocess_exec(
        *REFRESH, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    done = asyncio.ensure_future(asyncio.wait_for(proc.communicate(), timeout))
    level = Level(clients)
    try:
        await measure(port, pid, level, state["queries"], versions, done)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"the refresh took over {timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the refresh failed:\n{done.result()[0].decode()[-3000:]}")
    after = get_json(f"http://127.0.0.1:{port}/health")["datasets"][0]["served_seq"]
    added = table.slice(table.num_rows - 1).to_pylist()[0]
    query = json.dumps({"text": text_of(added), "limit": LIMIT}).encode()
    status, raw = await Connection("127.0.0.1", port).post("/v1/search", query)
    found = status == 200 and added["pkg_id"] in {m["primary_key"]["pkg_id"] for m in json.loads(raw)["matches"]}
    if not after > before or not found:
        level.failed("inconsistent", f"after the refresh: served_seq {before} -> {after}, added row found: {found}")
    return level


def query_texts(spare: pa.Table, rng: random.Random) -> list[bytes]:
    """Spice-shaped request bodies: the first two to six words of real descriptions."""
    descriptions = spare.column("short_description").to_pylist()
    bodies = []
    for text in rng.sample(descriptions, min(QUERIES, len(descriptions))):
        words = text.split()
        bodies.append(json.dumps({"text": " ".join(words[: rng.randint(2, 6)]), "limit": LIMIT}).encode())
    return bodies


async def run(env: dict, work: Path, source: Path, state: dict, levels: list[int], seconds: float) -> list[list]:
    versions: dict[int, set[str]] = {}
    for row in state["table"].to_pylist():
        versions.setdefault(row["pkg_id"], set()).add(text_of(row))
    rng = random.Random(7)
    rows, failures = [], []
    with server(env, work / "server.log") as (port, pid):
        print(f"server up on port {port} (pid {pid}); warming up ...", file=sys.stderr, flush=True)
        await measure(port, pid, Level(2), state["queries"], versions, asyncio.sleep(2))
        for clients in levels:
            print(f"{clients} clients for {seconds:g} s ...", file=sys.stderr, flush=True)
            level = await measure(port, pid, Level(clients), state["queries"], versions, asyncio.sleep(seconds))
            rows.append(level.row("steady"))
            failures += level.problems
        for clients in levels:
            print(f"{clients} clients while a refresh and a snapshot run ...", file=sys.stderr, flush=True)
            level = await refresh_round(
                port, pid, clients, env, source, state, versions, rng, state["changes"], state["timeout"]
            )
            rows.append(level.row("refresh + snapshot"))
            failures += level.problems
    for problem in failures:
        print(f"problem: {problem}", file=sys.stderr)
    return rows


def goals(rows: list[list]) -> tuple[list[str], bool]:
    steady = {r[1]: r for r in rows if r[0] == "steady"}
    lines = []
    if 1 in steady and 16 in steady:
        one, sixteen = float(steady[1][3]), float(steady[16][3])
        ratio = sixteen / one if one else 0.0
        lines.append(f"queries/s at 16 clients / at 1: {ratio:.2f}x (goal >= 3x): {'met' if ratio >= 3 else 'MISSED'}")
        p99 = float(steady[16][5])
        lines.append(f"p99 at 16 clients: {p99:.1f} ms (goal < 50 ms): {'met' if p99 < 50 else 'MISSED'}")
    bad = sum(r[-1] + r[-2] for r in rows)
    lines.append(f"errors and inconsistent answers: {bad} (goal 0): {'met' if bad == 0 else 'MISSED'}")
    return lines, bad == 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    rows_n = int(os.environ.get("BENCH_LOAD_ROWS", "5000"))
    seconds = float(os.environ.get("BENCH_LOAD_SECONDS", "10"))
    levels = [int(c) for c in os.environ.get("BENCH_LOAD_CLIENTS", "1,4,16").split(",")]
    changes = int(os.environ.get("BENCH_LOAD_CHANGES", "200"))
    timeout = float(os.environ.get("BENCH_LOAD_TIMEOUT", "300"))
    corpus = pq.read_table(CORPUS, columns=COLUMNS)
    corpus = corpus.filter(pc.invert(pc.is_null(corpus.column("short_description"))))
    spare = corpus.slice(rows_n)  # added by the refreshes; the queries come from its far end
    rng = random.Random(11)
    state = {
        "table": corpus.slice(0, rows_n),
        "spare": spare.slice(0, changes * len(levels)),
        "queries": query_texts(spare.slice(changes * len(levels)), rng),
        "round": 0,
        "changes": changes,
        "timeout": timeout,
    }
    work = Path(tempfile.mkdtemp(prefix="quiver-load-"))
    state["work"] = work
    try:
        source = work / "source.parquet"
        write_source(state["table"], source)
        entry = dataset_entry(DS, source, snapshots={**ALWAYS_DUE, "on_startup": False})
        spec_path = write_spec(work / "datasets.yaml", [entry])
        env = {
            **os.environ,
            "QUIVER_DATASETS": str(spec_path),
            "QUIVER_HOME": str(work / "home"),
            "DAGSTER_HOME": str(work / "dagster"),
        }
        print(f"first build of {rows_n:,} rows ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        built = subprocess.run(REFRESH, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if built.returncode != 0:
            print(f"FAIL: the first build failed:\n{built.stderr[-3000:]}")
            return 1
        print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        rows = asyncio.run(run(env, work, source, state, levels, seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = [f"{name}={os.environ[name]}" for name in SETTINGS if os.environ.get(name)]
    print(
        f"\n{rows_n:,} rows, hybrid mode (the default), limit {LIMIT}, {os.cpu_count()} cores shared with the clients"
        + "".join(f", {s}" for s in settings)
    )
    print(md_table(HEADERS, rows))
    lines, ok = goals(rows)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
