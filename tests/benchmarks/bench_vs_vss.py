"""quiver side by side with DuckDB's vss extension and raw usearch: one command, one table.

    make bench                       # BENCH_SIZE=small: 2,000 real rows, about a minute
    BENCH_SIZE=medium make bench     # 100,000 synthetic clustered vectors
    BENCH_SIZE=large make bench      # 1,000,000 (long: the vss index build alone takes many minutes)

Overrides: BENCH_ROWS, BENCH_BUILDS, BENCH_SOURCE=real|synthetic, BENCH_TMP (work directory),
BENCH_KEEP=1 (keep it). The vss side runs in .venv-peers (created by `make bench`). Prints one
markdown table and writes the same, with every raw figure, to $QUIVER_HOME/bench/vs-vss-<size>.json.
See tests/benchmarks/peers/ for what each system's figures measure.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.peers.driver import main

if __name__ == "__main__":
    sys.exit(main())
