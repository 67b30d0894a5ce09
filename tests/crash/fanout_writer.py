"""The fan-out refresh's steps, each in its own process for the crash tests, over the crash world
(tests/crash/scenario.py) and its hash embedder; the staging root is ``<workdir>/staging``:

python -m tests.crash.fanout_writer plan <workdir>          rows asset, then plan_parts (3 parts); the
                                                            plan id is kept in <workdir>/plan_id
python -m tests.crash.fanout_writer embed <workdir> [i ...] embed_part of the kept plan's parts
                                                            (default: all, one after the other)
python -m tests.crash.fanout_writer commit <workdir>        commit_parts of the kept plan; prints its
                                                            counts as JSON
python -m tests.crash.fanout_writer index <workdir>         the index asset (the log catches up)

As the Dagster graph runs them: plan and commit are the writer's steps, embed a worker's. A
re-executed run reuses the plan (its id in <workdir>/plan_id); a fresh run plans again.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from quiver.resources import warehouse
from quiver.resources.embed_fanout import commit_parts, embed_part, plan_parts, read_plan
from quiver.resources.embedding.chunking import ChunkSettings
from quiver.resources.log_sync import sync_log
from tests.crash import scenario

PARTS = 3


def staging(work: Path) -> Path:
    return work / "staging"


def connect(work: Path):
    return lambda: scenario.writer_connection(work)


def plan(work: Path) -> str:
    with scenario.writer_connection(work) as conn:
        warehouse.load_source(conn, scenario.LAYOUT, [str(scenario.source_path(work))])
    staged = plan_parts(connect(work), scenario.LAYOUT, scenario.MODEL, staging(work), PARTS, part_rows=10_000)
    (work / "plan_id").write_text(staged.plan_id)
    return staged.plan_id


def plan_id(work: Path) -> str:
    return (work / "plan_id").read_text().strip()


def embed(work: Path, parts: list[int] | None = None) -> None:
    if parts is None:
        header = read_plan(staging(work) / scenario.DATASET / plan_id(work), scenario.DATASET, plan_id(work))
        parts = [entry["part"] for entry in header["parts"]]
    for part in parts:
        embed_part(staging(work), scenario.DATASET, plan_id(work), part, scenario.HashModel, ChunkSettings(),
                   scenario.LAYOUT, scenario.MODEL)


def commit(work: Path) -> dict:
    result = commit_parts(connect(work), scenario.LAYOUT, staging(work), plan_id(work))
    return {"committed": result.parts_committed, "already": result.parts_already_committed, "stale": result.rows_stale}


def index(work: Path) -> None:
    def read_changes(after: int):
        with scenario.writer_connection(work) as conn:
            return warehouse.changes_after(conn, scenario.LAYOUT, after)

    sync_log(scenario.store_for(work), read_changes)


def run(command: str, work: Path, *args: str, kill_at: str | None = None):
    """One step in a fresh process (optionally killed at a named point): scenario.run_writer's way."""
    return subprocess.run(
        [sys.executable, "-m", "tests.crash.fanout_writer", command, str(work), *args],
        env=scenario.writer_env(kill_at), check=False, cwd=scenario.REPO, capture_output=True, text=True, timeout=120,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    command, work = sys.argv[1], Path(sys.argv[2])
    if command == "plan":
        print(plan(work))
    elif command == "embed":
        embed(work, [int(a) for a in sys.argv[3:]] or None)
    elif command == "commit":
        print(json.dumps(commit(work)))
    elif command == "index":
        index(work)
    else:
        raise SystemExit(f"unknown command {command!r}: plan, embed, commit or index")
