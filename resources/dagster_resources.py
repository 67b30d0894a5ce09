"""The Dagster layer of the resources, the only module under ``resources/`` that imports Dagster:
the ``ConfigurableResource`` classes (thin, plain fields, heavy state built lazily once per
process) and the asset keys and tags that assets, checks, sensors and jobs share (here, below
assets and sensors, so both import them without reaching up or sideways; the dataset's DuckDB
tables are named by the engine: ``warehouse.layout_for``).

DuckDB itself goes through ``dagster_duckdb.DuckDBResource``; ``open_connection`` wraps it so the
connection is always closed (also on error), the home directory exists, and the writer settings
apply (``warehouse.writer_settings``: small commits stay in the WAL, vectors are not ALP-compressed).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from quiver.resources import warehouse
from quiver.resources.embedding import Embedder, ModelNotFoundError, get_embedder
from quiver.resources.index import HnswParams, IdentityMismatchError, IndexIdentity, IndexStore, read_stats, remote
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.store import LogStats
from quiver.resources.index.text_index import TextConfig
from quiver.resources.object_store import ObjectStoreError, is_object_store_url
from quiver.resources.preflight import preflight
from quiver.resources.search import EmbeddedText, Searcher
from quiver.resources.spec import DatasetSpec, SpecError
from quiver.resources.warehouse.writer_lock import writer_lock

WRITER_POOL = "quiver_duckdb_writer"  # one DuckDB writer at a time (instance limit 1)
# quiver's own errors about the user's data or settings: each message names the dataset and the fix,
# so a run shows it as its failure, not as a traceback of quiver's internals.
USER_ERRORS = (SpecError, warehouse.WarehouseError, ModelNotFoundError, IdentityMismatchError, ObjectStoreError)


def user_errors(body: Callable) -> Callable:
    """An asset body whose ``USER_ERRORS`` fail the run with their one-line message (``dg.Failure``)."""

    @functools.wraps(body)
    def run(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except USER_ERRORS as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None

    return run


def holds_writer_lock(body: Callable) -> Callable:
    """An asset body (context first, the ``duckdb`` resource by name) run under ``writer_step``."""

    @functools.wraps(body)
    def run(context, *args, **kwargs):
        with writer_step(context, kwargs["duckdb"]):
            return body(context, *args, **kwargs)

    return run


def check_before_work(spec: DatasetSpec) -> None:
    """``preflight`` at the top of a run: every problem at once, before anything is written."""
    problems = preflight(spec)
    if problems:
        raise dg.Failure(description="\n".join(problems), allow_retries=False)


@contextmanager
def open_connection(resource: DuckDBResource, holder: str = "a quiver connection") -> Iterator[duckdb.DuckDBPyConnection]:
    Path(resource.database).parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(Path(resource.database), holder), resource.get_connection() as conn:
        try:
            warehouse.writer_settings(conn)
            yield conn
        finally:
            conn.close()


@contextmanager
def writer_step(context: dg.OpExecutionContext, resource: DuckDBResource, step: str | None = None) -> Iterator[None]:
    """Hold the DuckDB file's writer lock for a whole writer step (``warehouse.writer_lock``):
    another writer, of any instance or none, waits for the step, never between its connections.
    ``step`` names it for the others' messages (default: the asset's key; an op of a graph-backed
    asset, such as the fan-out's plan and commit, names itself)."""
    Path(resource.database).parent.mkdir(parents=True, exist_ok=True)
    name = step or context.asset_key.to_user_string()
    with writer_lock(Path(resource.database), f"run {context.run.run_id} step {name}"):
        yield


class EmbedderResource(ConfigurableResource):
    """Embedding models, loaded offline on first use (see ``quiver.resources.embedding``).

    ``backend``: auto (ONNX Runtime on CPU, torch when a CUDA GPU is present), onnx or torch; unset
    reads ``$QUIVER_EMBED_BACKEND``. ``threads``: unset reads ``$QUIVER_EMBED_THREADS``, else every
    CPU the process may run on; never more. ``device`` None picks CUDA if present.
    """

    device: str | None = None
    backend: str | None = None
    threads: int | None = None

    def get(self, model: str) -> Embedder:
        return get_embedder(model, self.device, backend=self.backend, threads=self.threads)


class IndexResource(ConfigurableResource):
    """The index directories under ``index_root`` (default ``home``), one per dataset.

    ``index_root`` may be an ``s3://bucket/prefix`` URL: each index is then published to the bucket
    (``remote.RemoteIndexStore``) from a local working copy under ``<home>/remote/``, which is what
    ``root`` names (the checks and the sensors read it: the state this writer last published)."""

    home: str
    index_root: str | None = None

    @property
    def remote(self) -> bool:
        return self.index_root is not None and is_object_store_url(self.index_root)

    def root(self, dataset: str) -> Path:
        return remote.index_dir_for(Path(self.home), self.index_root, dataset)

    def where(self, dataset: str) -> str:
        """The published index: its bucket URL, or its directory."""
        return remote.dataset_url(self.index_root, dataset) if self.remote else str(self.root(dataset))

    def log_stats(self, dataset: str) -> LogStats | None:
        """The published log's statistics (``read_stats``; on a bucket, from its manifest alone, so
        a sensor reads them on any machine); None while there is no index."""
        if self.remote:
            return remote.published_stats(self.where(dataset))
        root = self.root(dataset)
        return read_stats(root) if manifest_path(root).exists() else None

    def built(self, dataset: str) -> bool:
        if self.remote:
            return remote.read_published(remote.store_for(self.where(dataset))) is not None
        return manifest_path(self.root(dataset)).exists()

    def store(self, spec: DatasetSpec, dim: int) -> IndexStore:
        vectors = spec.vectors
        settings = {
            "dataset": spec.name,
            "identity": IndexIdentity(
                dim=dim, metric=vectors.metric, dtype=vectors.dtype, model=spec.embeddings.identity
            ),
            "params": HnswParams(m=vectors.m, ef_construction=vectors.ef_construction, ef_search=vectors.ef_search),
            "primary_key": spec.primary_key,
            "keep_previous": spec.snapshots.keep_previous,
            "text": text_config(spec),
        }
        if self.remote:
            return remote.RemoteIndexStore(remote.dataset_url(self.index_root, spec.name), self.root(spec.name), **settings)
        return IndexStore(self.root(spec.name), **settings)


