"""The Spark engine's division of labour (local mode): what the executors do, not the driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from convsum.config import RunConfig
from convsum.engines import base
from convsum.run import run_job
from tests.test_determinism import DEMO, _tree


def _refuse(*_args: Any) -> None:
    raise AssertionError("the driver wrote files")


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_spark_executors_write_a_new_trees_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> None:
    """Only this process's page and summary writers are refused: the Spark engine's executor
    tasks (other processes) write the files, the DuckDB engine's driver cannot."""
    monkeypatch.setattr(base, "write_pages", _refuse)
    monkeypatch.setattr(base, "write_summaries", _refuse)
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
    summaries = report["participants"]
    assert len(list((tmp_path / "out/current/api").rglob("summary.json"))) == summaries
    assert report["files_written"] == len((tmp_path / "out/current/files.txt").read_text().split())
    assert report["files_written"] > 2 * summaries  # pages of both orders, and the summaries


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
    assert run_job(config)["mode"] == "full"
    held.rename(night)
    assert run_job(config)["mode"] == "incremental"
    run_job(replace(config, engine="duckdb", out="duckdb"))
    spark, duckdb = (_tree(Path(out)) for out in ("out", "duckdb"))
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
    command = [convsum, "run", "--messages", str(DEMO / "messages")]
    command += ["--statuses", str(DEMO / "statuses"), "--out", str(tmp_path / "out")]
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
