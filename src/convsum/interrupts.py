"""SIGINT and SIGTERM during a run: stop cleanly, and promptly even inside a long query.

Python runs a signal handler only when the main thread runs Python code, and a DuckDB or Polars
query can hold it in native code for minutes. So the handler raises `Interrupted` in the main
thread (where the run discards its partial tree and work directory on the way out), and a
watcher thread, woken at once through `signal.set_wakeup_fd`, ends the process itself when the
main thread has not finished within the grace period, or at a second signal. Ending it there is
safe: a run may be killed at any moment and the next run finishes the job (see run.py). Removing
what a stopped run wrote takes longer than the grace for a big tree (a million files), so the
removal asks for more time (`removing`): the process then ends once it has left nothing behind,
or at a second signal, or after CLEANUP_SECONDS (within systemd's 90 s before it kills).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 5.0
CLEANUP_SECONDS = 60.0
_STOP_WATCHING = 0  # written to the wakeup pipe to end the watcher; no signal has number 0
_REMOVING = 255  # written to it while the main thread removes a stopped run's files
# The wakeup pipe's write end, and what it received, of the interruptible block that runs.
_pipe: list[int] = []
_received: list[Received] = []


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


@dataclass
class Received:
    """The first stop signal received, if any."""

    signum: int | None = None
    raised: bool = False

    @property
    def exit_code(self) -> int:
        """Return the shell's exit code for death by the signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or 0)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextmanager
def interruptible(
    last_words: Callable[[Received], None], grace: float = GRACE_SECONDS
) -> Iterator[Received]:
    """Turn SIGINT and SIGTERM into `Interrupted` within the block (main thread only).

    If the block has not ended `grace` seconds after the first signal, or a second one comes,
    `last_words` is called from the watcher thread and the process exits with the signal's code.
    """
    received = Received()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum: int, _frame: object) -> None:
        if not received.raised:  # once: a second signal must not break the clean-up
            received.raised = True
            received.signum = received.signum or signum
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(
        target=_watch, args=(read_end, received, last_words, grace), daemon=True
    )
    watcher.start()
    _pipe.append(write_end)
    _received.append(received)
    try:
        yield received
    finally:
        _pipe.remove(write_end)
        _received.remove(received)
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.write(write_end, bytes([_STOP_WATCHING]))
        watcher.join()
        os.close(read_end)
        os.close(write_end)


def _watch(
    read_end: int,
    received: Received,
    last_words: Callable[[Received], None],
    grace: float,
    cleanup: float = CLEANUP_SECONDS,
) -> None:
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_end], [], [], timeout)
        byte = os.read(read_end, 1)[0] if ready else None
        if byte == _STOP_WATCHING:
            return
        if byte == _REMOVING:
            if deadline is not None:  # stopping: the removal may take its time
                deadline = max(deadline, time.monotonic() + cleanup)
            continue
        if byte is not None and deadline is None:
            received.signum = received.signum or byte
            deadline = time.monotonic() + grace
            continue
        last_words(received)
        os._exit(received.exit_code)


def stopped_by() -> str | None:
    """Return "interrupted by SIGTERM" once a stop signal came, else None: what ended a stage,
    however the code it interrupted put it (DuckDB says "Query interrupted")."""
    if _received and _received[-1].signum is not None:
        return f"interrupted by {_received[-1].name}"
    return None


def removing() -> None:
    """Say that the main thread now removes a stopped (or failed) run's files: if a stop signal
    came, the watcher waits up to CLEANUP_SECONDS more before it ends the process."""
    if _pipe:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the watcher is awake anyway
            os.write(_pipe[-1], bytes([_REMOVING]))
