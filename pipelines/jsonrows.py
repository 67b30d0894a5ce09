"""Search results as JSON-ready Python values, shared by the SQL function and the HTTP server.

Served columns can hold dates, decimals or bytes, which ``json.dumps`` refuses; they become ISO
8601 text, floats and hex text, the same as the command line's ``--json``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal


def jsonable(value):
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def dumps(value) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)
