"""The Spark engine's division of labour (local mode): what the executors do, not the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convsum.config import RunConfig
from convsum.engines import base
from convsum.run import run_job
from tests.test_determinism import DEMO


def _refuse(*_args: Any) -> None:
    raise AssertionError("the driver wrote pages")


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_spark_executors_write_a_new_trees_pages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> None:
    """Only this process's page writer is refused: the Spark engine's executor tasks (other
    processes) write the pages, the DuckDB engine's driver cannot."""
    monkeypatch.setattr(base, "write_pages", _refuse)
    config = RunConfig(
        messages=str(DEMO / "messages"),
        statuses=str(DEMO / "statuses"),
        out=str(tmp_path / "out"),
        engine=engine,
        desc_pages=True,
    )
    if engine == "duckdb":
        with pytest.raises(AssertionError, match="the driver wrote pages"):
            run_job(config)
        return
    report = run_job(config)
    summaries = report["participants"]
    assert report["files_written"] == len((tmp_path / "out/current/files.txt").read_text().split())
    assert report["files_written"] > 2 * summaries  # pages of both orders, and the summaries
