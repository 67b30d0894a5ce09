"""Materialize every asset of a spec through Dagster, in this process:

    python -m tests.crash.dagster_run <spec> <home>

The Dagster-level crash test runs it with ``QUIVER_KILL_AT`` set, so the kill lands inside a real
asset run (with the real model), not in a test double.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.dagster.helpers import materialize_all

if __name__ == "__main__":
    result = materialize_all(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.exit(0 if result.success else 1)
