"""The jobs' executor: chosen by name (QUIVER_EXECUTOR), the Kubernetes run config the repository
ships (validated by dagster-k8s's own schema), and refreshes through dagster-celery's executor with
a real broker (Debian's redis-server) and two celery workers, all started here on 127.0.0.1."""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import kubernetes.client
import pyarrow.parquet as pq
import pytest
import yaml
from celery import Celery
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from quiver.pipelines.component import DUCKDB_FILE, build_definitions
from quiver.pipelines.jobs import EXECUTOR_ENV, ExecutorChoiceError, choose_executor
from quiver.resources.dagster_resources import WRITER_POOL
from quiver.resources.search import Searcher
from quiver.resources.spec import load_spec
from tests.conftest import ROOT, dataset_entry, write_spec
from tests.invariants import check_at_rest
from tests.servers import STOP_SECONDS, redis_server

K8S_RUN_CONFIG = ROOT / "deploy" / "k8s" / "run_config.yaml"
BIN = Path(sys.executable).parent
WORKERS = 2
DATASETS = ("alpha", "beta")
ROWS = 40  # per dataset
WORKER_START_SECONDS = 60
RUN_SECONDS = 240


# -- choosing ------------------------------------------------------------------------------------
def test_executors_are_chosen_by_name_and_in_process_stays_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert choose_executor() is dg.in_process_executor
    assert choose_executor("multiprocess") is dg.multiprocess_executor
    assert choose_executor("k8s").name == "k8s"
    assert choose_executor("celery").name == "celery"
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert choose_executor() is dg.multiprocess_executor

    spec = load_spec(write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", tmp_path / "p.parquet")]))
    defs = build_definitions(spec, tmp_path / "home", executor="in_process")
    assert {defs.resolve_job_def(f"pkgs_{job}").executor_def.name for job in ("refresh", "snapshot")} == {"in_process"}
    defs = build_definitions(spec, tmp_path / "home")  # from QUIVER_EXECUTOR
    assert defs.resolve_job_def("pkgs_refresh").executor_def is dg.multiprocess_executor


def test_a_celery_broker_in_the_environment_is_fixed_in_the_definitions(monkeypatch, tmp_path):
    """So that runs which sensors and schedules request, with no run config, reach the workers."""
    spec = load_spec(write_spec(tmp_path / "datasets.yaml", [dataset_entry("pkgs", tmp_path / "p.parquet")]))
    monkeypatch.setenv("QUIVER_CELERY_BROKER", "redis://broker.internal:6379/0")
    job = build_definitions(spec, tmp_path / "home", executor="celery").resolve_job_def("pkgs_refresh")
    execution = dg.validate_run_config(job, {})["execution"]["celery"]
    assert (execution["broker"], execution["backend"]) == ("redis://broker.internal:6379/0",) * 2
    monkeypatch.delenv("QUIVER_CELERY_BROKER")  # unset: each run's config names the broker
    job = build_definitions(spec, tmp_path / "home", executor="celery").resolve_job_def("pkgs_refresh")
    run_config = {"execution": {"config": {"broker": "redis://elsewhere:6379/1"}}}
    assert dg.validate_run_config(job, run_config)["execution"]["celery"]["broker"] == "redis://elsewhere:6379/1"
    shipped = yaml.safe_load((ROOT / "deploy" / "celery" / "run_config.yaml").read_text())
    assert dg.validate_run_config(job, shipped)["execution"]["celery"]["backend"] == "redis://127.0.0.1:6379/0"


def test_a_wrong_executor_name_or_a_missing_extra_is_named_with_the_fix(monkeypatch):
    with pytest.raises(ExecutorChoiceError) as wrong:
        choose_executor("dask")
    assert str(wrong.value) == (
        "QUIVER_EXECUTOR='dask' is not an executor quiver knows; use one of in_process, multiprocess, celery, k8s"
    )
    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # as if the extra were not installed
    with pytest.raises(ExecutorChoiceError) as missing:
        choose_executor("celery", "QuiverComponent attribute `executor` in defs/quiver")
    message = str(missing.value)
    assert message.startswith("QuiverComponent attribute `executor` in defs/quiver='celery' needs the 'celery' extra")
    assert "pip install 'quiver[celery]'" in message


# -- Kubernetes ----------------------------------------------------------------------------------
def k8s_config() -> dict:
    return yaml.safe_load(K8S_RUN_CONFIG.read_text())


def kubernetes_model(model: str, raw: dict):
    """A raw Kubernetes part of the config as dagster-k8s reads it when it builds a step's Job
    (camelCase or snake_case keys), into the Kubernetes client's model: unknown keys are refused."""
    model_class = getattr(kubernetes.client, model)
    return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, raw))


