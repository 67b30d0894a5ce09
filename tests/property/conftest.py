"""Hypothesis profiles for the property tests: ``fast`` (the default, CI) and ``slow`` (longer runs).

Pick one with ``QUIVER_HYPOTHESIS_PROFILE=slow``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}

settings.register_profile("fast", max_examples=25, stateful_step_count=50, **_COMMON)
settings.register_profile("slow", max_examples=300, stateful_step_count=100, **_COMMON)
settings.load_profile(os.environ.get("QUIVER_HYPOTHESIS_PROFILE", "fast"))
