"""A run killed (SIGKILL) at any moment: the rerun ends in exactly the tree of a clean run.

The demo data set is split into nights: its first day is published, then its two other days land
and a run adding them is killed shortly after it starts a given stage (random delays, seeded and
named in each case, counted inside the run, which sends itself the signal: no reader of its log
stands between); then the job runs again. The tree must equal a clean full run's, the state
store must open and answer, and a further run must still be incremental and correct.
"""

from __future__ import annotations

import random
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from click.testing import CliRunner

from convsum.cli import cli
from convsum.config import RunConfig
from convsum.incremental.catalog import CATALOG, STATE
from convsum.reporting.tables import SNAPSHOT, TABLES
from convsum.run import run_job
from tests.conftest import ALL_COLUMNS, table_rows
from tests.support.data import DAYS, land
from tests.support.processes import INCREMENTAL_STAGES, signalling_itself
from tests.support.trees import published

pytestmark = pytest.mark.slow  # left out of make test-fast


def _config(inputs: Path, out: Path) -> RunConfig:
    return RunConfig(
        messages=str(inputs / "messages"),
        statuses=str(inputs / "statuses"),
        out=str(out),
        page_size=10,
        desc_pages=True,
    )


@pytest.fixture(scope="module")
def clean_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root of a clean full run over all three days."""
    base = tmp_path_factory.mktemp("clean")
    land(base / "in", DAYS)
    run_job(_config(base / "in", base / "out"))
    return base / "out"


@pytest.fixture(scope="module")
def clean(clean_out: Path) -> dict[str, bytes]:
    """The tree a clean full run over all three days gives."""
    return published(clean_out)


@pytest.fixture(scope="module")
def first_day_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root of a clean full run over the first day."""
    base = tmp_path_factory.mktemp("first")
    land(base / "in", DAYS[:1])
    run_job(_config(base / "in", base / "out"))
    return base / "out"


def _tables_whole(out: Path, *outs: Path) -> None:
    """The tables of `out` hold exactly what one of `outs` holds (one run's, never half)."""
    assert table_rows(out, ALL_COLUMNS) in [table_rows(o, ALL_COLUMNS) for o in outs]


def _pending(out: Path) -> tuple[int, str]:
    """Return `convsum status OUT`'s exit code and what it says is pending."""
    said = CliRunner().invoke(cli, ["status", str(out)])
    lines = dict(line.split(":", 1) for line in said.stdout.splitlines())
    return said.exit_code, lines["pending"].strip()


def _killed_run(
    config: RunConfig, stage: str, delay: float, full: bool, sig: int = signal.SIGKILL
) -> tuple[int, list[dict[str, Any]]]:
    """Run the job, which sends itself `sig` `delay` seconds after it starts `stage`.

    Returns its exit code and the JSON log events it wrote after the start of `stage`.
    """
    command = [
        *signalling_itself(stage, sig, delay), "run", "--messages", config.messages,
        "--statuses", str(config.statuses), "--out", config.out,
        "--page-size", str(config.page_size), "--desc-pages", "--log-format", "json",
        *(["--full"] if full else []),
        *(["--metrics-file", config.metrics_file] if config.metrics_file else []),
    ]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL) as process:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                event = orjson.loads(line)
                if event["event"] == "stage_start" and event["stage"] == stage:
                    break
            after = [orjson.loads(line) for line in process.stderr]  # a traceback fails here
        finally:
            if process.poll() is None:
                process.wait(timeout=60)
    return process.returncode, after


def _leftovers(out: Path) -> list[str]:
    """Return the work directories, trees and table files that are neither served nor in use."""
    served = (out / "current").readlink().name
    trees = [p.name for p in (out / "trees").iterdir() if p.name != served]
    tables = out / "current" / TABLES
    snapshot = orjson.loads((tables / SNAPSHOT).read_bytes())
    listed = {tables / f for files in snapshot["tables"].values() for f in files}
    unlisted = [str(p) for p in tables.rglob("*.parquet") if p not in listed]
    return sorted(trees + [p.name for p in out.glob(".work-*")] + unlisted)