def refresh_job_on_k8s(tmp_path) -> dg.JobDefinition:
    spec = load_spec(ROOT / "datasets.yaml")
    return build_definitions(spec, tmp_path / "home", executor="k8s").resolve_job_def(f"{spec.names[0]}_refresh")


def test_the_k8s_run_config_in_the_repository_validates_against_dagster_k8s(tmp_path):
    config = k8s_config()
    executor_config = config["execution"]["config"]
    # the whole run config, against the repository's own refresh job with dagster-k8s's executor
    job = refresh_job_on_k8s(tmp_path)
    assert job.executor_def.name == "k8s"
    assert dg.validate_run_config(job, config)["execution"]["k8s"]["job_namespace"] == "quiver"

    # dagster-k8s's schema lets the raw Kubernetes parts through: the Kubernetes models check them
    step = kubernetes_model("V1Container", {"name": "step", **executor_config["step_k8s_config"]["container_config"]})
    assert step.resources.limits == {"memory": "4Gi"}
    for name, per_step in executor_config["per_step_k8s_config"].items():
        assert name in {
            f"{load_spec(ROOT / 'datasets.yaml').names[0]}__{stage}" for stage in ("rows", "embeddings", "index")
        }
        kubernetes_model("V1Container", {"name": "step", **per_step["container_config"]})
    assert [kubernetes_model("V1Volume", v).persistent_volume_claim.claim_name for v in executor_config["volumes"]] == [
        "quiver-home"
    ]
    assert [kubernetes_model("V1VolumeMount", m).mount_path for m in executor_config["volume_mounts"]] == [
        "/var/lib/quiver"
    ]


def test_a_wrong_key_in_the_k8s_run_config_is_refused(tmp_path):
    job = refresh_job_on_k8s(tmp_path)
    typo = k8s_config()
    typo["execution"]["config"]["job_namspace"] = "quiver"
    with pytest.raises(dg.DagsterInvalidConfigError, match="job_namspace"):
        dg.validate_run_config(job, typo)
    wrong_type = k8s_config()
    wrong_type["execution"]["config"]["max_concurrent"] = "many"
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent"):
        dg.validate_run_config(job, wrong_type)
    container = copy.deepcopy(k8s_config()["execution"]["config"]["step_k8s_config"]["container_config"])
    container["resourcez"] = container.pop("resources")
    with pytest.raises(Exception, match="Unexpected keys in model class V1Container: {'resourcez'}"):
        kubernetes_model("V1Container", {"name": "step", **container})


# -- Celery, end to end --------------------------------------------------------------------------
@contextmanager
def process(command: list[str], log: Path, env: dict, cwd: Path) -> Iterator[subprocess.Popen]:
    """A child process, logged to ``log``, stopped by its pid at the end (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(STOP_SECONDS)


def wait_for_workers(broker: str, names: set[str], children: list[subprocess.Popen], logs: list[Path]) -> None:
    app = Celery(broker=broker, backend=broker)
    deadline = time.monotonic() + WORKER_START_SECONDS
    answered: set[str] = set()
    try:
        while time.monotonic() < deadline:
            for child, log in zip(children, logs, strict=True):
                assert child.poll() is None, f"a celery worker exited ({child.returncode}):\n{log.read_text()[-3000:]}"
            answered = {name.split("@")[0] for reply in app.control.ping(timeout=0.5) or [] for name in reply}
            if names <= answered:
                return
        tails = "\n".join(log.read_text()[-1500:] for log in logs)
        pytest.fail(
            f"celery workers {sorted(names - answered)} did not answer within {WORKER_START_SECONDS} s:\n{tails}"
        )
    finally:
        app.close()


def run_at_once(jobs: list[str], env: dict, cwd: Path) -> None:
    """``dagster job execute`` of each job, all at the same time, each bounded by RUN_SECONDS."""
    with ExitStack() as stack:
        logs = {job: cwd / f"{job}.log" for job in jobs}
        children = {
            job: stack.enter_context(
                process(
                    [str(BIN / "dagster"), "job", "execute", "-m", "quiver.pipelines.definitions", "-j", job],
                    logs[job],
                    env,
                    cwd,
                )
            )
            for job in jobs
        }
        deadline = time.monotonic() + RUN_SECONDS
        for job, child in children.items():
            try:
                code = child.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{job} did not finish within {RUN_SECONDS} s:\n{logs[job].read_text()[-4000:]}")
            assert code == 0, f"{job} failed ({code}):\n{logs[job].read_text()[-4000:]}"


@dataclass
class Step:
    key: str
    worker: str | None = None
    start: float = 0.0
    end: float = 0.0


def steps_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, Step]:
    """Each step of a run: the celery worker that ran it and when, from the run's events."""
    steps: dict[str, Step] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step = steps.setdefault(event.step_key, Step(event.step_key))
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT and event.event_specific_data:
            worker = event.event_specific_data.metadata.get("Celery worker")
            step.worker = worker.value if worker is not None else step.worker
        elif event.event_type == dg.DagsterEventType.STEP_START:
            step.start = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            step.end = record.timestamp
    return steps


