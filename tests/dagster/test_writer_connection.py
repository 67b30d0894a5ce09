"""``open_connection``: the writer assets' DuckDB settings (``warehouse.writer_settings``).

A checkpoint at every close rewrites the partly filled blocks of each column a commit touched, so
small refreshes wrote several times their own size; with the WAL kept they append to it, and the
database file is left alone until the WAL passes DuckDB's checkpoint threshold. Vectors are stored
uncompressed: DuckDB's ALPRD made them half as big again.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from quiver.resources.dagster_resources import open_connection


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_small_commits_stay_in_the_wal_and_leave_the_file_alone(tmp_path):
    database = tmp_path / "quiver.duckdb"
    wal = tmp_path / "quiver.duckdb.wal"
    resource = DuckDBResource(database=str(database))
    with open_connection(resource) as conn:
        conn.execute("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)")
        conn.execute("CHECKPOINT")
    assert database.stat().st_size > 1_000_000 and not wal.exists()
    before = _digest(database)

    for round_ in range(3):
        with open_connection(resource) as conn:
            conn.execute("INSERT INTO t SELECT 1000000 + range + ? * 100, 'new' FROM range(100)", [round_])
            conn.execute("DELETE FROM t WHERE i < ?", [10 * (round_ + 1)])
    assert wal.exists() and wal.stat().st_size > 0
    assert _digest(database) == before  # not one byte of the database file was rewritten

    # Readers see the WAL's commits, read-only too; the data is all there.
    with duckdb.connect(str(database), read_only=True) as reader:
        assert reader.execute("SELECT count(*), count(*) FILTER (s = 'new') FROM t").fetchone() == (200000 - 30 + 300, 300)


def test_a_writer_killed_after_commit_loses_nothing(tmp_path):
    database = tmp_path / "quiver.duckdb"
    resource = DuckDBResource(database=str(database))
    with open_connection(resource) as conn:
        conn.execute("CREATE TABLE t (i INTEGER)")
    code = textwrap.dedent(
        f"""
        import os, signal
        from dagster_duckdb import DuckDBResource
        from quiver.resources.dagster_resources import open_connection
        with open_connection(DuckDBResource(database={str(database)!r})) as conn:
            conn.execute("INSERT INTO t SELECT range FROM range(50)")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert killed.returncode == -9
    with duckdb.connect(str(database)) as conn:
        assert conn.execute("SELECT count(*), sum(i) FROM t").fetchone() == (50, sum(range(50)))


def test_vectors_take_their_raw_size(tmp_path):
    database = tmp_path / "quiver.duckdb"
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pa.table({"_vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 384)})
    with open_connection(DuckDBResource(database=str(database))) as conn:
        conn.execute("CREATE TABLE e (_vector FLOAT[384])")
        conn.register("incoming", table)
        conn.execute("INSERT INTO e SELECT * FROM incoming")
        conn.execute("CHECKPOINT")
        methods = conn.execute(
            "SELECT list(DISTINCT compression) FROM pragma_storage_info('e') WHERE segment_type = 'FLOAT'"
        ).fetchone()[0]
        stored = np.array(conn.execute("SELECT _vector FROM e").fetchnumpy()["_vector"].tolist(), dtype=np.float32)
    assert methods == ["Uncompressed"]
    assert database.stat().st_size < 1.1 * vectors.nbytes
    np.testing.assert_array_equal(stored, vectors)
