"""Queries while runs publish: the last published state, whole; neither side waits for the other.

A run holds the output root's lock and the state store's catalog (one writing process per
DuckDB file); a query opens neither. It reads the snapshot of the tree `current` names, and holds
that tree so that no run removes its files until the query ends.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from convsum.config import RunConfig
from convsum.reporting.query import open_tables
from convsum.run import run_job
from tests.support.data import DAYS, land
from tests.support.processes import CONVSUM

pytestmark = pytest.mark.slow  # left out of make test-fast

COUNT = "SELECT count(*) FROM messages"


def _config(inputs: Path, out: Path) -> RunConfig:
    return RunConfig(
        messages=str(inputs / "messages"), statuses=str(inputs / "statuses"), out=str(out)
    )


def _count(out: Path) -> int:
    """Ask a separate `convsum query` process how many messages the published tables hold."""
    done = subprocess.run(
        [CONVSUM, "query", str(out), COUNT, "-F", "jsonl"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(orjson.loads(done.stdout)["count_star()"])


@pytest.mark.parametrize("stage", ["read", "derive", "tables", "swap", "state"])
def test_query_during_a_stopped_nightly_run_answers_the_published_state(
    tmp_path: Path, stage: str
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    land(inputs, DAYS[:1])
    before = run_job(_config(inputs, out)).data.messages
    land(inputs, DAYS[1:])
    command = [
        CONVSUM, "run", "--messages", str(inputs / "messages"),
        "--statuses", str(inputs / "statuses"), "--out", str(out), "--log-format", "json",
    ]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        assert process.stderr is not None
        for line in process.stderr:
            event = orjson.loads(line)
            if event["event"] == "stage_start" and event["stage"] == stage:
                process.send_signal(signal.SIGSTOP)  # the run holds its lock and catalog
                break
        try:
            assert _count(out) == before
        finally:
            process.send_signal(signal.SIGCONT)
        process.stderr.read()
        assert process.wait(timeout=120) == 0
    after = _count(out)
    assert after > before
    assert after == run_job(_config(inputs, tmp_path / "fresh")).data.messages


def test_a_held_query_never_blocks_runs_and_keeps_its_files(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    land(inputs, DAYS[:1])
    first = run_job(_config(inputs, out)).data.messages
    with open_tables(out) as held:
        old_tree = held.tree
        # A nightly run replaces the days it touches in the held tree: the query's files stay.
        land(inputs, DAYS[1:2])
        second = run_job(_config(inputs, out))
        assert second.mode == "incremental" and second.data.messages > first
        assert held.run(COUNT).column(0).to_pylist() == [first]
        assert _count(out) == second.data.messages
        # A full run switches to a new tree: the held one is not removed meanwhile.
        land(inputs, DAYS[2:])
        third = run_job(_config(inputs, out), full=True)
        assert (out / "current").resolve() != old_tree.resolve()
        assert held.run(COUNT).column(0).to_pylist() == [first]
        assert _count(out) == third.data.messages
    # Once nobody reads it, the next run removes the old tree and the replaced files.
    run_job(_config(inputs, out))
    assert not old_tree.exists()
    assert [p.name for p in (out / "trees").iterdir()] == [(out / "current").resolve().name]
