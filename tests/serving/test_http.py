"""The HTTP surface: ``python -m quiver serve`` in a subprocess, called with a real HTTP client."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from quiver.resources.search import Searcher
from quiver.resources.spec import load_spec
from tests.conftest import ROOT
from tests.serving.conftest import env_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(built, log: Path, args: tuple[str, ...] = (), env: dict | None = None):
    """``python -m quiver serve`` on a free loopback port: yields (url, log); stopped by its pid."""
    port = _free_port()
    with log.open("w") as out:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [sys.executable, "-m", "quiver", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env={**env_for(built), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)
    try:
        yield url, log
    finally:
        proc.terminate()  # by pid; uvicorn shuts down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    with running_server(built, tmp_path_factory.mktemp("http") / "server.log") as running:
        yield running


def call(url: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health(server):
    status, body = call(server[0], "/health")
    assert status == 200
    assert body == {"status": "ok", "datasets": [{"dataset": "pkgs", "built": True, "vectors": 150, "served_seq": 150}]}


SPICE = {"value", "score", "dataset", "primary_key", "metadata"}  # a match's fields, as in Spice
HYBRID = SPICE | {"fused_score", "text_score", "vector_rank", "text_rank"}
ASEBA = 1188  # package "aseba": its name is a word only the full-text pass ranks first


def test_search_spice_shape(server, built):
    """The default on a dataset with a full-text index (the spec's default) is hybrid."""
    _, home, table = built
    request = {"text": "text editor", "datasets": ["pkgs"], "additional_columns": ["section"], "limit": 5}
    status, body = call(server[0], "/v1/search", request, headers={"Content-Type": "application/json"})
    assert status == 200, body
    assert set(body) == {"matches", "duration_ms"} and isinstance(body["duration_ms"], int)
    matches = body["matches"]
    assert len(matches) == 5
    assert all(set(m) == HYBRID for m in matches)
    assert [m["fused_score"] for m in matches] == sorted((m["fused_score"] for m in matches), reverse=True)
    rows = {r["pkg_id"]: r for r in table.to_pylist()}
    for m in matches:
        row = rows[m["primary_key"]["pkg_id"]]
        assert m["dataset"] == "pkgs" and set(m["primary_key"]) == {"pkg_id"}
        assert m["value"] == f"{row['package']}: {row['short_description']}"  # the text that was embedded
        assert m["metadata"] == {"section": row["section"]}
    python = Searcher(home, ["pkgs"]).search("pkgs", "text editor", k=5)
    assert [m["primary_key"]["pkg_id"] for m in matches] == python.column("pkg_id").to_pylist()
    for m, row in zip(matches, python.to_pylist()):
        assert {n: m[n] for n in HYBRID - SPICE} == {n: row[n] for n in HYBRID - SPICE}
        assert m["score"] == pytest.approx(row["score"])  # the vector similarity, beside the fused score


def test_mode_vector_is_spice_shape_by_similarity(server, built):
    home = built[1]
    status, body = call(server[0], "/v1/search", {"text": "text editor", "mode": "vector", "limit": 5})
    assert status == 200, body
    matches = body["matches"]
    assert all(set(m) == SPICE for m in matches)
    python = Searcher(home, ["pkgs"]).search("pkgs", "text editor", k=5, mode="vector")
    assert [m["primary_key"]["pkg_id"] for m in matches] == python.column("pkg_id").to_pylist()
    assert [m["score"] for m in matches] == pytest.approx(python.column("score").to_pylist())
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)


def test_mode_text_finds_a_name_by_bm25(server, built):
    home = built[1]
    status, body = call(server[0], "/v1/search", {"text": "aseba", "mode": "text", "additional_columns": ["package"]})
    assert status == 200, body
    matches = body["matches"]
    assert matches[0]["primary_key"] == {"pkg_id": ASEBA} and matches[0]["metadata"] == {"package": "aseba"}
    assert all(set(m) == SPICE for m in matches)
    python = Searcher(home, ["pkgs"]).search("pkgs", "aseba", mode="text")
    assert [m["score"] for m in matches] == pytest.approx(python.column("score").to_pylist())  # BM25
    vector = Searcher(home, ["pkgs"]).search("pkgs", "aseba", mode="vector")
    assert vector.column("pkg_id")[0].as_py() != ASEBA  # what the text pass adds


