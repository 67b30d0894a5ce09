"""Jobs per dataset: a refresh (source -> rows -> embeddings -> commit log) and a snapshot, and the
executor they run their steps with.

The refresh leaves folding the log to the snapshot job, which the snapshot sensor requests when
the spec's thresholds are crossed; the snapshot job never opens DuckDB, so it does not wait for
the writer pool. By default both run their steps in the run's own process: the steps follow one
another anyway (one writer at a time), and a process per step would pay Dagster's start-up and the
model's load again for each.

``QUIVER_EXECUTOR`` (or ``build_definitions(executor=...)``, QuiverComponent's ``executor``) picks
another: ``in_process`` (the default), ``multiprocess``, ``celery`` (dagster-celery, the ``celery``
extra) or ``k8s`` (dagster-k8s's k8s_job_executor, the ``k8s`` extra). The last two are imported only
when chosen. With ``celery``, ``QUIVER_CELERY_BROKER`` (and ``QUIVER_CELERY_BACKEND``, default: the
broker) fixes the broker in the definitions, so runs that sensors and schedules request reach the
workers too; unset, each run's config names it (deploy/celery/run_config.yaml). ``k8s`` takes its
settings from the run config (deploy/k8s/run_config.yaml). See the README, "Running beyond one machine".
"""

from __future__ import annotations

import os

import dagster as dg

from quiver.resources.dagster_resources import key
from quiver.resources.spec import DatasetSpec

EXECUTOR_ENV = "QUIVER_EXECUTOR"
CELERY_BROKER_ENV = "QUIVER_CELERY_BROKER"
CELERY_BACKEND_ENV = "QUIVER_CELERY_BACKEND"
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")


class ExecutorChoiceError(ValueError):
    """An unknown executor name, or one whose extra is not installed."""


def choose_executor(name: str | None = None, source: str = EXECUTOR_ENV) -> dg.ExecutorDefinition:
    """The executor called ``name`` (None: ``$QUIVER_EXECUTOR``, else in_process); ``source`` says
    where the name came from, for the error."""
    if name is None:
        name = os.environ.get(EXECUTOR_ENV) or "in_process"
    chosen = name.strip().lower().replace("-", "_")
    if chosen == "in_process":
        return dg.in_process_executor
    if chosen == "multiprocess":
        return dg.multiprocess_executor
    if chosen == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise _missing_extra(source, name, "celery", exc) from None
        broker = os.environ.get(CELERY_BROKER_ENV)
        if not broker:
            return celery_executor
        backend = os.environ.get(CELERY_BACKEND_ENV) or broker
        return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")
    if chosen == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise _missing_extra(source, name, "k8s", exc) from None
        return k8s_job_executor
    raise ExecutorChoiceError(f"{source}={name!r} is not an executor quiver knows; use one of {', '.join(EXECUTORS)}")


def _missing_extra(source: str, name: str, extra: str, exc: ImportError) -> ExecutorChoiceError:
    return ExecutorChoiceError(
        f"{source}={name!r} needs the {extra!r} extra, which is not installed ({exc}); "
        f"install it with: pip install 'quiver[{extra}]', or choose another executor ({', '.join(EXECUTORS)})"
    )


def refresh_job(spec: DatasetSpec, executor: dg.ExecutorDefinition | None = None) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_refresh",
        selection=dg.AssetSelection.assets(*(key(spec, s) for s in ("rows", "embeddings", "index"))),
        description=f"Read {spec.name!r}'s source, embed what changed, append the changes to the commit log.",
        tags={"dataset": spec.name},
        executor_def=executor or dg.in_process_executor,
    )


def snapshot_job(spec: DatasetSpec, executor: dg.ExecutorDefinition | None = None) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{spec.name}_snapshot",
        selection=dg.AssetSelection.assets(key(spec, "snapshot")),
        description=f"Fold {spec.name!r}'s commit log into a new published snapshot.",
        tags={"dataset": spec.name},
        executor_def=executor or dg.in_process_executor,
    )
