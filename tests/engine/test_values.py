"""The one JSON encoder and table printer over every type DuckDB hands back through Arrow.

Rows come from a DuckDB query through ``to_arrow_table().to_pylist()``, as search results do, and
each column is checked against the exact JSON and the exact text it must become.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import PurePosixPath

import duckdb
import numpy as np
import pytest

from quiver.resources.values import display, dumps, format_table, jsonable, md_table

UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
WIDE = "12345678901234567890.0123456789"
DEC38 = "12345678901234567890123456789012345678"
HUGE = 2**127 - 1
UBIG = 2**64 - 1

# column: (SQL value, the JSON it becomes, the text display gives). TIMESTAMPTZ is read in the
# session's zone (set below), so its text keeps that offset.
TYPES = {
    "t_time": ("TIME '12:30:00'", "12:30:00", "12:30:00"),
    "t_time_us": ("TIME '12:30:00.123456'", "12:30:00.123456", "12:30:00.123456"),
    "t_date": ("DATE '2024-01-02'", "2024-01-02", "2024-01-02"),
    "t_ts": ("TIMESTAMP '2024-01-02 03:04:05.678'", "2024-01-02T03:04:05.678000", "2024-01-02 03:04:05.678000"),
    "t_tstz": ("TIMESTAMPTZ '2024-01-02 03:04:05+02'", "2024-01-02T06:34:05+05:30", "2024-01-02 06:34:05+05:30"),
    "t_dec": ("1234.500::DECIMAL(18,3)", "1234.500", "1234.500"),
    "t_wide": (f"'{WIDE}'::DECIMAL(38,10)", WIDE, WIDE),
    "t_tiny": ("0.0000000001::DECIMAL(38,10)", "0.0000000001", "0.0000000001"),
    "t_dec0": (f"{DEC38}::DECIMAL(38,0)", int(DEC38), DEC38),
    "t_interval": ("INTERVAL '1 month 2 days 3 microseconds'", "P1M2DT0.000003S", "P1M2DT0.000003S"),
    "t_interval_neg": ("INTERVAL '-14 months -3723.5 seconds'", "P-1Y-2MT-1H-2M-3.5S", "P-1Y-2MT-1H-2M-3.5S"),
    "t_blob": ("'\\xDE\\xAD\\x00'::BLOB", "dead00", "dead00"),
    "t_uuid": (f"'{UUID}'::UUID", UUID, UUID),
    "t_ints": ("[1, 2, 3]::INTEGER[]", [1, 2, 3], "[1, 2, 3]"),
    "t_dates": ("[DATE '2024-01-02', DATE '2024-02-03']", ["2024-01-02", "2024-02-03"], "[2024-01-02, 2024-02-03]"),
    "t_struct": ("{'a': 1, 'b': 'x|y'}::STRUCT(a INTEGER, b VARCHAR)", {"a": 1, "b": "x|y"}, "{a: 1, b: x|y}"),
    "t_nested": (
        "{'d': [DATE '2024-01-01', NULL], 'n': 'NaN'::DOUBLE}",
        {"d": ["2024-01-01", None], "n": "NaN"},
        "{d: [2024-01-01, NULL], n: NaN}",
    ),
    "t_map": ("MAP {'k': 1, 'j': 2}::MAP(VARCHAR, INTEGER)", {"k": 1, "j": 2}, "{k=1, j=2}"),
    "t_imap": ("MAP {1: 'one', 2: 'two'}", [[1, "one"], [2, "two"]], "{1=one, 2=two}"),
    "t_double": ("2.5::DOUBLE", 2.5, "2.5"),
    "t_nan": ("'NaN'::DOUBLE", "NaN", "NaN"),
    "t_inf": ("'inf'::DOUBLE", "Infinity", "Infinity"),
    "t_ninf": ("'-inf'::DOUBLE", "-Infinity", "-Infinity"),
    "t_huge": (f"{HUGE}::HUGEINT", HUGE, str(HUGE)),
    "t_ubig": (f"{UBIG}::UBIGINT", UBIG, str(UBIG)),
    "t_bool": ("true", True, "true"),
    "t_text": ("'héllo ✓ 日本'", "héllo ✓ 日本", "héllo ✓ 日本"),
}
# Where a table cell is not the display text: floats to four places, ints with separators.
TABLE_TEXT = {"t_double": "2.5000"}
MD_TEXT = {"t_ubig": "18,446,744,073,709,551,615", "t_struct": "{a: 1, b: x\\|y}"}
JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def typed_rows(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """Row 1 holds every type; row 2 the same columns, all NULL."""
    values = ", ".join(f"{sql} AS {name}" for name, (sql, _, _) in TYPES.items())
    nulls = ", ".join(f"NULL AS {name}" for name in TYPES)
    query = f"SELECT 1 AS id, {values} UNION ALL SELECT 2, {nulls} ORDER BY id"
    return conn.sql(query).to_arrow_table().to_pylist()


@pytest.fixture(scope="module")
def rows():
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")  # a zone with a half-hour offset, not the machine's
        return typed_rows(conn)
    finally:
        conn.close()


def _reject_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def _only_json_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_json_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_json_types(v) for v in value)
    return type(value) in JSON_TYPES and not (isinstance(value, float) and not math.isfinite(value))


@pytest.fixture(scope="module")
def parsed(rows):
    return json.loads(dumps(rows), parse_constant=_reject_constant)  # NaN/Infinity literals fail here


@pytest.mark.parametrize("name", TYPES)
def test_json_of_each_type(parsed, name):
    assert parsed[0][name] == TYPES[name][1]
    assert type(parsed[0][name]) is type(TYPES[name][1])  # "2.5" is not 2.5, 1 is not True
    assert parsed[1][name] is None


def test_jsonable_gives_only_json_types(rows):
    encoded = jsonable(rows)
    assert _only_json_types(encoded)
    assert json.loads(json.dumps(encoded, allow_nan=False)) == encoded


@pytest.mark.parametrize("name", TYPES)
def test_display_of_each_type(rows, name):
    assert display(rows[0][name]) == TYPES[name][2]
    assert display(rows[1][name]) == "NULL"


@pytest.mark.parametrize("name", TYPES)
def test_format_table_cell_of_each_type(rows, name):
    text = TABLE_TEXT.get(name, TYPES[name][2])
    width = max(len(name), len(text), len("NULL"))
    table = format_table([{name: rows[0][name]}, {name: rows[1][name]}])
    assert table.splitlines() == [name, "-" * width, text, "NULL"]


@pytest.mark.parametrize("name", TYPES)
def test_md_table_cell_of_each_type(rows, name):
    text = MD_TEXT.get(name, TYPES[name][2])
    table = md_table([name], [[rows[0][name]], [rows[1][name]]])
    assert table.splitlines() == [f"| {name} |", "|---|", f"| {text} |", "| NULL |"]


def test_format_table_of_the_whole_row_has_no_reprs(rows):
    cells = "\n".join(format_table(rows, max_width=80).splitlines()[2:])  # below the header
    for repr_mark in ("datetime.", "Decimal(", "MonthDayNano", "b'", "UUID(", "None", "nan", "inf"):
        assert repr_mark not in cells
    assert "[2024-01-02, 2024-02-03]" in cells and "P1M2DT0.000003S" in cells


# Values that the DuckDB query above does not hand back, but other Arrow sources or callers do.
OTHER = [
    (uuid.UUID(UUID), UUID, UUID),
    (timedelta(hours=26, milliseconds=500), "PT26H0.5S", "PT26H0.5S"),
    (timedelta(seconds=-3), "PT-3S", "PT-3S"),
    (timedelta(0), "PT0S", "PT0S"),
    ((1, "a", None), [1, "a", None], "[1, a, NULL]"),
    (bytearray(b"\x01\xff"), "01ff", "01ff"),
    (Decimal("NaN"), "NaN", "NaN"),
    (Decimal("-Infinity"), "-Infinity", "-Infinity"),
    ({1: date(2024, 1, 2)}, {"1": "2024-01-02"}, "{1: 2024-01-02}"),
    (np.float32(1.5), 1.5, "1.5"),
    (np.float64("nan"), "NaN", "NaN"),
    (np.int64(7), 7, "7"),
    (np.bool_(False), False, "false"),
    (np.array([1, 2]), [1, 2], "[1, 2]"),
    (np.datetime64("2024-01-02T03:04:05.123456789"), "2024-01-02T03:04:05.123456789", "2024-01-02T03:04:05.123456789"),
    (np.datetime64("NaT"), None, "NULL"),
    (np.timedelta64(3, "ns"), "PT0.000000003S", "PT0.000000003S"),
    (np.timedelta64(2, "Y"), "P2Y", "P2Y"),
    (PurePosixPath("/data/x.parquet"), "/data/x.parquet", "/data/x.parquet"),  # anything else: its str
]


@pytest.mark.parametrize(("value", "expected_json", "expected_text"), OTHER, ids=[repr(v[0]) for v in OTHER])
def test_values_from_other_sources(value, expected_json, expected_text):
    encoded = json.loads(dumps(value), parse_constant=_reject_constant)
    assert encoded == expected_json and type(encoded) is type(expected_json)
    assert display(value) == expected_text
