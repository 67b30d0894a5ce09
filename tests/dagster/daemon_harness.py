"""A real ``dagster-daemon run`` on a temporary ``DAGSTER_HOME`` and the project's workspace.

Used by the daemon end-to-end test and the freshness benchmark: the daemon (and nothing else) runs
the sensors, the run queue and the runs, exactly as users run it; this side only drops files and
reads the instance (runs, sensor cursors, ticks) to see what happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

ROOT = Path(__file__).resolve().parents[2]
DAEMON = Path(sys.executable).with_name("dagster-daemon")


class DaemonTimeout(AssertionError):
    pass


class Daemon:
    def __init__(self, workdir: Path, spec_path: Path, quiver_home: Path, sensor_interval: int | None):
        self.dagster_home = workdir / "dagster_home"
        self.log_path = workdir / "daemon.log"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "QUIVER_DATASETS": str(spec_path),
            "QUIVER_HOME": str(quiver_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        if sensor_interval is None:
            self.env.pop("QUIVER_SENSOR_INTERVAL_SECONDS", None)
        else:
            self.env["QUIVER_SENSOR_INTERVAL_SECONDS"] = str(sensor_interval)
        self.process: subprocess.Popen | None = None
        self._instance: DagsterInstance | None = None

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "pipelines" / "dagster.yaml", self.dagster_home / "dagster.yaml")  # the shipped instance config
        # Create the storage before the daemon and its code server both race to create it on
        # first start (two alembic stamps in one fresh SQLite file fail both): `make dev` does the
        # same with `dagster instance migrate`.
        subprocess.run(
            [str(DAEMON.with_name("dagster")), "instance", "migrate"], env=self.env, check=True, capture_output=True
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(DAEMON), "run", "-w", str(ROOT / "workspace.yaml")],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the code server and run workers too
            )

    def stop(self) -> None:
        """SIGTERM the daemon's process group by its id; SIGKILL what is left after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if self._instance is not None:
            self._instance.dispose()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what happened ------------------------------------------------------------------------
    @property
    def instance(self) -> DagsterInstance:
        if self._instance is None:
            self._instance = DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_for(self, what: str, check: Callable[[], object], timeout: float, poll: float = 0.5):
        """Poll ``check`` until it returns something truthy; fail with the daemon's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DaemonTimeout(
                    f"the daemon exited ({self.process.returncode}) waiting for {what}\n{self.log_tail()}"
                )
            value = check()
            if value:
                return value
            time.sleep(poll)
        raise DaemonTimeout(f"no {what} within {timeout:.0f}s\n--- daemon log ---\n{self.log_tail()}")

    def sensor_state(self, name: str):
        for state in self.instance.all_instigator_state():
            if state.instigator_name == name:
                return state
        return None

    def sensor_cursor(self, name: str) -> str | None:
        state = self.sensor_state(name)
        data = state.instigator_data if state is not None else None
        return getattr(data, "cursor", None)

    def ticks(self, name: str) -> list:
        """The sensor's ticks, oldest first."""
        state = self.sensor_state(name)
        if state is None:
            return []
        return list(reversed(self.instance.get_ticks(state.instigator_origin_id, state.selector_id)))

    def runs(self, job: str) -> list:
        """Runs of ``job``, oldest first."""
        return list(reversed(self.instance.get_runs(RunsFilter(job_name=job))))

    def finished_runs(self, job: str) -> list:
        done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        return [run for run in self.runs(job) if run.status in done]

    def run_times(self, run_id: str) -> dict:
        """Create, start and end times of a run (epoch seconds)."""
        record = self.instance.get_run_record_by_id(run_id)
        return {"created": record.create_timestamp.timestamp(), "start": record.start_time, "end": record.end_time}
