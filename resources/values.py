"""Values as people and programs read them: one JSON encoder, one table printer. No Dagster.

Search results carry served columns of any type DuckDB can hand back through Arrow, as
``pyarrow``'s ``to_pylist`` gives them. ``jsonable`` turns each into strict JSON (no NaN, no
Infinity, only objects, arrays, strings, numbers, booleans and null); ``display`` turns each into
the text a person reads in a table. The command line, the HTTP front, the SQL functions and the
materialization metadata all go through here.

    DuckDB type (Python value)        JSON                                   display
    NULL (None)                       null                                   NULL
    BOOLEAN                           true                                   true
    integers, UBIGINT (int)           12 (exact, however large)              12
    DOUBLE, FLOAT (float)             1.5                                    1.5 (tables: 1.5000)
      NaN, inf, -inf                  "NaN", "Infinity", "-Infinity"         NaN, Infinity, -Infinity
    DECIMAL(p, 0), HUGEINT (Decimal)  12345678901234567890 (exact integer)   12345678901234567890
    DECIMAL(p, s>0) (Decimal)         "1234.500" (text, every digit kept)    1234.500
    VARCHAR, JSON (str)               "héllo"                                héllo
    UUID (str; uuid.UUID too)         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"  the same text
    DATE (date)                       "2024-01-02"                           2024-01-02
    TIME (time)                       "12:30:00.123456"                      12:30:00.123456
    TIMESTAMP (datetime)              "2024-01-02T03:04:05.678000"           2024-01-02 03:04:05.678000
    TIMESTAMPTZ (aware datetime)      "2024-01-02T06:34:05+05:30"            2024-01-02 06:34:05+05:30
                                      (the offset of the zone the value was read in, kept)
    INTERVAL (pyarrow MonthDayNano)   "P1Y2M3DT4H5M6.000007S"                the same text
    duration (timedelta)              "PT26H0.5S"                            the same text
    BLOB (bytes)                      "dead" (lower-case hex)                dead
    LIST, ARRAY (list)                [1, 2]                                 [1, 2]
    STRUCT (dict)                     {"a": 1, "b": "x"}                     {a: 1, b: x}
    MAP, string keys                  {"k": 1}                               {k=1}
    MAP, other keys                   [[1, "one"], [2, "two"]]               {1=one, 2=two}
    numpy scalars                     as the Python value they hold; datetime64 as its ISO text

Why these forms:
- Decimals with a fraction are text: most clients read a JSON number as a double, which silently
  turns 0.1 into 0.1000000000000000055... and a 38-digit value into 17 digits; and a column whose
  JSON type changes row by row (a number when a double holds it, text when not) is worse than one
  that is always text. Integral decimals are JSON integers, as BIGINT and UBIGINT are: the JSON
  text is exact (a client that reads every number as a double rounds it, as it rounds a BIGINT).
  The column's scale, not the value, decides, so a column keeps one JSON type.
- JSON has no NaN or infinity; null would read as a missing value. The three strings are
  protobuf's JSON mapping for doubles, and JavaScript's ``Number()`` and Python's ``float()``
  read them back.
- An interval is months, days and nanoseconds, kept apart because a month has no fixed length:
  written as an ISO 8601 duration with PostgreSQL's ``iso_8601`` style (12 months are a year, the
  nanoseconds split into hours, minutes and seconds, each part carrying its own sign, zero is
  ``PT0S``). A ``timedelta`` is an exact duration, so it has no days part: 26 hours is ``PT26H``.
- ``to_pylist`` hands a MAP over as a list of (key, value) tuples. A JSON object needs text keys,
  so other keys give a list of pairs. An empty MAP cannot be told from an empty list: ``[]``.
- Anything else (a value no DuckDB type gives) is written as its ``str``, so ``dumps`` never fails.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa

NULL = "NULL"


def jsonable(value):
    """``value`` as a JSON value: dicts, lists, text, integers, finite floats, booleans and None."""
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _non_finite(value)
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value.as_tuple().exponent >= 0 else _decimal_text(value)
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if _is_map(value):
        if all(isinstance(k, str) for k, _ in value):
            return {k: jsonable(v) for k, v in value}
        return [[jsonable(k), jsonable(v)] for k, v in value]
    if isinstance(value, (list, tuple)) and not isinstance(value, pa.MonthDayNano):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return jsonable(_from_numpy(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return _text(value)


def display(value) -> str:
    """The text a person reads for ``value``: ISO dates and times, exact decimals, no reprs."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(value) if math.isfinite(value) else _non_finite(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)}: {display(v)}" for k, v in value.items()) + "}"
    if _is_map(value):
        return "{" + ", ".join(f"{display(k)}={display(v)}" for k, v in value) + "}"
    if isinstance(value, (list, tuple)) and not isinstance(value, pa.MonthDayNano):
        return "[" + ", ".join(display(v) for v in value) + "]"
    if isinstance(value, (np.generic, np.ndarray)):
        return display(_from_numpy(value))
    if isinstance(value, datetime):
        return value.isoformat(" ")
    return _text(value)


