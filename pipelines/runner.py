"""``python -m quiver refresh``: each dataset's refresh job, then its snapshot job when one is due,
run through Dagster in this process and recorded in the Dagster instance (the UI shows the runs).

One process for both jobs: Dagster and the definitions load once, the model once, and a refresh
that finds no change costs about what the process start costs. Before running, the command frees
what a killed run of this machine left behind: a run whose process was SIGKILLed never ends in the
instance, and it keeps the writer pool's one slot (``dagster.yaml``), so every later run would
wait for it forever (``dagster_resources.reap_dead_runs``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from quiver.pipelines.definitions import build_definitions
from quiver.resources.dagster_resources import key, reap_dead_runs
from quiver.resources.index import read_stats
from quiver.resources.index.manifest import manifest_path
from quiver.resources.index.snapshot_policy import Decision, SnapshotPolicy, decide
from quiver.resources.spec import DatasetSpec, QuiverSpec, default_home


class RefreshFailed(RuntimeError):
    """A refresh or snapshot run failed; the message is its step's error, one line."""


INSTANCE_SETTINGS = Path(__file__).with_name("dagster.yaml")  # the writer pool's limit, the run queue, no telemetry


def instance_home(say: Callable[[str], None] = print) -> Path:
    """``$DAGSTER_HOME``, else ``<QUIVER_HOME>/dagster``; an instance directory without settings
    gets quiver's (``pipelines/dagster.yaml``, the file ``make demo`` copies), so the runs are
    kept, the UI shows them (``DAGSTER_HOME=<it> dagster dev``) and writers take turns."""
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


def _run(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance) -> None:
    result = defs.resolve_job_def(job_name).execute_in_process(
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # progress, not Dagster's events
        instance=instance,
        raise_on_error=False,
    )
    if result.success:
        return
    failures = [e for e in result.all_events if e.is_step_failure]
    error = failures[0].step_failure_data.error if failures else None
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
    root = home / dataset.name
    if not manifest_path(root).exists():
        return Decision(False, "no index yet")
    return decide(read_stats(root), SnapshotPolicy.from_spec(dataset.snapshots))
