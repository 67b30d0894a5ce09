"""``reap_dead_runs``: a run of this host whose process is gone is marked failed and its writer-pool
slot freed; a live run, a run of another host and a run without quiver's tags are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from quiver.resources.dagster_resources import HOST_TAG, PID_TAG, WRITER_POOL, reap_dead_runs


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def started_run(instance, tags: dict[str, str]) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="pkgs_refresh", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags))
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, run_id, "pkgs__rows")
    return run_id


def test_only_a_dead_run_of_this_host_is_reaped(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots(WRITER_POOL, 4)
        here = socket.gethostname()
        dead = started_run(instance, {HOST_TAG: here, PID_TAG: str(dead_pid())})
        alive = started_run(instance, {HOST_TAG: here, PID_TAG: str(os.getpid())})
        elsewhere = started_run(instance, {HOST_TAG: here + "-other", PID_TAG: str(dead_pid())})
        untagged = started_run(instance, {})

        assert reap_dead_runs(instance) == [dead]
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        for run_id in (alive, elsewhere, untagged):
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_run_ids() == {alive, elsewhere, untagged}
        assert reap_dead_runs(instance) == [], "once"
