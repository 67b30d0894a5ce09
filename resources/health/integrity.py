"""Integrity of what is on disk: snapshot files against the manifest, vectors in the embedded table. No Dagster.

- ``check_snapshots``: every file of the published snapshot (and of its fallback) against the
  manifest's sizes and checksums, the usearch header against its identity, and the segments after
  it. Reads only the index directory, never DuckDB.
- ``check_embeddings``: the embedded table's vectors: the dimension the model gives, no null
  vector or element, no NaN or infinite element, no zero vector (cosine cannot rank one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from quiver.resources.index import commitlog, snapshot
from quiver.resources.index.errors import CorruptFileError, IndexNotBuiltError
from quiver.resources.index.manifest import read_manifest
from quiver.resources.warehouse import VECTOR, TableLayout, q, vector_dim


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
    dim = vector_dim(conn, layout)
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
