"""The installed `convsum` run as a process, and the stages its runs log (to stop it at)."""

from __future__ import annotations

import fcntl
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
