"""The Spark engine's division of labour (local mode): what the executors do, not the driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convsum.config import RunConfig
from convsum.publish import pages
from convsum.results import as_dict
from convsum.run import run_job
from tests.conftest import (
    ALL_COLUMNS,
    MESSAGE_TYPES,
    STATUS_TYPES,
    at,
    message,
    status,
    table_rows,
    write_parquet,
)
from tests.support.data import DEMO
from tests.support.trees import check_against_reference, comparable_tree, run, tree_bytes


def _spec_cases() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One log that holds each rule of SPEC section 3 (the cases of test_semantics.py), each in
    an owner of its own, with message ids of their own, so that no two cases meet."""
    messages: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []

    def case(owner: str, rows: list[dict[str, Any]], logged: list[dict[str, Any]]) -> None:
        messages.extend({**row, "id": f"{owner}-{row['id']}", "owner": owner} for row in rows)
        statuses.extend({**row, "messageId": f"{owner}-{row['messageId']}"} for row in logged)

    case("direction", [message("m1"), message("m2", sender="4670", recipient="Acme",
         direction="mo")], [status("m1", 201), status("m2", 201)])  # fmt: skip
    case("self", [message("m1", sender="4670", recipient="4670", segments=3)], [])
    case("final-beats-info", [message("m1")], [status("m1", 201, at(5)), status("m1", 111, at(5))])
    case("higher-final", [message("m1")], [status("m1", c, at(5)) for c in (402, 201, 203)])
    case("higher-info", [message("m1")], [status("m1", c, at(5)) for c in (111, 114)])
    case("final-beats-higher", [message("m1")], [status("m1", c, at(5)) for c in (301, 201, 610)])
    case("longer-duration", [message("m1")],
         [status("m1", 201, at(5), duration=7), status("m1", 201, at(5), duration=30)])  # fmt: skip
    case("null-duration", [message("m1")],
         [status("m1", 201, at(5), duration=d) for d in (None, 0)])  # fmt: skip
    case("identical", [message("m1")], [status("m1", 201, at(5)), status("m1", 201, at(5))])
    case("later-info", [message("m1")], [status("m1", 201, at(5)), status("m1", 110, at(6))])
    case("no-status", [message("m1"), message("m2", segments=2)], [status("m1", 201)])
    case("orphan", [message("m1")], [status("m1", 201), status("ghost", 402)])
    case("unknown-code", [message("m1")], [status("m1", 999)])
    case("modified", [message("m1", body="old", modified=at(1)),
         message("m1", body="new", modified=at(9))], [])  # fmt: skip
    case("content", [message("m1", body=b, modified=m) for b in "acb" for m in (at(10), None)], [])
    case("order", [message(i, created=at(5), direction=d, sender=s, recipient=r)
         for i, d, s, r in (("b", "mt", "Acme", "4670"), ("c", "mo", "4670", "Acme"),
                            ("a", "mt", "Acme", "4670"))], [])  # fmt: skip
    case("pages", [message(f"m{i:02d}", created=at(i % 7)) for i in range(23)],
         [status(f"m{i:02d}", 201 + i % 3) for i in range(0, 23, 2)])  # fmt: skip
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)
    case("years", [message("m1", created=first), message("m2", created=last)],
         [status("m1", 201, last)])  # fmt: skip
    # The status log applies to the id under every owner that has it.
    messages.extend(message("shared", owner=o) for o in ("shared-a", "shared-b"))
    statuses.append(status("shared", 203))
    return messages, statuses


def test_spark_spec_cases_give_duckdbs_tree_and_the_reference(tmp_path: Path) -> None:
    """Spark runs the DuckDB engine's steps in its executors: on a log holding every rule of
    SPEC section 3, in three buckets, its tree is DuckDB's byte for byte, and both are the
    reference's. (The rules' own cases run on the local engines, test_semantics.py.)"""
    messages, statuses = _spec_cases()
    write_parquet(tmp_path / "messages.parquet", messages, MESSAGE_TYPES)
    write_parquet(tmp_path / "statuses.parquet", statuses, STATUS_TYPES)
    spark = run(tmp_path, "spark", 5, None, 3)
    duckdb = run(tmp_path, "duckdb", 5, None, 1)
    assert tree_bytes(spark) == tree_bytes(duckdb)
    check_against_reference(spark, messages, statuses)
    assert table_rows(spark.out, ALL_COLUMNS) == table_rows(duckdb.out, ALL_COLUMNS)
    assert spark.report.data == duckdb.report.data
    assert all(as_dict(spark.report.data).values())  # each case of the report is there