def dumps(value, indent: int | None = None) -> str:
    """``value`` as strict JSON text (``allow_nan=False`` holds: ``jsonable`` leaves no NaN)."""
    return json.dumps(jsonable(value), ensure_ascii=False, indent=indent, allow_nan=False)


def _text(value) -> str:
    """The text of a scalar that JSON has no type for; JSON and ``display`` share it."""
    if isinstance(value, (date, time)):  # datetime is handled by the callers (T or space)
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value.hex()
    if isinstance(value, pa.MonthDayNano):
        return _iso_duration(value.months, value.days, value.nanoseconds)
    if isinstance(value, timedelta):
        return _iso_duration(0, 0, value // timedelta(microseconds=1) * 1000)
    return str(value)  # int, str, UUID, and anything else


def _non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")  # every digit, never an exponent (str gives 1E-10); NaN/Infinity as named


def _key(key) -> str:
    return key if isinstance(key, str) else display(key)


def _is_map(value) -> bool:
    """A MAP from ``to_pylist``: a non-empty list of (key, value) tuples (no other type gives tuples)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, tuple) and len(v) == 2 for v in value)


def _iso_duration(months: int, days: int, nanoseconds: int) -> str:
    """ISO 8601 duration in PostgreSQL's ``iso_8601`` style: P1Y2M3DT4H5M6.5S, each part signed."""
    years, months = _signed_divmod(months, 12)
    hours, rest = _signed_divmod(nanoseconds, 3_600 * 10**9)
    minutes, rest = _signed_divmod(rest, 60 * 10**9)
    seconds, fraction = _signed_divmod(rest, 10**9)
    second_text = ""
    if rest:
        digits = f"{abs(fraction):09d}".rstrip("0")
        second_text = ("-" if rest < 0 else "") + f"{abs(seconds)}" + (f".{digits}" if digits else "") + "S"
    day_part = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time_part = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n) + second_text
    if not day_part and not time_part:
        return "PT0S"
    return "P" + day_part + ("T" + time_part if time_part else "")


def _signed_divmod(value: int, by: int) -> tuple[int, int]:
    """divmod that rounds toward zero, so -14 months are -1 year and -2 months (not -2 and 10)."""
    quotient, remainder = divmod(abs(value), by)
    return (-quotient, -remainder) if value < 0 else (quotient, remainder)


def _from_numpy(value):
    """A numpy value as a plain Python one (``.item()`` would turn nanosecond times into integers)."""
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (np.datetime64, np.timedelta64)) and np.isnat(value):
        return None
    if isinstance(value, np.datetime64):
        return str(value)  # ISO 8601 at the value's own precision, nanoseconds included
    if isinstance(value, np.timedelta64):
        unit = np.datetime_data(value.dtype)[0]
        if unit in ("Y", "M"):  # calendar units: no fixed number of nanoseconds
            return _iso_duration(int(value.astype(np.int64)) * (12 if unit == "Y" else 1), 0, 0)
        return _iso_duration(0, 0, int(value.astype("timedelta64[ns]").astype(np.int64)))
    return value.item()


def short_text(value, width: int):
    """``value`` with a string longer than ``width`` cut to ``width`` characters (the last one …)."""
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value


def format_table(rows: list[dict], max_width: int = 60) -> str:
    """Rows as an aligned plain-text table for a terminal; cells are ``display`` text, floats to 4 places."""
    if not rows:
        return "(no rows)"
    names = list(rows[0])

    def cell(value) -> str:
        finite = isinstance(value, float) and math.isfinite(value)
        text = (f"{value:.4f}" if finite else display(value)).replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(row[n]) for n in names] for row in rows]
    widths = [max(len(n), *(len(r[i]) for r in cells)) for i, n in enumerate(names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(names), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def md_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; cells are ``display`` text (ints with thousands separators), pipes
    and newlines escaped."""

    def cell(value) -> str:
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else display(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