def test_two_refreshes_at_once_through_two_celery_workers(tmp_path, sample_table):
    """redis-server and two celery workers (solo pool: one task at a time each) started here; two
    datasets' refresh jobs at the same moment, then their snapshot jobs, each executed by the
    ``dagster`` command with QUIVER_EXECUTOR=celery. Every step runs in a worker; the steps that
    open the DuckDB file (the pool quiver_duckdb_writer, limit 1) never overlap, across runs and
    workers, and nothing deadlocks; each worker loads the model once; afterwards the invariants hold
    and a search finds the rows. About 40 s on two shared cores."""
    entries, firsts = [], {}
    for number, name in enumerate(DATASETS):
        source = tmp_path / "src" / f"{name}.parquet"
        source.parent.mkdir(exist_ok=True)
        rows = sample_table.slice(number * ROWS, ROWS)
        pq.write_table(rows, source)
        entries.append(dataset_entry(name, source))
        firsts[name] = rows.to_pylist()[0]
    spec_path = write_spec(tmp_path / "datasets.yaml", entries)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    dagster_home.mkdir()
    # quiver's instance settings (the writer pool's limit of 1), then the storage created once:
    # two workers opening a fresh SQLite instance at the same moment would race on its schema
    shutil.copyfile(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()

    with ExitStack() as stack:
        broker = stack.enter_context(redis_server()).url
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(dagster_home),
            "QUIVER_DATASETS": str(spec_path),
            "QUIVER_HOME": str(home),
            EXECUTOR_ENV: "celery",
            "QUIVER_CELERY_BROKER": broker,
            "QUIVER_EMBED_THREADS": "1",  # two workers on two shared cores
        }
        names = [f"w{i}" for i in range(WORKERS)]
        logs = [tmp_path / f"{name}.log" for name in names]
        workers = [
            stack.enter_context(
                process(
                    [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "-b", broker,
                     "--result-backend", broker, "worker", "-Q", "dagster", "-c", "1", "--pool", "solo",
                     "--prefetch-multiplier=1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-l", "INFO"],
                    log, env, tmp_path,
                )
            )
            for name, log in zip(names, logs, strict=True)
        ]  # fmt: skip
        wait_for_workers(broker, set(names), workers, logs)

        started = time.monotonic()
        run_at_once([f"{name}_refresh" for name in DATASETS], env, tmp_path)
        run_at_once([f"{name}_snapshot" for name in DATASETS], env, tmp_path)
        elapsed = time.monotonic() - started

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        assert {job: run.status.value for job, run in runs.items()} == {
            f"{name}_{job}": "SUCCESS" for name in DATASETS for job in ("refresh", "snapshot")
        }
        steps = {job: steps_of(instance, run.run_id) for job, run in runs.items()}
    defs = build_definitions(load_spec(spec_path), home, executor="in_process")
    pools = {
        node.name: node.pool for name in DATASETS for node in defs.resolve_job_def(f"{name}_refresh").graph.node_defs
    }
    for job, ran in steps.items():
        assert all(step.worker and step.worker.split("@")[0] in names for step in ran.values()), (job, ran)
        assert all(step.end >= step.start > 0 for step in ran.values()), (job, ran)
    for name in DATASETS:
        assert {"rows", "embeddings", "index"} <= {key.split("__")[1] for key in steps[f"{name}_refresh"]}
    writers = sorted(
        (step for job in steps for step in steps[job].values() if pools.get(step.key) == WRITER_POOL),
        key=lambda step: step.start,
    )
    assert len(writers) >= 2 * 3
    for before, after in itertools.pairwise(writers):
        assert after.start >= before.end, f"DuckDB writers overlapped: {before} and {after}"
    loads = {log.stem: log.read_text().count("loaded model all-MiniLM-L6-v2") for log in logs}
    assert 1 <= sum(loads.values()) and max(loads.values()) == 1, loads  # once per worker that embedded
    used = sorted({step.worker for ran in steps.values() for step in ran.values()})
    print(f"two refreshes then two snapshots through celery: {elapsed:.1f} s; workers used: {used}")

    database = home / DUCKDB_FILE
    searcher = Searcher.for_spec_file(home, spec_path)
    for name in DATASETS:
        assert len(check_at_rest(home / name, database, name)) == ROWS
        first = firsts[name]
        hits = searcher.search(name, first["short_description"], k=3, mode="vector")
        assert first["pkg_id"] in hits.column("pkg_id").to_pylist()