def test_spark_executors_store_a_gzip_tree_as_duckdb_does(tmp_path: Path) -> None:
    """The executors compress what they write: the same stored bytes as DuckDB's gzip tree."""
    messages, statuses = _spec_cases()
    write_parquet(tmp_path / "messages.parquet", messages, MESSAGE_TYPES)
    write_parquet(tmp_path / "statuses.parquet", statuses, STATUS_TYPES)
    spark = run(tmp_path, "spark", 5, None, 3, gzip=True)
    duckdb = run(tmp_path, "duckdb", 5, None, 1, gzip=True)
    stored = tree_bytes(spark, ".gz")
    assert stored == tree_bytes(duckdb, ".gz")
    stored.pop("files.txt")
    assert all(body.startswith(b"\x1f\x8b") for body in stored.values())  # gzip's magic


def _refuse(*_args: Any) -> None:
    raise AssertionError("the driver wrote files")


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_spark_executors_write_a_new_trees_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> None:
    """Only this process's page and summary writers are refused: the Spark engine's executor
    tasks (other processes) write the files, the DuckDB engine's driver cannot."""
    monkeypatch.setattr(pages, "write_rows", _refuse)
    config = RunConfig(
        messages=str(DEMO / "messages"),
        statuses=str(DEMO / "statuses"),
        out=str(tmp_path / "out"),
        engine=engine,
        desc_pages=True,
    )
    if engine == "duckdb":
        with pytest.raises(AssertionError, match="the driver wrote files"):
            run_job(config)
        return
    report = run_job(config)
    summaries = report.data.participants
    assert len(list((tmp_path / "out/current/api").rglob("*.summary.json"))) == summaries
    listed = (tmp_path / "out/current/files.txt").read_text().split()
    assert report.files.files_written == len(listed)
    assert report.files.files_written > 2 * summaries  # pages of both orders, and the summaries


def test_spark_relative_paths_are_the_drivers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Executors run in directories of their own: relative inputs and output root still work,
    for a full run and for an incremental one (whose conversations file the tasks read)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(DEMO, "in")
    night = sorted(Path("in/messages").rglob("*.parquet"))[-1]
    held = night.rename(tmp_path / "night.parquet")
    config = RunConfig(
        messages="in/messages", statuses="in/statuses", out="out", engine="spark", desc_pages=True
    )
    assert run_job(config).mode == "full"
    held.rename(night)
    assert run_job(config).mode == "incremental"
    run_job(replace(config, engine="duckdb", out="duckdb"))
    spark, duckdb = (comparable_tree(Path(out)) for out in ("out", "duckdb"))
    assert len(spark) > 1000
    # Every file of the API, and its list; the reports differ (an update, a full run).
    for report in ("manifest.json", "report.json", "written.txt", "removed.txt"):
        spark.pop(report, None)
        duckdb.pop(report, None)
    assert spark == duckdb


def test_spark_failed_task_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    """Executors whose Python lacks convsum: the run says so in one line, and publishes
    nothing. Spark's own output (its JVM's log lines, the task's traceback) is not on stderr."""
    convsum = str(Path(sys.executable).parent / "convsum")
    messages = write_parquet(tmp_path / "m.parquet", [message("m1")], MESSAGE_TYPES)
    statuses = write_parquet(tmp_path / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    command = [convsum, "run", "--messages", str(messages), "--statuses", str(statuses)]
    command += ["--out", str(tmp_path / "out")]
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    environment = {**os.environ, "PYSPARK_PYTHON": python}
    result = subprocess.run(
        [*command, "--engine", "spark"], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "the Spark job failed: ModuleNotFoundError: No module named 'convsum'" in errors[0]
    lines = result.stderr.splitlines()
    assert all(line.startswith(("convsum: ", "Error: ")) for line in lines), result.stderr[-3000:]
    assert not (tmp_path / "out" / "current").exists()
