"""The HTTP front's limits, API keys, parallel searches and OpenAPI description, on real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from jsonschema import Draft202012Validator, ValidationError

from tests.conftest import ROOT
from tests.serving.conftest import env_for
from tests.serving.test_http import call, running_server


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    with running_server(built, tmp_path_factory.mktemp("http") / "server.log") as running:
        yield running[0]


@pytest.fixture(scope="module")
def tight(built, tmp_path_factory):
    """Small limits: by flags, one by the environment, and a flag over the environment."""
    args = ("--max-body-bytes", "512", "--max-limit", "20", "--timeout", "0.001")
    env = {"QUIVER_MAX_TEXT_CHARS": "50", "QUIVER_MAX_LIMIT": "30"}
    with running_server(built, tmp_path_factory.mktemp("http") / "server.log", args, env) as running:
        yield running[0]


@pytest.fixture(scope="module")
def keyed(built, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "keys").write_text("# one key a line\nfile-key\n\n")
    env = {"QUIVER_API_KEYS": "env-key-1, env-key-2"}
    with running_server(built, tmp / "server.log", ("--api-keys-file", str(tmp / "keys")), env) as running:
        yield running[0]


def search(url: str, body=None, raw: bytes | None = None, key: str | None = None) -> tuple[int, dict]:
    return call(url, "/v1/search", body, raw=raw, headers={"X-API-Key": key} if key else None)


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ({"text": "x", "limit": 1001}, '"limit" must be at most 1000, got 1001'),
        ({"text": "x" * 10_001}, '"text" has 10001 characters, over the limit of 10000'),
        ({"text": "x", "keywords": ["k" * 6000, "k" * 4001]}, '"keywords" have 10001 characters in all'),
    ],
)
def test_default_caps_400(server, body, message):
    status, answer = search(server, body)
    assert status == 400 and message in answer["error"], answer


def test_default_caps_allow_their_bound(server):
    status, answer = search(server, {"text": "x" * 10_000, "limit": 1000, "mode": "vector"})
    assert status == 200 and len(answer["matches"]) == 150, answer  # every row of the dataset


def test_default_body_limit_413(server):
    raw = json.dumps({"text": "x", "where": "y" * 64 * 1024}).encode()
    status, answer = search(server, raw=raw)
    assert status == 413 and answer == {"error": "the body is over 65536 bytes, the server's limit for one request"}


def test_flags_and_environment_set_the_limits(tight):
    status, answer = search(tight, raw=json.dumps({"text": "x", "where": "y" * 600}).encode())
    assert status == 413 and "over 512 bytes" in answer["error"]
    status, answer = search(tight, {"text": "x", "limit": 21})  # the flag's 20 over the environment's 30
    assert status == 400 and answer["error"] == '"limit" must be at most 20, got 21'
    status, answer = search(tight, {"text": "x" * 51})
    assert status == 400 and "over the limit of 50" in answer["error"]


def test_timeout_504(tight):
    status, answer = search(tight, {"text": "text editor"})
    assert status == 504 and answer == {
        "error": "the search took over 0.001 s, the server's time limit for one request"
    }


# --- API keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["env-key-1", "env-key-2", "file-key"])
def test_right_key_searches(keyed, key):
    status, answer = search(keyed, {"text": "text editor", "limit": 3}, key=key)
    assert status == 200 and len(answer["matches"]) == 3, answer


@pytest.mark.parametrize(
    "key, message",
    [
        (None, "this server needs an API key: send it in the X-API-Key header"),
        ("env-key", "the API key in the X-API-Key header is not valid"),
        ("# one key a line", "the API key in the X-API-Key header is not valid"),
    ],
)
def test_missing_or_wrong_key_401(keyed, key, message):
    status, answer = search(keyed, {"text": "text editor"}, key=key)
    assert status == 401 and answer == {"error": message}


def test_health_and_openapi_stay_open(keyed):
    assert call(keyed, "/health")[0] == 200
    status, doc = call(keyed, "/openapi.json")
    assert status == 200 and doc["paths"]["/v1/search"]["post"]["security"] == [{"apiKey": []}]
    assert "401" in doc["paths"]["/v1/search"]["post"]["responses"]


def _serve_fails(built, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quiver", "serve", "--port", "1", *args],
        cwd=ROOT,
        env={**env_for(built), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_off_loopback_without_keys_refuses_to_start(built):
    done = _serve_fails(built, "--host", "0.0.0.0", env={"QUIVER_API_KEYS": "", "QUIVER_API_KEYS_FILE": ""})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        (
            "error: serving on 0.0.0.0 needs API keys: set QUIVER_API_KEYS or QUIVER_API_KEYS_FILE "
            "(or --api-keys-file), or listen on 127.0.0.1"
        )
    ]


def test_unreadable_keys_file_refuses_to_start(built, tmp_path):
    done = _serve_fails(built, "--api-keys-file", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.startswith("error: cannot read the API keys file")


# --- concurrency -------------------------------------------------------------------------------

REQUESTS = [
    {"text": "text editor", "limit": 5},
    {"text": "network tools", "mode": "vector"},
    {"text": "aseba", "mode": "text", "additional_columns": ["package"]},
    {"text": "robot control framework", "keywords": ["aseba"], "limit": 5},
    {"text": "library", "where": "section = 'python'", "additional_columns": ["section"], "limit": 50},
    {"text": "image viewer", "group": False, "limit": 7},
    {"text": "database server", "ef_search": 200, "mode": "vector"},  # runs alone: it sets the graph's ef
    {"text": "compression utility", "ef_search": 16, "mode": "vector", "limit": 20},
]


def test_parallel_answers_equal_sequential(server):
    requests = [REQUESTS[i % len(REQUESTS)] for i in range(16)]
    sequential = [search(server, r) for r in requests]
    with ThreadPoolExecutor(max_workers=16) as pool:
        parallel = list(pool.map(lambda r: search(server, r), requests))
    assert all(status == 200 for status, _ in parallel), parallel
    # the same rows in the same order; scores within float noise: a query text embedded in a batch
    # with others differs from the one embedded alone in the last bits of its vector
    for (_, one), (_, other) in zip(sequential, parallel):
        assert [{k: v for k, v in m.items() if k != "score"} for m in one["matches"]] == [
            {k: v for k, v in m.items() if k != "score"} for m in other["matches"]
        ]
        assert [m["score"] for m in one["matches"]] == pytest.approx([m["score"] for m in other["matches"]])
    assert all(answer["matches"] for _, answer in parallel)


# --- OpenAPI -----------------------------------------------------------------------------------


def _validator(doc: dict, path: str, method: str, status: int) -> Draft202012Validator:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]})


def test_openapi_describes_real_answers(server):
    status, doc = call(server, "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1") and set(doc["paths"]) == {"/v1/search", "/health"}
    Draft202012Validator.check_schema(doc["components"]["schemas"]["SearchRequest"])
    requests = Draft202012Validator({"$ref": "#/components/schemas/SearchRequest", "components": doc["components"]})
    for request in REQUESTS:
        requests.validate(request)
        status, answer = search(server, request)
        assert status == 200, answer
        _validator(doc, "/v1/search", "post", 200).validate(answer)
    for request in [{"text": "x", "limit": 1001}, {"text": "x", "keyword": ["a"]}, {"datasets": ["pkgs"]}]:
        assert not requests.is_valid(request)
        status, answer = search(server, request)
        assert status == 400
        _validator(doc, "/v1/search", "post", 400).validate(answer)
    status, answer = search(server, {"text": "x", "datasets": ["nope"]})
    assert status == 404
    _validator(doc, "/v1/search", "post", 404).validate(answer)
    status, answer = search(server, raw=b'{"text": "' + b"x" * 70_000 + b'"}')
    assert status == 413
    _validator(doc, "/v1/search", "post", 413).validate(answer)
    status, answer = call(server, "/health")
    _validator(doc, "/health", "get", 200).validate(answer)
    with pytest.raises(ValidationError):
        _validator(doc, "/v1/search", "post", 200).validate({"matches": [{"value": 1}], "duration_ms": 3})


def test_openapi_states_the_errors_of_a_keyed_server(keyed, tight):
    _, doc = call(keyed, "/openapi.json")
    status, answer = search(keyed, {"text": "x"})
    assert status == 401
    _validator(doc, "/v1/search", "post", 401).validate(answer)
    _, doc = call(tight, "/openapi.json")
    assert doc["components"]["schemas"]["SearchRequest"]["properties"]["limit"]["maximum"] == 20
    status, answer = search(tight, {"text": "text editor"})
    assert status == 504
    _validator(doc, "/v1/search", "post", 504).validate(answer)
