"""Several reader processes on one bucket (moto's S3 server on 127.0.0.1) while a writer process
publishes: at each served state every reader gives the same answers, exactly k of them, only keys
live at that state; every reader reaches the writer's last state."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import numpy as np

from tests.conftest import ROOT
from tests.servers import aws_env, create_bucket, moto_server
from tests.serving import bucket_world

READERS = 3
WRITE_SECONDS = 5.0
READ_SECONDS = 7.0


def test_readers_on_one_bucket_agree_while_a_writer_publishes(tmp_path, monkeypatch):
    with moto_server() as server:
        for name, value in aws_env(server.url).items():
            monkeypatch.setenv(name, value)
        bucket = f"readers-{uuid.uuid4().hex[:12]}"
        create_bucket(server.url, bucket)
        url = f"s3://{bucket}/quiver/world"
        queries = tmp_path / "queries.npy"
        np.save(queries, bucket_world.unit(np.random.default_rng(1), 8))
        module = [sys.executable, "-m", "tests.serving.bucket_world"]
        writer = subprocess.Popen([*module, "writer", url, str(tmp_path / "writer"), str(WRITE_SECONDS),
                                   str(tmp_path / "writer.json")], cwd=ROOT)
        readers = [
            subprocess.Popen([*module, "reader", url, str(tmp_path / f"cache-{i}"), str(queries), str(READ_SECONDS),
                              str(tmp_path / f"reader-{i}.json")], cwd=ROOT)
            for i in range(READERS)
        ]
        try:
            assert writer.wait(120) == 0
            assert [reader.wait(120) for reader in readers] == [0] * READERS
        finally:
            for process in (writer, *readers):
                process.kill()
    publishes = json.loads((tmp_path / "writer.json").read_text())["publishes"]
    live_at = {entry["seq"]: set(entry["live"]) for entry in publishes}
    results = [json.loads((tmp_path / f"reader-{i}.json").read_text()) for i in range(READERS)]

    by_state: dict[str, list] = {}
    for result in results:
        assert len(result["states"]) >= 3, "each reader saw the index move on"
        assert result["states"][result["final"]]["seq"] == publishes[-1]["seq"], "each reader reached the last state"
        for state, seen in result["states"].items():
            live = live_at[seen["seq"]]
            for answer in seen["answers"]:
                assert len(answer) == len(set(answer)) == min(bucket_world.K, len(live))
                assert set(answer) <= live, f"{state}: answered keys not live there: {set(answer) - live}"
            by_state.setdefault(state, []).append(seen["answers"])
    shared = {state: answers for state, answers in by_state.items() if len(answers) > 1}
    assert shared, "the readers served some state in common"
    for state, answers in shared.items():
        assert all(a == answers[0] for a in answers), f"readers disagree at {state}"
