"""The jobs' history: a line for every run and sync that ended, published or not, and the status
an operator's check reads from it.

`OUT/history.jsonl` gets one JSON object per ended job, appended by the command's failure policy
(cli/base.py) as the job ends, whatever its exit code: the job, its run id, start and end, exit
code, the error line and the stage it failed in. A job killed with SIGKILL writes nothing (the
next one's line follows). `convsum query` reads it as the `history` table; `convsum status`
reads it with the served tree's manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

HISTORY = "history.jsonl"
# The `history` table's columns, as DuckDB reads the file.
COLUMNS = {
    "job": "VARCHAR", "run_id": "VARCHAR", "started": "TIMESTAMPTZ", "finished": "TIMESTAMPTZ",
    "exit_code": "INTEGER", "error": "VARCHAR", "stage": "VARCHAR", "mode": "VARCHAR",
    "destination": "VARCHAR",
}  # fmt: skip


@dataclass(frozen=True)
class Ended:
    """One line of the history: a job that ended."""

    job: str  # run or sync
    run_id: str | None  # a sync's: the run it sent
    started: str  # ISO 8601, UTC
    finished: str
    exit_code: int
    error: str | None = None  # the `Error:` line, without "Error: "
    stage: str | None = None  # the stage it failed in
    mode: str | None = None  # a published run's: full or incremental
    destination: str | None = None  # a sync's bucket


def moment(seconds: float) -> str:
    """Unix seconds as the history writes them."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def append(out: Path, ended: Ended) -> None:
    """Add `ended` to the history of the output root `out` (if it is a directory), as one write
    of one line, so that two jobs that end together never interleave."""
    if not out.is_dir():
        return  # a job that failed before there was an output root has no history to join
    line = orjson.dumps(asdict(ended), option=orjson.OPT_APPEND_NEWLINE)
    fd = os.open(out / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)


def read(out: Path) -> list[Ended]:
    """Return the history of `out`, oldest first (a line a crash cut short is left out)."""
    try:
        lines = (out / HISTORY).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(ValueError, TypeError):
            found.append(Ended(**orjson.loads(line)))
    return found


@dataclass(frozen=True)
class Status:
    """What `convsum status` says of an output root, and whether it is healthy."""

    served: dict[str, Any] | None  # the served tree's manifest
    last_run: Ended | None
    last_success: Ended | None
    last_sync: Ended | None
    pending: int | None  # conversations an unfinished update left; None while a run is under way
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems


def status(out: Path, max_input_age: int | None, now: datetime) -> Status:
    """Return the status of the output root `out`: the served run, the last run and sync, the
    work an unfinished update left, and what is wrong (nothing served, the last run or sync
    failed, the bucket behind, an update left unfinished, the data older than `max_input_age`
    seconds)."""
    try:
        served = orjson.loads((out / "current" / "manifest.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        served = None
    history = read(out)
    runs = [e for e in history if e.job == "run"]
    syncs = [e for e in history if e.job == "sync"]
    last_run = runs[-1] if runs else None
    last_success = next((e for e in reversed(runs) if e.exit_code == 0), None)
    last_sync = syncs[-1] if syncs else None
    problems = []
    if served is None:
        problems.append("nothing is published")
    if last_run is not None and last_run.exit_code != 0:
        problems.append(f"the last run failed (exit {last_run.exit_code})")
    if last_sync is not None and last_sync.exit_code != 0:
        problems.append(f"the last sync failed (exit {last_sync.exit_code})")
    elif last_sync is not None and served is not None and last_sync.run_id != served["run_id"]:
        problems.append(f"the bucket holds run {last_sync.run_id}, not the served one")
    from convsum.incremental.catalog import STATE, Catalog

    pending = Catalog.pending_in(out / "current" / STATE) if served is not None else 0
    if pending:
        problems.append("an update was left unfinished")
    newest = served and served.get("newest_input")
    if max_input_age is not None and newest:
        age = (now - datetime.fromisoformat(newest)).total_seconds()
        if age > max_input_age:
            problems.append("the served data is older than --max-input-age")
    return Status(served, last_run, last_success, last_sync, pending, problems)
