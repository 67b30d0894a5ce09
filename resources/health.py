"""Health of a dataset's index and embedded table, measured for the asset checks. No Dagster.

- ``measure_recall``: recall@k of the HNSW graphs against exact search over the same served state
  (the snapshot plus the delta of the segments after it), on a seeded sample of the index's own
  rows used as queries. Each query leaves its own row out of both answers (otherwise every query
  trivially finds itself), and a hit counts when it is in the exact answer or ties with the exact
  k-th distance (duplicate texts give equal vectors, and any of them is a right answer).
- ``ef_search_sweep``: recall and query latency of the graphs for a range of ``ef_search``;
  ``render_sweep_chart`` draws it as a PNG (matplotlib, an optional dependency, imported lazily).
- ``measure_parity``: the embedded table's key set against the served index's (counts, an XXH3
  fingerprint of the sorted keys, the missing and extra primary keys).
- ``check_snapshots``: every file of the published snapshot (and of its fallback) against the
  manifest's sizes and checksums, the usearch header against its identity, and the segments after
  it. Reads only the index directory, never DuckDB.
- ``check_embeddings``: the embedded table's vectors: the dimension the model gives, no null
  vector or element, no NaN or infinite element, no zero vector (cosine cannot rank one).

Plus small helpers for materialization metadata: a markdown table, bytes on disk, previews.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from resources import warehouse
from resources.index import IndexReader, commitlog, snapshot
from resources.index.errors import CorruptFileError, IndexNotBuiltError
from resources.index.manifest import read_manifest
from resources.warehouse import KEY, VECTOR, TableLayout, q

SEED = 0
MAX_DELTA_GRAPH = 100_000  # above: the delta is searched as served (exactly), see measure_recall
_TIE = 1e-6  # distances within this of the exact k-th one are ties


# -- markdown and bytes ---------------------------------------------------------------------------
def md_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; cells are shown with ``str`` and pipes/newlines escaped."""

    def cell(value) -> str:
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def preview_md(table: pa.Table | None, limit: int = 5, width: int = 60, total: int | None = None) -> str:
    """The first ``limit`` rows of a table as markdown, long strings cut to ``width`` characters;
    ``total``: the rows the table previews (when it holds only the first ones)."""
    if table is None or table.num_rows == 0:
        return "_no rows_"
    rows = []
    for record in table.slice(0, limit).to_pylist():
        rows.append([_short(v, width) for v in record.values()])
    total = table.num_rows if total is None else total
    more = f"\n\n_{total - min(limit, table.num_rows):,} more_" if total > min(limit, table.num_rows) else ""
    return md_table(table.column_names, rows) + more


