"""Every engine against the pure-Python reference and byte for byte against each other, on random
logs."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsum.engines import polars as polars_engine
from convsum.engines.base import EngineSettings, StatusOrder, status_order
from convsum.inputs import STATUSES_SCHEMA, StagedInputs
from tests.conftest import (
    ALL_COLUMNS,
    LOCAL_ENGINES,
    MESSAGE_TYPES,
    WIDE_STATUS_TYPES,
    table_rows,
    write_parquet,
)
from tests.support.reference import tables
from tests.support.strategies import logs_strategy
from tests.support.trees import check_against_reference, run, tree_bytes

# Per engine, (threads, parts) of each run: DuckDB on one thread and on two; Polars in one part
# and in three; Spark (local mode) in three buckets, so that a conversation's messages come from
# several id buckets, and a bucket holds several conversations.
_VARIANTS = {"duckdb": ((1, 1), (2, 3)), "polars": ((None, 1), (None, 3)), "spark": ((None, 3),)}
_LOCAL = {engine: _VARIANTS[engine] for engine in LOCAL_ENGINES}
# Spark's run is compared with the reference and byte for byte with DuckDB's one-thread tree.
_SPARK = {"duckdb": _VARIANTS["duckdb"][:1], "spark": _VARIANTS["spark"]}
_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
_LOGS = {"logs": logs_strategy, "page_size": st.sampled_from([1, 2, 5])}
Logs = tuple[list[dict[str, Any]], list[dict[str, Any]]]


# A quarter of the profile's examples: each one runs the job four times.
@settings(max_examples=max(10, settings.default.max_examples // 4), **_SETTINGS)
@given(**_LOGS)
def test_parity_local_engines_match_reference_and_each_other(logs: Logs, page_size: int) -> None:
    _check_parity(logs, page_size, _LOCAL)


# Spark's executors run the DuckDB engine's steps: one Hypothesis run of a twentieth of the
# profile's examples (at a JVM's seconds a run) checks that its buckets do not change them.
@pytest.mark.spark
@settings(max_examples=max(5, settings.default.max_examples // 20), **_SETTINGS)
@given(**_LOGS)
def test_parity_spark_matches_reference_and_duckdb(logs: Logs, page_size: int) -> None:
    _check_parity(logs, page_size, _SPARK)


def _check_parity(
    logs: Logs, page_size: int, variants: dict[str, tuple[tuple[int | None, int], ...]]
) -> None:
    """Run each engine's variants on the logs: every tree and table is the reference's, and the
    trees, tables and reports are the same bytes and values from engine to engine."""
    messages, statuses = logs
    rows = [{**m, "type": "SMS", "datacoding": "gsm", "currency": "SEK"} for m in messages]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_parquet(directory / "messages.parquet", rows, MESSAGE_TYPES)
        write_parquet(directory / "statuses.parquet", statuses, WIDE_STATUS_TYPES)
        trees = {
            (engine, threads, parts): run(directory, engine, page_size, threads, parts)
            for engine, runs in variants.items()
            for threads, parts in runs
        }
        first = next(iter(trees.values()))
        reference_tables = tables(rows, statuses)
        reference_bytes = tree_bytes(first)
        for key, tree in trees.items():
            check_against_reference(tree, rows, statuses)  # each engine, not only the first
            assert table_rows(tree.out) == reference_tables, key
            assert tree_bytes(tree) == reference_bytes, key
            assert table_rows(tree.out, ALL_COLUMNS) == table_rows(first.out, ALL_COLUMNS), key
            same = replace(tree.report, run_id=first.report.run_id, stages=first.report.stages)
            assert same == first.report, key


def test_polars_parts_follow_the_rows_and_the_memory_limit(tmp_path: Path) -> None:
    staged = StagedInputs(tmp_path, tmp_path, {"messages": 10_050_000, "statuses": 32_011_893}, {})
    assert polars_engine._parts(staged, EngineSettings(tmp_path, memory_limit="3GiB")) == 3
    assert polars_engine._parts(staged, EngineSettings(tmp_path, memory_limit="6GB")) == 2
    assert polars_engine._parts(staged, EngineSettings(tmp_path, memory_limit="16GiB")) == 1
    small = StagedInputs(tmp_path, tmp_path, {"messages": 10, "statuses": 0}, {})
    assert polars_engine._parts(small, EngineSettings(tmp_path, memory_limit="64MiB")) == 1


def _staged_statuses(directory: Path, rows: list[tuple[int, int | None, datetime]]) -> Path:
    directory.mkdir()
    table = pa.Table.from_pylist(
        [
            {"message_id": "m", "owner": None, "code": c, "created": t, "duration": d}
            for c, d, t in rows
        ],
        schema=STATUSES_SCHEMA,
    )
    pq.write_table(table, directory / "s.parquet")
    return directory


def test_status_order_packs_the_ranges_that_fit_127_bits(tmp_path: Path) -> None:
    t0, t1 = datetime(2025, 1, 1), datetime(2025, 1, 1, 0, 0, 1)  # 1,000,000 us: 20 bits
    narrow = _staged_statuses(tmp_path / "a", [(101, None, t0), (403, 6, t1)])
    order = status_order(narrow)
    assert order == StatusOrder(int(t0.replace(tzinfo=UTC).timestamp() * 1e6), 101, 3, 12)
    assert order.created_shift == 13  # duration + 1 < 2**3, codes 0..302 < 2**9, the final bit
    no_durations = _staged_statuses(tmp_path / "b", [(101, None, t0), (102, None, t0)])
    assert status_order(no_durations) == StatusOrder(order.created_from, 101, 0, 1)
    # 20 + 1 + 63 + 43 = 127 bits fit; one more bit of duration does not.
    fits = _staged_statuses(tmp_path / "c", [(0, 2**43 - 2, t0), (2**63 - 1, 0, t1)])
    assert status_order(fits) is not None
    wide = _staged_statuses(tmp_path / "d", [(0, 2**43 - 1, t0), (2**63 - 1, 0, t1)])
    assert status_order(wide) is None
