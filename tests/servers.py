"""Real servers for the tests, on 127.0.0.1: Debian's ``redis-server`` and moto's S3.

Each context manager starts the binary on a free port, waits (bounded) until it answers, yields a
:class:`Server`, and stops it by its pid when the block ends, also when the test fails: SIGTERM,
then SIGKILL after a bound. A server that is not installed skips the test and says what to install.

moto's S3 runs single-threaded here (its own WSGI app under werkzeug, ``threaded=False``): its
conditional PUT is a check then a write, so concurrent requests on the stock threaded server could
both pass the check; served one at a time, it is atomic as S3's is, and a race test measures the
client, not moto.
"""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_SECONDS = 20.0  # from the start to the first answer
STOP_SECONDS = 10.0  # from SIGTERM to SIGKILL
HOST = "127.0.0.1"

MOTO_SERIAL = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""


class ServerStartError(RuntimeError):
    """A test server did not answer in time, or exited; the message holds the tail of its log."""


@dataclass
class Server:
    """A running server: ``url`` to give clients, ``pid`` to stop it by, its log file."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path
    stop_seconds: float = STOP_SECONDS
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``stop_seconds``; the exit status. Idempotent."""
        if not self.stopped:
            self.stopped = True
            if self.process.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(self.stop_seconds)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.process.wait(STOP_SECONDS)
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextmanager
def serve(
    name: str,
    command: Callable[[int], list[str]],
    url: Callable[[int], str],
    answers: Callable[[int], bool],
    timeout: float = START_SECONDS,
    stop_seconds: float = STOP_SECONDS,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``command(port)`` on a free port, wait until ``answers(port)``, yield, stop by pid.

    A port taken between the probe and the bind makes the server exit at once: that is retried on
    a new port (three tries), any other early exit or a timeout raises ServerStartError."""
    logs = Path(tempfile.mkdtemp(prefix=f"quiver-{name}-"))
    try:
        for attempt in range(3):
            port = free_port()
            log = logs / f"{name}-{attempt}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    command(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            server = Server(name, url(port), process, log, stop_seconds)
            try:
                if _wait_until_answering(server, port, answers, timeout):
                    yield server
                    return
            finally:
                server.stop()
            if "in use" not in server.log_tail().lower():
                raise ServerStartError(
                    f"{name} exited with status {process.returncode} before answering:\n{server.log_tail()}"
                )
        raise ServerStartError(f"{name}: three free ports were taken before it could bind one")
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _wait_until_answering(server: Server, port: int, answers: Callable[[int], bool], timeout: float) -> bool:
    """True once it answers, False if it exited first; ServerStartError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if answers(port):
            return True
        time.sleep(0.05)
    raise ServerStartError(
        f"{server.name} (pid {server.pid}) did not answer on {HOST}:{port} within {timeout:g} s:\n{server.log_tail()}"
    )


# -- redis ----------------------------------------------------------------------------------------
def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(timeout: float = START_SECONDS) -> Iterator[Server]:
    """Debian's redis-server, in memory only (no RDB, no AOF); ``url`` is ``redis://127.0.0.1:PORT/0``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: `make install` installs it (apt-get install redis-server)")
    with serve(
        "redis-server",
        lambda port: [
            binary,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.gettempdir(),
        ],
        lambda port: f"redis://{HOST}:{port}/0",
        _redis_answers,
        timeout,
    ) as server:
        yield server


# -- moto's S3 ------------------------------------------------------------------------------------
def _http_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/moto-api/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


@contextmanager
def moto_server(timeout: float = START_SECONDS, check_credentials: bool = False) -> Iterator[Server]:
    """moto's S3, no bucket yet; ``url`` is ``http://127.0.0.1:PORT``. Any credentials pass, unless
    ``check_credentials``: then moto checks them against its IAM (which knows none), so every
    request is refused as a real store refuses unknown keys."""
    missing = [name for name in ("moto", "flask", "werkzeug") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"moto's server is not installed (no {', '.join(missing)}): `pip install .[test]` (make install does)"
        )
    with serve(
        "moto",
        lambda port: [sys.executable, "-c", MOTO_SERIAL, HOST, str(port)],
        lambda port: f"http://{HOST}:{port}",
        _http_answers,
        timeout,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else None,
    ) as server:
        yield server


def aws_env(endpoint: str, **overrides) -> dict[str, str]:
    """The ``AWS_*`` variables that point obstore at a local S3 server (None in ``overrides``: unset)."""
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on a moto server (it takes an unsigned PUT)."""
    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10) as answer:
        assert answer.status == 200, answer.status


@contextmanager
def header_stripping_proxy(upstream: str) -> Iterator[str]:
    """An S3 endpoint that ignores conditional writes: forwards everything to ``upstream`` but drops
    If-None-Match and If-Match, as stores without conditional-write support behave."""
    host, port = upstream.removeprefix("http://").split(":")

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("if-none-match", "if-match")}
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        def log_message(self, *args) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
