"""Progress lines: at most one every few seconds, with rows/s and an ETA, and always the last one."""

from __future__ import annotations

from quiver.resources.embedding.progress import ProgressLog, progress_line


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_the_last_one_always_comes():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, every=5.0, clock=clock)
    for done in range(100, 1001, 100):  # 10 calls, 1 s apart
        clock.now += 1.0
        progress(done, 1000)
    assert len(lines) == 2  # at 5 s, then at 10 s (the end)
    assert lines[0].startswith("embedded 500/1,000 rows (50%), 100 rows/s, ETA 5s")
    assert lines[-1] == "embedded 1,000/1,000 rows (100%), 100 rows/s, 10s in all"


def test_eta_formats():
    assert progress_line(0, 10, 0.0).endswith("ETA unknown")
    assert "ETA 1m40s" in progress_line(100, 200, 100.0)
    assert "ETA 2h46m" in progress_line(1, 10_001, 1.0)
