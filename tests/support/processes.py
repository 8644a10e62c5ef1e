"""The installed `convsum` run as a process, and the stages its runs log (to stop it at)."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import time
from pathlib import Path

from convsum.publish.tree import READERS

BIN = Path(sys.executable).parent
CONVSUM = str(BIN / "convsum")

# Stages of an incremental run, in order; "swap" renames files into the served tree and "state"
# commits the catalog.
INCREMENTAL_STAGES = (
    "read", "plan", "derive", "pages", "summaries", "tables", "swap", "index", "state"
)  # fmt: skip


# The CLI in a process that signals itself in a stage: at its start, or a delay after it (from a
# timer thread) but no later than the end of its work, before its end is logged. However busy the
# machine, the signal lands in the stage, with no reader of the log in between. Only the stage's
# first run counts, and only one signal is sent.
_SIGNALS_ITSELF = """
import os, sys, threading
from convsum.log import RunLog
stage, delay, sig = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
begin, finish, lock, sent = RunLog._begin, RunLog._finish, threading.Lock(), []
def send():
    with lock:
        if not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)
def _begin(self, started):
    begin(self, started)
    if started.name == stage and not sent:
        if delay:
            threading.Timer(delay, send).start()
        else:
            send()
def _finish(self, ended, error):
    if ended.name == stage:
        send()
    finish(self, ended, error)
RunLog._begin, RunLog._finish = _begin, _finish
from convsum.cli import cli
cli(sys.argv[4:], prog_name="convsum")
"""


def signalling_itself(stage: str, sig: int = signal.SIGKILL, delay: float = 0.0) -> list[str]:
    """Return the command that runs `convsum` (append its arguments), which sends itself `sig`
    `delay` seconds after it logs the start of `stage`, or when the stage's work ends if sooner."""
    return [sys.executable, "-c", _SIGNALS_ITSELF, stage, str(delay), str(int(sig))]


def wait_until_reading(out: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until `process` (a query of the root `out`) holds the served tree's reader lock:
    its command has started, and with it the handling of stop signals."""
    readers = out / "current" / READERS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with readers.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            fcntl.flock(handle, fcntl.LOCK_UN)
        time.sleep(0.02)
    msg = f"the query of {out} never held its reader lock"
    raise AssertionError(msg)