def text_config(spec: DatasetSpec) -> TextConfig | None:
    """The full-text index a dataset's snapshots write, from its spec (None when ``full_text`` is off)."""
    if not spec.full_text_columns:
        return None
    return TextConfig(spec.full_text_columns, tuple(spec.embeddings.columns), spec.embeddings.separator, spec.full_text.stemmer)


class SearchResource(ConfigurableResource):
    """Answers queries from the freshest index; never opens the DuckDB file."""

    home: str
    index_root: str | None = None  # a directory or an s3:// URL; None: $QUIVER_INDEX_ROOT, else home
    datasets: list[str] | None = None
    device: str | None = None
    # dataset -> its embedded columns and their separator, for the ``chunk`` result column
    embedded_columns: dict[str, list[str]] = {}
    separators: dict[str, str] = {}
    _searcher: Searcher | None = PrivateAttr(default=None)

    def searcher(self) -> Searcher:
        if self._searcher is None:
            texts = {
                name: EmbeddedText(tuple(columns), self.separators.get(name, "\n"))
                for name, columns in self.embedded_columns.items()
            }
            self._searcher = Searcher(Path(self.home), self.datasets, self.device, texts, index_root=self.index_root)
        return self._searcher

    def search(
        self,
        dataset: str,
        query,
        k: int = 10,
        columns: list[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
        mode: str | None = None,
        weights: dict[str, float] | None = None,
        keywords: str | list[str] | None = None,
    ) -> pa.Table:
        """``Searcher.search``: ``mode`` hybrid (default for text), vector or text."""
        return self.searcher().search(
            dataset, query, k=k, columns=columns, where=where, ef_search=ef_search, group=group, mode=mode,
            weights=weights, keywords=keywords,
        )

    def search_batch(
        self,
        dataset: str,
        queries,
        k: int = 10,
        columns: list[str] | None = None,
        where: str | None = None,
        ef_search: int | None = None,
        group: bool = True,
        mode: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> pa.Table:
        return self.searcher().search_batch(
            dataset, queries, k=k, columns=columns, where=where, ef_search=ef_search, group=group, mode=mode, weights=weights
        )


# -- asset keys and tags ---------------------------------------------------------------------------
STAGES = ("source", "rows", "embeddings", "index", "snapshot")


def key(spec: DatasetSpec, stage: str) -> dg.AssetKey:
    assert stage in STAGES, stage
    return dg.AssetKey([spec.name, stage])


def tags(spec: DatasetSpec) -> dict[str, str]:
    return {"dataset": spec.name}


def source_spec(spec: DatasetSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key(spec, "source"),
        description=f"Source Parquet of dataset {spec.name!r}: {spec.source_path}",
        group_name="sources",
        kinds={"parquet"},
        tags=tags(spec),
        metadata={"path": dg.MetadataValue.path(str(spec.source_path))},
    )


# -- runs killed before they ended ----------------------------------------------------------------
# A run whose process is SIGKILLed never ends in the instance and keeps the writer pool's one slot,
# so every later writer would wait for it forever. Each writer step tags its run with its host and
# pid (``mark_run``); ``reap_dead_runs`` (``python -m quiver refresh``, the source sensor) marks a
# run of this host whose process is gone as failed and frees its slots.
HOST_TAG, PID_TAG = "quiver/host", "quiver/pid"
UNFINISHED = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]


def mark_run(context: dg.OpExecutionContext) -> None:
    """Tag the run with the host and pid that run it: the in-process executor's own process; with
    the multiprocess executor, each step's process ends with its step, so the run's process is its
    parent (else the run would look dead between two writer steps, e.g. while the fan-out's
    workers embed)."""
    multiprocess = context.job_def.executor_def.name == dg.multiprocess_executor.name
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getppid() if multiprocess else os.getpid())}
    if any(context.run.tags.get(k) != v for k, v in tags.items()):
        context.instance.add_run_tags(context.run.run_id, tags)


def reap_dead_runs(instance: dg.DagsterInstance, host: str | None = None) -> list[str]:
    """Runs of ``host`` (default: this one) that never ended and whose process is gone: marked
    failed, their concurrency slots freed. Returns their run ids. Runs of other hosts, and runs
    without the tags, are left alone: their process cannot be checked from here."""
    host = host or socket.gethostname()
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid <= 0 or _alive(pid):
            continue
        instance.report_run_failed(
            run,
            f"process {pid} on {host} is gone (killed?) and never ended this run; quiver marked it failed "
            "and freed its writer-pool slot, so the next run can start",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
