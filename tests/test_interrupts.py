"""A stop signal ends a run promptly, even while a query holds the main thread in native code."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # left out of make test-fast

# A DuckDB query that runs for about a minute and gives Python's signal handlers a turn seldom, if
# at all; when the signal does interrupt it, a second one plays a clean-up that takes too long.
_HELD = """
import duckdb
from convsum.interrupts import interruptible
with interruptible(lambda got: print("last words", got.name, flush=True), grace=0.5):
    print("started", flush=True)
    for _ in range(2):
        try:
            duckdb.connect().execute("SELECT sum(hash(range)) FROM range(10000000000)").fetchall()
        except BaseException:
            pass
print("the run ended by itself", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupts_end_a_query_held_in_native_code(sig: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HELD], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        time.sleep(0.5)
        process.send_signal(sig)
        try:
            code = process.wait(timeout=30)  # the query alone would run for about a minute
        finally:
            process.kill()
        assert (code, process.stdout.read()) == (128 + sig, f"last words {sig.name}\n")


# A stopped run that removes its files gets more time than the grace, and ends by itself once
# done; `removing` is said only if the first argument is "removing".
_REMOVES = """
import sys, time
from convsum.interrupts import Interrupted, interruptible, removing
with interruptible(lambda got: print("last words", got.name, flush=True), grace=0.3):
    try:
        print("started", flush=True)
        time.sleep(30)
    except Interrupted:
        if sys.argv[1] == "removing":
            removing()
        time.sleep(1.5)  # five times the grace: the removal of a big tree
print("removed", flush=True)
"""


@pytest.mark.parametrize("removes", [True, False])
def test_interrupts_wait_for_the_removal_of_a_stopped_runs_files(removes: bool) -> None:
    argv = [sys.executable, "-c", _REMOVES, "removing" if removes else "-"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
        said = process.stdout.read()
    assert (code, said) == ((0, "removed\n") if removes else (143, "last words SIGTERM\n"))