def _state_answers(out: Path) -> int:
    """Open the served tree's state catalog read-only and count the inputs it lists."""
    con = duckdb.connect(str(out / "current" / STATE / CATALOG), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM inputs").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else -1


def _first_day_then_killed(
    tmp_path: Path, stage: str, full: bool
) -> tuple[Path, Path, dict[str, bytes], str]:
    """Publish the first day, land the others, kill a run adding them at `stage` (seeded delay).

    Returns the inputs, the output root, the tree before the kill and where it was killed.
    """
    rng = random.Random(f"{'full' if full else 'incremental'}-{stage}")
    delay = 0.0 if stage == "state" else rng.uniform(0, 0.03)
    inputs, out = tmp_path / "in", tmp_path / "out"
    land(inputs, DAYS[:1])
    run_job(_config(inputs, out))
    before = published(out)
    land(inputs, DAYS[1:])
    code, after = _killed_run(_config(inputs, out), stage, delay, full=full)
    where = f"{stage} + {delay:.4f} s"
    assert code == -signal.SIGKILL, f"the run ended ({code}) before the kill at {where}"
    assert after == [], f"the run logged {after} after the start of {stage}, before the kill"
    return inputs, out, before, where


@pytest.mark.parametrize("stage", INCREMENTAL_STAGES)
def test_kill_during_an_incremental_run_then_rerun_gives_the_clean_tree(
    tmp_path: Path, clean: dict[str, bytes], clean_out: Path, first_day_out: Path, stage: str
) -> None:
    inputs, out, _before, where = _first_day_then_killed(tmp_path, stage, full=False)
    # The catalog lists the night's files only once the last stage commits them.
    assert _state_answers(out) in ((2, 6) if stage == "state" else (2,))
    _tables_whole(out, first_day_out, clean_out)
    # The swap records the update before it changes the served tree, and the last stage ends it.
    code, pending = _pending(out)
    if stage == "index":
        assert code == 1 and pending.startswith("an unfinished update: "), pending
    elif stage not in ("swap", "state"):
        assert (code, pending) == (0, "nothing"), f"killed at {where}"
    report = run_job(_config(inputs, out))
    assert published(out) == clean, f"killed at {where}"
    _tables_whole(out, clean_out)
    assert _leftovers(out) == [], f"killed at {where}"
    assert _state_answers(out) == 6
    assert _pending(out) == (0, "nothing")
    if stage == "state":  # the catalog may have been committed: then nothing is left to read
        assert report.mode == "incremental"
    else:
        assert report.files_read == {"messages": 2, "statuses": 2}
    again = run_job(_config(inputs, out))
    assert again.mode == "incremental"
    assert (again.files.files_written, again.files.files_removed) == (0, 0)


@pytest.mark.parametrize("stage", ("read", "pages", "summaries", "tables", "index", "state"))
def test_kill_during_a_full_run_then_rerun_gives_the_clean_tree(
    tmp_path: Path, clean: dict[str, bytes], clean_out: Path, first_day_out: Path, stage: str
) -> None:
    inputs, out, before, where = _first_day_then_killed(tmp_path, stage, full=True)
    assert published(out) == before  # a full run publishes nothing until its switch
    _tables_whole(out, first_day_out)
    run_job(_config(inputs, out))
    assert published(out) == clean, f"killed at {where}"
    _tables_whole(out, clean_out)
    assert _leftovers(out) == [], f"killed at {where}"


# SIGTERM (systemd's stop) at every stage of an update and of a full run; SIGINT (Ctrl-C) at two.
FULL_STAGES = tuple(s for s in INCREMENTAL_STAGES if s not in ("plan", "swap"))
STOPS = [
    *((signal.SIGTERM, stage, False) for stage in INCREMENTAL_STAGES),
    *((signal.SIGTERM, stage, True) for stage in FULL_STAGES),
    (signal.SIGINT, "derive", False),
    (signal.SIGINT, "state", True),
]


@pytest.mark.parametrize(("sig", "stage", "full"), STOPS)
def test_kill_stop_signal_ends_the_run_cleanly(
    tmp_path: Path, clean: dict[str, bytes], sig: signal.Signals, stage: str, full: bool
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    land(inputs, DAYS[:1])
    run_job(_config(inputs, out))
    before = published(out)
    land(inputs, DAYS[1:])
    metrics = tmp_path / "convsum-run.prom"
    config = replace(_config(inputs, out), metrics_file=str(metrics))
    code, events = _killed_run(config, stage, 0.0, full=full, sig=sig)
    assert code == 128 + sig, events
    assert f"convsum_run_exit_code {128 + sig}.0\n" in metrics.read_text()  # written on the way out
    errors = [e for e in events if e["event"] == "error"]
    assert [(e["message"].split(";")[0], e["exit_code"]) for e in errors] == [
        (f"interrupted by {sig.name}", 128 + sig)
    ]
    failed = [(e["stage"], e["error"]) for e in events if e["event"] == "stage_failed"]
    assert failed == [(stage, f"interrupted by {sig.name}")]
    if full:
        assert published(out) == before
    # The run cleaned up after itself: no work directory, no partial tree.
    assert not list(out.glob(".work-*")) and not list((out / "trees").glob(".*.partial"))
    run_job(_config(inputs, out))
    assert published(out) == clean