def test_keywords_make_it_hybrid(server, built):
    """As in Spice: keywords beside the text make the search hybrid, the text pass searching them."""
    spec_path, home, _ = built
    request = {"text": "robot control framework", "keywords": ["aseba"], "limit": 5}
    status, body = call(server[0], "/v1/search", request)
    assert status == 200, body
    matches = body["matches"]
    assert all(set(m) == HYBRID for m in matches)
    by_pk = {m["primary_key"]["pkg_id"]: m for m in matches}
    assert by_pk[ASEBA]["text_rank"] == 1 and by_pk[ASEBA]["text_score"] > 0
    assert all(m["text_rank"] is None and m["text_score"] is None for pk, m in by_pk.items() if pk != ASEBA)
    python = Searcher.for_spec(home, load_spec(spec_path)).search(
        "pkgs", "robot control framework", k=5, keywords=["aseba"]
    )
    assert list(by_pk) == python.column("pkg_id").to_pylist()
    assert [m["vector_rank"] for m in matches] == python.column("vector_rank").to_pylist()
    status, body = call(server[0], "/v1/search", {**request, "mode": "text"})
    assert status == 200 and [m["primary_key"]["pkg_id"] for m in body["matches"]] == [ASEBA]


def test_defaults_all_datasets_and_no_content_type(server):
    # Spice's curl example sends no Content-Type; datasets left out means every dataset.
    status, body = call(server[0], "/v1/search", raw=b'{"text": "network tools"}')
    assert status == 200, body
    assert len(body["matches"]) == 10 and {m["dataset"] for m in body["matches"]} == {"pkgs"}
    assert all(m["metadata"] == {} for m in body["matches"])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"datasets": ["pkgs"]}', '"text" is required'),
        (b'{"text": "   "}', '"text" is required'),
        (b'{"text": "x", "limit": 0}', '"limit" must be a positive integer, got 0'),
        (b'{"text": "x", "limit": "5"}', '"limit" must be a positive integer'),
        (b'{"text": "x", "datasets": "pkgs"}', '"datasets" must be a list of strings'),
        (b'{"text": "x", "datasets": []}', '"datasets" is empty'),
        (b'{"text": "x", "keyword": ["a"]}', "unknown fields ['keyword']"),
        (b'{"text": "x", "mode": "fuzzy"}', '"mode" must be one of "hybrid", "vector", "text", got "fuzzy"'),
        (b'{"text": "x", "mode": ["text"]}', '"mode" must be one of "hybrid", "vector", "text", got ["text"]'),
        (b'{"text": "x", "keywords": "aseba"}', '"keywords" must be a list of strings, got "aseba"'),
        (b'{"text": "x", "keywords": ["aseba", 3]}', '"keywords" must be a list of strings'),
        (b'{"text": "x", "keywords": ["  "]}', '"keywords" must hold some words'),
        (b'{"text": "x", "keywords": ["aseba"], "mode": "vector"}', 'use them with "mode" hybrid or text'),
        (b'{"text": "x", "additional_columns": ["price"]}', "additional_columns ['price'] are not served"),
    ],
)
def test_bad_requests_400(server, raw, message):
    status, body = call(server[0], "/v1/search", raw=raw)
    assert status == 400 and message in body["error"], body


def test_unknown_dataset_404(server):
    status, body = call(server[0], "/v1/search", {"text": "x", "datasets": ["nope"]})
    assert status == 404 and body == {"error": "unknown dataset 'nope'; known datasets: pkgs"}


def test_listens_on_loopback_by_default(server):
    line = next(line for line in server[1].read_text().splitlines() if "running on" in line.lower())
    assert "http://127.0.0.1:" in line


# --- where -------------------------------------------------------------------------------------


def test_where(server, built):
    _, _, table = built
    python_ones = sum(1 for s in table.column("section").to_pylist() if s == "python")
    request = {"text": "library", "where": "section = 'python'", "additional_columns": ["section"], "limit": 500}
    status, body = call(server[0], "/v1/search", request)
    assert status == 200, body
    assert len(body["matches"]) == python_ones > 0
    assert {m["metadata"]["section"] for m in body["matches"]} == {"python"}


def test_bad_where_400(server):
    status, body = call(server[0], "/v1/search", {"text": "x", "where": "1=1; DROP TABLE t"})
    assert status == 400 and "where" in body["error"], body
