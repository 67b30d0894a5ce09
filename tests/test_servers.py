"""The test servers of tests/servers.py: they answer, and they are gone by pid afterwards, also
when the block fails."""

from __future__ import annotations

import os
import re
import sys
import urllib.request

import pytest

from tests.servers import ServerStartError, _redis_answers, create_bucket, moto_server, redis_server, serve


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_redis_server_answers_then_is_stopped_by_pid():
    with redis_server() as server:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        assert server.url.startswith("redis://127.0.0.1:") and _redis_answers(port)
    assert gone(server.pid) and server.process.returncode == 0  # SIGTERM: redis exits cleanly
    assert not _redis_answers(port)


def test_moto_server_serves_s3_and_is_stopped_when_the_test_fails():
    with pytest.raises(RuntimeError, match="the test failed"), moto_server() as server:
        create_bucket(server.url, "probe")
        with urllib.request.urlopen(f"{server.url}/probe", timeout=5) as answer:
            assert b"ListBucketResult" in answer.read()
        raise RuntimeError("the test failed")
    assert gone(server.pid)


def test_a_server_that_never_answers_fails_in_bounded_time_and_is_killed():
    ignores_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    started = serve(
        "sleeper",
        lambda port: [sys.executable, "-c", ignores_sigterm],
        lambda port: "",
        lambda port: False,
        timeout=0.5,
        stop_seconds=0.5,
    )
    never = r"\(pid (\d+)\) did not answer on 127\.0\.0\.1:\d+ within 0\.5 s"
    with pytest.raises(ServerStartError, match=never) as failed, started:
        pass  # pragma: no cover - never reached
    assert gone(int(re.search(r"pid (\d+)", str(failed.value)).group(1)))  # it ignored SIGTERM: SIGKILL took it
