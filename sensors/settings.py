"""How often the sensors tick: Dagster's default of 30 s for sources, 60 s for snapshots.

``QUIVER_SENSOR_INTERVAL_SECONDS`` overrides both (read when the definitions load), for example a
short interval for a test or a demo; the daemon can tick a little later than asked, never sooner.
"""

from __future__ import annotations

import os

ENV = "QUIVER_SENSOR_INTERVAL_SECONDS"
DEFAULTS = {"source": 30, "snapshot": 60}


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
