"""Progress lines for long embedding work: rows done, rows/s and ETA, at most every few seconds.

``ProgressLog(emit)`` is a ``progress(done, total)`` callback (the one ``Embedder.embed`` takes)
that calls ``emit(line)`` when ``every`` seconds have passed since the last line, and once at the
end. The rate is over the whole call so far, so the ETA settles instead of jumping. No Dagster:
the asset passes ``context.log.info``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressLog:
    def __init__(self, emit: Callable[[str], None], every: float = 5.0, clock: Callable[[], float] = time.perf_counter):
        self.emit = emit
        self.every = every
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        self.emit(progress_line(done, total, now - self.started))


def progress_line(done: int, total: int, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    percent = 100.0 * done / total if total else 100.0
    line = f"embedded {done:,}/{total:,} rows ({percent:.0f}%), {rate:,.0f} rows/s"
    if done < total:
        line += f", ETA {_duration((total - done) / rate) if rate > 0 else 'unknown'}"
    else:
        line += f", {_duration(seconds)} in all"
    return line


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
