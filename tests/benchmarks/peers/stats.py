"""Medians with their spread, and percentiles of latency samples."""

from __future__ import annotations

import statistics

import numpy as np


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def latency(passes: list[list[float]]) -> dict:
    """p50 and p95 in milliseconds per pass, then their medians and spread over the passes."""
    p50 = [float(np.percentile(times, 50)) * 1000 for times in passes]
    p95 = [float(np.percentile(times, 95)) * 1000 for times in passes]
    return {"p50_ms": spread(p50), "p95_ms": spread(p95), "queries_per_pass": len(passes[0])}


def fmt(stat: dict | float | None, unit: str = "", digits: int = 3) -> str:
    """``median (min-max)`` with ``digits`` significant digits; a plain number as it is."""
    if stat is None:
        return "n/a"
    if not isinstance(stat, dict):
        return f"{_num(stat, digits)}{unit}"
    text = f"{_num(stat['median'], digits)}{unit}"
    if stat["n"] > 1 and stat["min"] != stat["max"]:
        text += f" ({_num(stat['min'], digits)}-{_num(stat['max'], digits)})"
    return text


def _num(value: float, digits: int) -> str:
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def mib(value: float) -> float:
    return value / 2**20
