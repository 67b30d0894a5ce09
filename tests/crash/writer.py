"""Writers in their own process, for the crash tests:

python -m tests.crash.writer refresh <workdir>          one refresh (rows -> embeddings -> index); prints
                                                        {"unchanged": n, "embedded": n} as JSON
python -m tests.crash.writer snapshot <workdir>         one snapshot
python -m tests.crash.writer loop <workdir> <seconds>   change the source, refresh, snapshot every
                                                        other round, until the time is up; after
                                                        each commit the committed state is saved
                                                        under <workdir>/states/<seq>.npz
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from tests.crash import scenario


def save_committed_state(work: Path) -> None:
    committed = scenario.duckdb_state(work)
    keys = np.array(sorted(committed), dtype=np.uint64)
    vectors = np.stack([committed[int(k)].vector for k in keys]) if len(keys) else np.empty((0, scenario.DIM))
    seq = scenario.committed_seq(work)
    (work / "states").mkdir(exist_ok=True)
    np.savez(work / "states" / f"{seq}.npz", keys=keys, vectors=vectors)


def loop(work: Path, seconds: float) -> None:
    source = scenario.Source.load(work)
    save_committed_state(work)
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        source.step()
        source.write(work)
        scenario.refresh(work)
        save_committed_state(work)
        if rounds % 2:
            scenario.take_snapshot(work)
        rounds += 1
    (work / "writer.done").write_text(str(rounds))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    command, work = sys.argv[1], Path(sys.argv[2])
    if command == "loop":
        loop(work, float(sys.argv[3]))
    elif command == "refresh":
        plan = scenario.refresh(work).plan  # what it found already embedded, and what it embedded
        print(json.dumps({"unchanged": plan.unchanged, "embedded": plan.to_embed.num_rows}))
    else:
        scenario.take_snapshot(work)
