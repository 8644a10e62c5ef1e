"""Same input, byte-identical trees: whatever the engine, threads, file or row order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from convsum.config import ENGINES, RunConfig
from convsum.run import run_job
from tests.support.data import DEMO
from tests.support.trees import comparable_tree


def _run(messages: Path, statuses: Path, out: Path, engine: str, full: bool = False) -> None:
    config = RunConfig(
        messages=str(messages), statuses=str(statuses), out=str(out), engine=engine, desc_pages=True
    )
    run_job(config, full=full)


def _run_process(out: Path, engine: str, threads: int) -> None:
    """Run the installed command: Polars fixes its thread pool when a process imports it."""
    command = [
        Path(sys.executable).parent / "convsum", "run", "--messages", DEMO / "messages",
        "--statuses", DEMO / "statuses", "--out", out, "--engine", engine,
        "--threads", str(threads), "--desc-pages",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


# With Spark, --threads is each task's DuckDB threads: the DuckDB case covers it, without two
# more JVM starts (13 s each).
def test_determinism_thread_count_does_not_change_output(tmp_path: Path, engine: str) -> None:
    _run_process(tmp_path / "one", engine, threads=1)
    _run_process(tmp_path / "two", engine, threads=2)
    one, two = (
        comparable_tree(tmp_path / "one", ("config",)),
        comparable_tree(tmp_path / "two", ("config",)),
    )
    assert one.keys() == two.keys()
    assert one == two


@pytest.mark.spark
def test_determinism_engines_write_identical_trees(tmp_path: Path) -> None:
    for engine in ENGINES:
        _run(DEMO / "messages", DEMO / "statuses", tmp_path / engine, engine)
    trees = [comparable_tree(tmp_path / engine, ("config", "engine")) for engine in ENGINES]
    assert len(trees[0]) > 1000
    assert all(tree == trees[0] for tree in trees[1:])


def test_determinism_rerun_is_byte_identical(tmp_path: Path, engine: str) -> None:
    _run(DEMO / "messages", DEMO / "statuses", tmp_path / "out", engine)
    first = comparable_tree(tmp_path / "out")
    _run(DEMO / "messages", DEMO / "statuses", tmp_path / "out", engine, full=True)
    again = comparable_tree(tmp_path / "out")
    assert again.keys() == first.keys()
    for name in ("report.json", "manifest.json"):  # "--full" instead of "no state store yet"
        assert again.pop(name).replace(b"--full", b"no state store yet") == first.pop(name)
    assert again == first


def test_determinism_row_and_file_order_do_not_change_output(tmp_path: Path, engine: str) -> None:
    for name in ("messages", "statuses"):
        table = ds.dataset(DEMO / name, partitioning="hive").to_table()
        reversed_rows = table.take(list(reversed(range(table.num_rows))))
        half = table.num_rows // 2
        (tmp_path / "shuffled" / name).mkdir(parents=True)
        pq.write_table(reversed_rows.slice(0, half), tmp_path / "shuffled" / name / "b.parquet")
        pq.write_table(reversed_rows.slice(half), tmp_path / "shuffled" / name / "a.parquet")
    _run(DEMO / "messages", DEMO / "statuses", tmp_path / "demo", engine)
    shuffled = tmp_path / "shuffled"
    _run(shuffled / "messages", shuffled / "statuses", tmp_path / "reordered", engine)
    ignore = ("config", "inputs", "rows_read", "files_read")
    demo, reordered = (
        comparable_tree(tmp_path / "demo", ignore),
        comparable_tree(tmp_path / "reordered", ignore),
    )
    assert demo == reordered
