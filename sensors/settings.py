"""How often the sensors tick: the source sensor on every pass of the daemon's sensor loop, the
snapshot sensor every 60 s.

Dagster's sensor daemon checks its sensors in a loop of 5 s (``MIN_INTERVAL_LOOP_TIME`` in
``dagster._daemon.sensor``, not configurable) and ticks a sensor on the first pass at least its
``minimum_interval_seconds`` after its last tick; so the real period is that interval rounded up to
the 5 s grid, or one pass more when a pass falls a few ms short of it (an interval of 5 s gave gaps
of 5 and 10 s, 6.7 s on average; 30 s gave 30 and 35 s). The source sensor's 4 s is under one pass,
so it ticks on every pass, every 5.0 s: a new source file is searchable 6.4 s later at the median
(7.8 s at worst) instead of 18.4 s (32.1 s) at 30 s (``make bench-freshness``), for about 0.06
CPU s per tick when nothing changed (the daemon's bookkeeping two thirds, the evaluation in the
code server one third), 0.6 CPU s a minute per dataset. Snapshots are not on the path to
searchable, so their sensor stays at 60 s.

``QUIVER_SENSOR_INTERVAL_SECONDS`` overrides both (read when the definitions load), for example a
short interval for a test or a demo; the daemon can tick a little later than asked, never sooner.
"""

from __future__ import annotations

import os

ENV = "QUIVER_SENSOR_INTERVAL_SECONDS"
DAEMON_SENSOR_LOOP_SECONDS = 5
DEFAULTS = {"source": 4, "snapshot": 60}


def sensor_interval_seconds(kind: str) -> int:
    value = os.environ.get(ENV)
    if value is None or value == "":
        return DEFAULTS[kind]
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(f"{ENV}={value!r}: give a whole number of seconds, at least 1 (or unset it for the defaults)")
    return seconds
