"""The SQL and HTTP surfaces are plain libraries: importing them loads neither Dagster nor the model."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_sql_and_http_import_without_dagster_or_torch():
    code = (
        "import sys, quiver.pipelines.sql, quiver.pipelines.http_api; "
        "print(sorted(m for m in ('dagster', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
