"""``python -m quiver refresh``: each dataset's refresh job, then its snapshot job when one is due,
run through Dagster in this process and recorded in the Dagster instance (the UI shows the runs).

One process for both jobs: Dagster and the definitions load once, the model once, and a refresh
that finds no change costs about what the process start costs. Before running, the command frees
what a killed run of this machine left behind: a run whose process was SIGKILLed never ends in the
instance, and it keeps the writer pool's one slot (``dagster.yaml``), so every later run would
wait for it forever (``dagster_resources.reap_dead_runs``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from quiver.pipelines.definitions import build_definitions
from quiver.resources.dagster_resources import key, reap_dead_runs
from quiver.resources.index import read_stats
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.remote import index_dir_for
from quiver.resources.index.snapshot_policy import Decision, SnapshotPolicy, decide
from quiver.resources.preflight import preflight
from quiver.resources.spec import DatasetSpec, QuiverSpec, default_home
from quiver.resources.spec_file import default_index_root


class RefreshFailed(RuntimeError):
    """A refresh or snapshot run failed; the message is its step's error, one line."""


INSTANCE_SETTINGS = Path(__file__).with_name("dagster.yaml")  # the writer pool's limit, the run queue, no telemetry


def instance_home(say: Callable[[str], None] = print) -> Path:
    """``$DAGSTER_HOME``, else ``<QUIVER_HOME>/dagster``; an instance directory without settings
    gets quiver's (``pipelines/dagster.yaml``, the file ``make demo`` copies), so the runs are
    kept, the UI shows them (``DAGSTER_HOME=<it> dg dev -w workspace.yaml``) and writers take turns."""
    home = Path(os.environ.get("DAGSTER_HOME") or default_home() / "dagster")
    settings = home / "dagster.yaml"
    if not settings.exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTANCE_SETTINGS, settings)
        say(f"created a Dagster instance at {home} (quiver's settings); set DAGSTER_HOME={home} to see its runs in the UI")
    return home


def open_instance(say: Callable[[str], None] = print) -> dg.DagsterInstance:
    """The instance of ``instance_home`` (``DAGSTER_HOME`` is set to it for this process)."""
    os.environ["DAGSTER_HOME"] = str(instance_home(say))
    return dg.DagsterInstance.get()


@dataclass
class DatasetRefresh:
    dataset: str
    summary: str  # the embeddings asset's summary line
    snapshot: str  # what the snapshot decision said, and whether the snapshot job ran


def refresh(
    spec: QuiverSpec,
    datasets: list[str],
    instance: dg.DagsterInstance,
    say: Callable[[str], None] = print,
    snapshot: bool = True,
) -> list[DatasetRefresh]:
    """Reap dead runs, then for each dataset run ``<ds>_refresh`` and, when the spec's thresholds
    say so (the snapshot sensor's decision), ``<ds>_snapshot``. Raises ``RefreshFailed``."""
    for run_id in reap_dead_runs(instance):
        say(f"freed the writer slot of run {run_id}, whose process was killed before it ended")
    problems = [problem for name in datasets for problem in preflight(spec.get(name))]
    if problems:  # every problem at once, before any run starts
        raise RefreshFailed("\n".join(problems))
    done = []
    home = default_home()
    defs = build_definitions(spec, home)
    for name in datasets:
        dataset = spec.get(name)
        _run(defs, f"{name}_refresh", instance)
        embeddings = _metadata(instance, key(dataset, "embeddings"))
        decision = _snapshot_decision(dataset, home)
        line = f"{name}: {embeddings.get('summary', '?')}"
        if snapshot and decision.due:
            _run(defs, f"{name}_snapshot", instance)
            outcome = f"snapshot taken ({decision.reason})"
        else:
            outcome = f"no snapshot: {decision.reason}"
        say(f"{line}; {outcome}")
        done.append(DatasetRefresh(name, embeddings.get("summary", ""), outcome))
    return done


class _FirstLine(logging.Formatter):
    """A failure's first line (``... STEP_FAILURE - Execution of step ... failed.``), not its stack:
    the refresh command says what failed in one line of its own (``RefreshFailed``)."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).splitlines()[0]


@dg.logger(description="quiver refresh's console: one line per event, progress at INFO")
def _one_line_console(_init_context) -> logging.Logger:
    # Its own object, outside logging's registry: never shared with another run, never configured by
    # a library that configures the root logger.
    logger = logging.Logger("quiver.refresh", logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FirstLine("%(asctime)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    return logger


def _run(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance) -> None:
    job = defs.resolve_job_def(job_name).with_logger_defs({"console": _one_line_console})
    result = job.execute_in_process(run_config={"loggers": {"console": {}}}, instance=instance, raise_on_error=False)
    if result.success:
        return
    failures = [e for e in result.all_events if e.is_step_failure]
    data = failures[0].step_failure_data if failures else None
    if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
        message = data.user_failure_data.description  # a dg.Failure: quiver's own one-line message
    else:
        error = data.error if data else None
        while error is not None and error.cause is not None and "dagster" in (error.cls_name or "").lower():
            error = error.cause  # Dagster's wrapper: the user's own error is its cause
        message = (error.message.strip().splitlines() or ["?"])[0] if error else "the run failed; see it in the Dagster UI"
    raise RefreshFailed(f"{job_name} (run {result.run_id}): {message}")


def _metadata(instance: dg.DagsterInstance, asset: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(asset)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def _snapshot_decision(dataset: DatasetSpec, home: Path) -> Decision:
    root = index_dir_for(home, default_index_root(), dataset.name)
    if not manifest_path(root).exists():
        return Decision(False, "no index yet")
    return decide(read_stats(root), SnapshotPolicy.from_spec(dataset.snapshots))