def _short(value, width: int):
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile (a snapshot's cleanup)
                continue
    return total


def duckdb_bytes(database: Path) -> int:
    """The DuckDB file and its write-ahead log."""
    database = Path(database)
    return path_bytes(database) + path_bytes(database.with_name(database.name + ".wal"))


def raw_vector_bytes(vectors: int, dim: int) -> int:
    """What the vectors alone take as float32: the floor any storage of them is measured against."""
    return int(vectors) * int(dim) * 4


def fingerprint(keys: np.ndarray) -> str:
    """XXH3-64 of the sorted uint64 keys (little endian): equal key sets, equal fingerprints."""
    ordered = np.sort(np.asarray(keys, dtype=np.uint64)).astype("<u8", copy=False)
    return xxhash.xxh3_64_hexdigest(ordered.tobytes())


# -- the served state, searched through the graphs -------------------------------------------------
def _live_keys(reader: IndexReader) -> tuple[np.ndarray, np.ndarray]:
    """(keys served from the snapshot graph, keys served from the delta), each ascending."""
    state = reader.state
    return state.snap_keys[~np.isin(state.snap_keys, state.shadowed)], state.delta_keys


def live_keys(reader: IndexReader) -> np.ndarray:
    """Every key the reader serves, ascending."""
    snap_keys, delta_keys = _live_keys(reader)
    return np.sort(np.concatenate([snap_keys, delta_keys]))


def graph_search(reader: IndexReader, vector: np.ndarray, k: int, ef_search: int):
    """Like ``reader.search`` but through the HNSW graphs everywhere: the snapshot's graph and a
    graph of the delta (the reader searches its delta exactly). This is what the graph gives once
    the next snapshot folds the delta in, so a bad graph shows before it is published.
    Returns (keys, distances), best first."""
    state = reader.state
    keys, distances = [], []
    if state.snap is not None and len(state.snap.index):
        found_keys, found_dist = _snapshot_graph_search(state, vector, k, ef_search)
        keys.append(found_keys)
        distances.append(found_dist)
    if len(state.delta_index):
        state.delta_index.expansion_search = ef_search
        found = state.delta_index.search(vector, min(k, len(state.delta_index)))
        keys.append(np.asarray(found.keys, dtype=np.uint64))
        distances.append(np.asarray(found.distances, dtype=np.float32))
    if not keys:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
    all_keys, all_dist = np.concatenate(keys), np.concatenate(distances)
    order = np.argsort(all_dist, kind="stable")[:k]
    return all_keys[order], all_dist[order]


def _snapshot_graph_search(state, vector: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """The snapshot graph's ``k`` best live keys: shadowed keys (deleted or superseded by the delta)
    are dropped, so ask for more (they can displace at most that many hits) and widen if short."""
    index, shadowed = state.snap.index, state.shadowed
    size = len(index)
    wanted = min(k, size - len(shadowed))
    if wanted <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
    index.expansion_search = ef_search
    count = min(size, k + min(len(shadowed), 4 * k + 64))
    while True:
        found = index.search(vector, count)
        keys = np.asarray(found.keys, dtype=np.uint64)
        dist = np.asarray(found.distances, dtype=np.float32)
        live = ~np.isin(keys, shadowed)
        if live.sum() >= wanted or count >= size:
            return keys[live][:k], dist[live][:k]
        count = min(size, count * 4)


@dataclass(frozen=True)
class Queries:
    keys: np.ndarray
    vectors: np.ndarray
    k: int  # neighbours asked per query (at most live - 1: the query's own row is left out)
    truth: list[tuple[np.ndarray, np.ndarray]]  # exact (keys, distances) per query, self left out
    exact_seconds: float


def sample_queries(reader: IndexReader, sample: int, k: int = 10, seed: int = SEED) -> Queries:
    """A seeded sample of served rows as queries, with their exact answers (brute force)."""
    keys = live_keys(reader)
    k = max(0, min(k, len(keys) - 1))
    count = min(sample, len(keys)) if k else 0  # one row alone has no neighbour to find
    chosen = np.sort(np.random.default_rng(seed).choice(keys, size=count, replace=False)) if count else keys[:0]
    vectors = reader.vectors(chosen)
    started = time.perf_counter()
    truth = []
    for key, vector in zip(chosen, vectors):
        hits = reader.search(vector, k + 1, exact=True)
        truth.append(_without(key, hits.keys, hits.distances, k))
    return Queries(chosen, vectors, k, truth, time.perf_counter() - started)


def _without(key, keys: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = keys != key
    return keys[keep][:k], distances[keep][:k]


@dataclass(frozen=True)
class RecallResult:
    recall: float  # mean over the queries; 1.0 when there is nothing to ask
    queries: int
    k: int
    ef_search: int
    live_vectors: int
    graph_vectors: int  # served from the snapshot's graph
    delta_vectors: int  # served from the segments after it
    delta_graph: bool  # the delta was searched through a graph of its own (else exactly, as served)
    served_seq: int
    seconds: float  # the HNSW searches and the exact ones, not the opening
    latency_ms_p50: float
    latency_ms_p95: float
    worst: list[tuple[int, float]] = field(default_factory=list)  # (key, recall) of the worst queries
    problems: tuple[str, ...] = ()


def measure_recall(
    reader: IndexReader,
    ef_search: int | None = None,
    sample: int = 300,
    k: int = 10,
    seed: int = SEED,
    queries: Queries | None = None,
    max_delta_graph: int = MAX_DELTA_GRAPH,
) -> RecallResult:
    """Recall@k of the graphs against exact search over the same served vectors (module docstring).

    A delta of more than ``max_delta_graph`` vectors (a first load, say) is not given a graph of its
    own here, which would cost as much as the snapshot that builds it anyway: it is searched as it
    is served, exactly, and ``delta_graph`` says so. The next refresh's check measures the published
    graph."""
    ef_search = ef_search or reader.manifest.hnsw.ef_search
    queries = queries or sample_queries(reader, sample, k, seed)
    delta_graph = len(_live_keys(reader)[1]) <= max_delta_graph
    per_query, latencies = [], []
    for key, vector, (true_keys, true_dist) in zip(queries.keys, queries.vectors, queries.truth):
        started = time.perf_counter()
        if delta_graph:
            found_keys, found_dist = graph_search(reader, vector, queries.k + 1, ef_search)
        else:
            hits = reader.search(vector, queries.k + 1, ef_search)
            found_keys, found_dist = hits.keys, hits.distances
        latencies.append(time.perf_counter() - started)
        found_keys, found_dist = _without(key, found_keys, found_dist, queries.k)
        per_query.append(_hits(found_keys, found_dist, true_keys, true_dist) / max(1, len(true_keys)))
    snap_keys, delta_keys = _live_keys(reader)
    recalls = np.asarray(per_query, dtype=np.float64)
    lat_ms = np.asarray(latencies, dtype=np.float64) * 1000
    worst = np.argsort(recalls, kind="stable")[:5]
    return RecallResult(
        recall=float(recalls.mean()) if len(recalls) else 1.0,
        queries=len(recalls),
        k=queries.k,
        ef_search=int(ef_search),
        live_vectors=len(snap_keys) + len(delta_keys),
        graph_vectors=len(snap_keys),
        delta_vectors=len(delta_keys),
        delta_graph=delta_graph,
        served_seq=reader.served_seq,
        seconds=float(lat_ms.sum() / 1000 + queries.exact_seconds),
        latency_ms_p50=float(np.percentile(lat_ms, 50)) if len(lat_ms) else 0.0,
        latency_ms_p95=float(np.percentile(lat_ms, 95)) if len(lat_ms) else 0.0,
        worst=[(int(queries.keys[i]), float(recalls[i])) for i in worst if recalls[i] < 1.0],
        problems=reader.problems,
    )


def _hits(found_keys, found_dist, true_keys, true_dist) -> int:
    if len(true_keys) == 0:
        return 0
    kth = float(true_dist[-1]) + _TIE
    truth = set(true_keys.tolist())
    return int(sum(1 for key, dist in zip(found_keys.tolist(), found_dist.tolist()) if key in truth or dist <= kth))


DEFAULT_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def ef_search_sweep(
    reader: IndexReader, ef_values=DEFAULT_SWEEP, sample: int = 300, k: int = 10, seed: int = SEED
) -> list[RecallResult]:
    """``measure_recall`` for each ``ef_search`` on one sample (the exact answers are computed once)."""
    queries = sample_queries(reader, sample, k, seed)
    for vector in queries.vectors[:20]:  # warm the caches so the first ef_search is not penalized
        graph_search(reader, vector, queries.k + 1, max(ef_values))
    return [measure_recall(reader, ef, queries=queries) for ef in sorted(set(ef_values))]


def render_sweep_chart(points: list[RecallResult], path: Path, title: str, current_ef: int | None = None) -> Path:
    """recall@k and the p50 query latency against ef_search, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ef = [p.ef_search for p in points]
    fig, recall_ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        recall_ax.plot(ef, [p.recall for p in points], "o-", color="tab:blue", label=f"recall@{points[0].k}")
        recall_ax.set_xscale("log", base=2)
        recall_ax.set_xticks(ef, [str(v) for v in ef])
        recall_ax.set_xlabel("ef_search")
        recall_ax.set_ylabel(f"recall@{points[0].k} (vs exact search)", color="tab:blue")
        recall_ax.set_ylim(min(0.9, min(p.recall for p in points) - 0.01), 1.002)
        recall_ax.grid(True, alpha=0.3)
        latency_ax = recall_ax.twinx()
        latency_ax.plot(ef, [p.latency_ms_p50 for p in points], "s--", color="tab:orange", label="p50 latency")
        latency_ax.set_ylabel("query latency p50 (ms)", color="tab:orange")
        latency_ax.set_ylim(bottom=0)
        if current_ef is not None:
            recall_ax.axvline(current_ef, color="grey", linestyle=":", label=f"served ef_search={current_ef}")
        lines = recall_ax.get_legend_handles_labels()[0] + latency_ax.get_legend_handles_labels()[0]
        labels = recall_ax.get_legend_handles_labels()[1] + latency_ax.get_legend_handles_labels()[1]
        recall_ax.legend(lines, labels, loc="lower right")
        recall_ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp")
        fig.savefig(temp, format="png")
        os.replace(temp, path)
    finally:
        plt.close(fig)
    return path


# -- parity -------------------------------------------------------------------------------------
def table_keys(conn: duckdb.DuckDBPyConnection, layout: TableLayout) -> pa.Table:
    """``_key`` and the primary key of every embedded row (empty before the first embedding)."""
    if not warehouse.table_exists(conn, layout.embeddings):
        return pa.table({KEY: pa.array([], pa.uint64()), layout.primary_key: pa.array([])})
    return conn.sql(f"SELECT {KEY}, {q(layout.primary_key)} FROM {layout.embeddings} ORDER BY {KEY}").to_arrow_table()


@dataclass(frozen=True)
class ParityResult:
    table_count: int
    index_count: int
    table_fingerprint: str
    index_fingerprint: str
    table_seq: int  # DuckDB's last change seq
    served_seq: int  # the last seq the index serves
    missing: list  # primary keys in the table, not in the index (the first ``limit``)
    extra: list  # primary keys in the index, not in the table (the first ``limit``)
    missing_count: int
    extra_count: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.table_count == self.index_count and self.table_fingerprint == self.index_fingerprint


def measure_parity(table: pa.Table, reader: IndexReader, table_seq: int, limit: int = 20) -> ParityResult:
    """Compare the embedded table's keys (``table_keys``) with what ``reader`` serves."""
    pk = reader.manifest.primary_key
    t_keys = table.column(KEY).to_numpy() if table.num_rows else np.empty(0, dtype=np.uint64)
    i_keys = live_keys(reader)
    missing = np.setdiff1d(t_keys, i_keys)
    extra = np.setdiff1d(i_keys, t_keys)
    by_key = dict(zip(t_keys.tolist(), table.column(pk).to_pylist())) if missing.size else {}
    extra_pks = reader.rows(extra[:limit], columns=[]).column(pk).to_pylist() if extra.size else []
    return ParityResult(
        table_count=len(t_keys),
        index_count=len(i_keys),
        table_fingerprint=fingerprint(t_keys),
        index_fingerprint=fingerprint(i_keys),
        table_seq=int(table_seq),
        served_seq=reader.served_seq,
        missing=[by_key[k] for k in missing[:limit].tolist()],
        extra=extra_pks,
        missing_count=int(missing.size),
        extra_count=int(extra.size),
        problems=reader.problems,
    )


# -- snapshot files -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotCheck:
    dir: str
    seq: int
    role: str  # "current" or "previous" (the fallback)
    vectors: int
    tombstones: int
    bytes: int
    checksums: dict  # file name -> checksum from the manifest
    problem: str | None = None


@dataclass(frozen=True)
class IntegrityResult:
    snapshots: list[SnapshotCheck]
    segments_after: int
    segment_bytes_after: int
    log_problem: str | None
    manifest_problem: str | None = None
    seconds: float = 0.0

    @property
    def current(self) -> SnapshotCheck | None:
        return next((s for s in self.snapshots if s.role == "current"), None)

    @property
    def problems(self) -> list[str]:
        found = [self.manifest_problem, self.log_problem] + [
            f"{s.role} snapshot {s.dir}: {s.problem}" for s in self.snapshots if s.problem
        ]
        return [p for p in found if p]

    @property
    def ok(self) -> bool:
        """The published snapshot and the log after it are sound (a damaged fallback only warns)."""
        current = self.current
        return not (self.manifest_problem or self.log_problem or (current is not None and current.problem))


def check_snapshots(root: Path) -> IntegrityResult:
    """Sizes, checksums and usearch headers of the snapshot files against the manifest, and the
    segments after the snapshot (their names, metadata and page checksums). Never opens DuckDB."""
    started = time.perf_counter()
    try:
        manifest = read_manifest(root)
    except (CorruptFileError, IndexNotBuiltError) as error:
        return IntegrityResult([], 0, 0, None, manifest_problem=str(error), seconds=time.perf_counter() - started)
    checks = []
    for role, entry in (("current", manifest.snapshot), ("previous", manifest.previous_snapshot)):
        if entry is None:
            continue
        problem = None
        try:
            snapshot.check_snapshot(root, entry, manifest.identity)
        except CorruptFileError as error:
            problem = str(error)
        checks.append(
            SnapshotCheck(
                dir=entry.dir,
                seq=entry.seq,
                role=role,
                vectors=entry.vectors,
                tombstones=entry.tombstones,
                bytes=entry.total_bytes,
                checksums={name: f.checksum for name, f in entry.files.items()},
                problem=problem,
            )
        )
    refs = commitlog.list_segments(root)
    after = [ref for ref in refs if ref.last > manifest.snapshot_seq]
    try:
        _, chain = commitlog.read_chain(refs, manifest.snapshot_seq, manifest.identity)
        log_problem = f"log: {chain.problem}" if chain.problem else None
    except CorruptFileError as error:
        log_problem = f"log: {error}"
    return IntegrityResult(
        snapshots=checks,
        segments_after=len(after),
        segment_bytes_after=sum(ref.bytes for ref in after),
        log_problem=log_problem,
        seconds=time.perf_counter() - started,
    )


# -- embedded vectors ---------------------------------------------------------------------------
PROBLEM_KINDS = ("null_vector", "null_element", "non_finite", "zero_vector")


@dataclass(frozen=True)
class EmbeddingsCheck:
    rows: int
    dim: int | None  # the table's vector dimension (None before the first embedding)
    expected_dim: int
    counts: dict  # kind -> rows with that problem (each row counted once, under its first kind)
    examples: dict  # kind -> up to ``limit`` primary keys
    seconds: float

    @property
    def bad_rows(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.dim == self.expected_dim and self.bad_rows == 0


def check_embeddings(
    conn: duckdb.DuckDBPyConnection, layout: TableLayout, expected_dim: int, limit: int = 10
) -> EmbeddingsCheck:
    """Classify every embedded vector in one scan; name the offending primary keys."""
    started = time.perf_counter()
    dim = warehouse.vector_dim(conn, layout)
    if dim is None:
        return EmbeddingsCheck(
            0, None, expected_dim, dict.fromkeys(PROBLEM_KINDS, 0), {}, time.perf_counter() - started
        )
    v = f"{VECTOR}::FLOAT[]"
    kind = f"""CASE
        WHEN {VECTOR} IS NULL THEN 'null_vector'
        WHEN list_count({v}) < {int(dim)} THEN 'null_element'
        WHEN list_bool_or(list_transform({v}, x -> NOT isfinite(x))) THEN 'non_finite'
        WHEN list_max(list_transform({v}, x -> abs(x))) = 0 THEN 'zero_vector'
    END"""
    pk = q(layout.primary_key)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _bad AS SELECT {pk} AS pk, kind FROM "
        f"(SELECT {pk}, {kind} AS kind FROM {layout.embeddings}) WHERE kind IS NOT NULL"
    )
    try:
        counts = dict(conn.execute("SELECT kind, count(*) FROM _bad GROUP BY kind").fetchall())
        examples = {
            kind: [
                row[0]
                for row in conn.execute(
                    "SELECT pk FROM _bad WHERE kind = ? ORDER BY pk LIMIT ?", [kind, limit]
                ).fetchall()
            ]
            for kind in counts
        }
        rows = conn.execute(f"SELECT count(*) FROM {layout.embeddings}").fetchone()[0]
    finally:
        conn.execute("DROP TABLE IF EXISTS _bad")
    return EmbeddingsCheck(
        rows=rows,
        dim=dim,
        expected_dim=expected_dim,
        counts={kind: int(counts.get(kind, 0)) for kind in PROBLEM_KINDS},
        examples=examples,
        seconds=time.perf_counter() - started,
    )


# -- what a materialization changed ---------------------------------------------------------------
@dataclass(frozen=True)
class SegmentSummary:
    upserts: int
    deletes: int
    preview: pa.Table | None  # the first rows without vectors: seq, op, key, primary key, served columns

    @property
    def records(self) -> int:
        return self.upserts + self.deletes


def segment_summary(path: Path, limit: int = 5) -> SegmentSummary:
    """Counts by op and the first rows of one commit-log segment, read without its vectors."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    ops = file.read(columns=[commitlog.OP]).column(commitlog.OP)
    deletes = int(pc.sum(pc.equal(ops, commitlog.OP_DELETE)).as_py() or 0)
    names = [n for n in file.schema_arrow.names if n != VECTOR]
    first = next(file.iter_batches(batch_size=limit, columns=names), None)
    preview = pa.Table.from_batches([first]) if first is not None else None
    return SegmentSummary(upserts=len(ops) - deletes, deletes=deletes, preview=preview)


def change_preview(plan: warehouse.ChangePlan, primary_key: str, limit: int = 5, width: int = 60) -> pa.Table:
    """Up to ``limit`` rows of what a refresh changes: embedded (new or changed text), served
    columns only, deleted; with the primary key and the embedded text."""
    rows: list[dict] = []
    parts = (
        ("embedded", plan.to_embed, warehouse.TEXT),
        ("served columns only", plan.served_only, None),
        ("deleted", plan.deleted, None),
    )
    for change, table, text in parts:
        for record in table.slice(0, limit - len(rows)).to_pylist():
            rows.append(
                {
                    "change": change,
                    primary_key: record[primary_key],
                    "text": _short(record.get(text), width) if text else "",
                }
            )
    return pa.Table.from_pylist(rows) if rows else pa.table({"change": [], primary_key: [], "text": []})


def change_preview_md(plan: warehouse.ChangePlan, primary_key: str, limit: int = 5) -> str:
    """``change_preview`` as markdown, with how many more changes there are."""
    total = plan.to_embed.num_rows + plan.served_only.num_rows + plan.deleted.num_rows
    if total == 0:
        return "_no change_"
    return preview_md(change_preview(plan, primary_key, limit), limit, total=total)
