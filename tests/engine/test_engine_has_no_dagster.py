"""The engine is a plain library: importing it must not import Dagster (STYLE: engine vs glue)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

ENGINE_MODULES = [
    "resources.index",
    "resources.index.reader",
    "resources.index.store",
    "resources.warehouse",
    "resources.log_sync",
    "resources.faults",
    "resources.embedding",
    "resources.onnx_export",
    "resources.onnx_backend",
    "resources.token_batches",
    "resources.embed_progress",
    "resources.health",
    "resources.searcher",
    "resources.index.row_filter",
    "sensors.snapshot_policy",
    "sensors.source_listing",
    "pipelines.spec",
    "pipelines.query",
]
ENGINE_FILES = [
    *sorted((ROOT / "resources" / "index").glob("*.py")),
    ROOT / "resources" / "warehouse.py",
    ROOT / "resources" / "log_sync.py",
    ROOT / "resources" / "faults.py",
    *(ROOT / "resources" / f"{name}.py" for name in ("embedding", "onnx_export", "onnx_backend", "token_batches")),
    *(ROOT / "resources" / f"{name}.py" for name in ("embed_progress", "health", "searcher")),
    ROOT / "sensors" / "snapshot_policy.py",
    ROOT / "sensors" / "source_listing.py",
]


def test_engine_sources_do_not_import_dagster():
    pattern = re.compile(r"^\s*(import dagster|from dagster)", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for path in ENGINE_FILES if pattern.search(path.read_text())]
    assert not offenders


def test_importing_the_engine_loads_no_dagster():
    code = "import sys\n" + "".join(f"import {m}\n" for m in ENGINE_MODULES) + (
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.') or m.startswith('dagster_'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
