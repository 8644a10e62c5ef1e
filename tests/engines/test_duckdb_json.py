"""The DuckDB engine's JSON text is byte-identical to orjson's, the canonical form."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from convsum.config import default_memory_limit
from convsum.engines.base import EngineSettings
from convsum.engines.duckdb import connect


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(EngineSettings(tmp_path_factory.mktemp("duckdb")))
    yield connection
    connection.close()


@given(st.text())
@example('\x0b\x0e\x1f\x7f\x85\u2028 \\ " /')
@example("")
def test_duckdb_json_text_matches_orjson(con: duckdb.DuckDBPyConnection, text: str) -> None:
    (rendered,) = con.execute("SELECT json_text(?::VARCHAR)", [text]).fetchone() or ()
    assert rendered == orjson.dumps(text).decode()


@given(st.floats(allow_nan=True, allow_infinity=True))
@example(1e-6)
@example(1.5e20)
@example(1e21)
@example(0.0725)
@example(-0.0)
def test_duckdb_json_double_matches_orjson(con: duckdb.DuckDBPyConnection, value: float) -> None:
    (rendered,) = con.execute("SELECT json_double(?::DOUBLE)", [value]).fetchone() or ()
    expected = "null" if not math.isfinite(value) else orjson.dumps(value).decode()
    assert rendered == expected


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_duckdb_iso_time_is_seconds_plus_nonzero_milliseconds(
    con: duckdb.DuckDBPyConnection, value: datetime
) -> None:
    (rendered,) = con.execute("SELECT json_time(?::TIMESTAMP)", [value]).fetchone() or ()
    millis = value.microsecond // 1000
    expected = value.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}" if millis else "") + "Z"
    assert rendered == f'"{expected}"'


def test_duckdb_connection_uses_the_work_directory(tmp_path: Path) -> None:
    con = connect(EngineSettings(tmp_path, threads=1, memory_limit="256MB"))
    settings = dict(con.execute("SELECT name, value FROM duckdb_settings()").fetchall())
    con.close()
    assert settings["threads"] == "1"
    assert settings["temp_directory"] == str(tmp_path / "duckdb_tmp")
    assert settings["memory_limit"] == "244.1 MiB"  # 256 MB in binary units


def test_duckdb_memory_is_capped_by_default(tmp_path: Path) -> None:
    con = connect(EngineSettings(tmp_path))
    (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone() or ()
    con.close()
    assert default_memory_limit().endswith("MiB")
    value, unit = limit.split()
    assert unit in ("MiB", "GiB")
    assert float(value) * (1024 if unit == "GiB" else 1) <= 3 * 1024
