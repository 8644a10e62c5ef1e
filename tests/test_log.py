"""The run's event log: JSON lines, text lines, and the live terminal line as a terminal shows it
(pyte, a VT100 emulator, plays the bytes written)."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyte
import pytest

from convsum import __version__
from convsum.config import RunConfig
from convsum.interrupts import Interrupted
from convsum.log import RunLog, Stage
from convsum.run import run_job
from tests.support.data import DAYS, land

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _screen(stream: io.StringIO, columns: int = 80) -> list[str]:
    """Return the lines a terminal of `columns` shows after the bytes written so far, durations
    as `T`, without the empty lines at the bottom; the cursor's line is marked `> `."""
    screen = pyte.Screen(columns, 10)
    # A terminal's line discipline sends each newline as a carriage return and a line feed.
    pyte.Stream(screen).feed(stream.getvalue().replace("\n", "\r\n"))
    lines = [_timeless(line.rstrip()) for line in screen.display]
    lines[screen.cursor.y] = "> " + lines[screen.cursor.y]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _threads_end(count: int) -> bool:
    """Whether the thread count falls to `count` within a second (rich's thread ends on its
    own once told to stop)."""
    deadline = time.monotonic() + 1
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count() == count


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def _timeless(text: str) -> str:
    """Replace every duration with `T` so whole outputs can be compared."""
    return re.sub(r"\d+\.\d+ s\b", "T s", text)


@pytest.fixture
def few_threads() -> Iterator[int]:
    """Yield the thread count before the test; fail if the test leaves a thread behind."""
    before = threading.active_count()
    yield before
    assert _threads_end(before)


def test_log_json_lines_parse_with_keys_in_order() -> None:
    stream = io.StringIO()
    log = RunLog("json", stream)
    log.event("mode", mode="incremental", reason="state found")
    with log.stage("read") as stage:
        stage.add(rows=3)
    records = _records(stream)
    assert [list(r) for r in records] == [
        ["ts", "level", "run_id", "event", "mode", "reason", "version"],
        ["ts", "level", "run_id", "event", "stage", "version"],
        ["ts", "level", "run_id", "event", "stage", "seconds", "counts", "version"],
    ]
    assert {(r["level"], r["version"]) for r in records} == {("info", __version__)}
    assert all(TS.fullmatch(r["ts"]) for r in records)
    assert [r["event"] for r in records] == ["mode", "stage_start", "stage_end"]


def test_log_json_run_id_appears_once_set() -> None:
    stream = io.StringIO()
    log = RunLog("json", stream)
    log.event("start")
    log.run_id = "20261126T153000Z-ab12cd"
    log.event("mode", mode="full")
    with log.stage("read"):
        pass
    assert [r["run_id"] for r in _records(stream)] == [None] + ["20261126T153000Z-ab12cd"] * 3


def test_log_json_stage_end_has_seconds_and_counts() -> None:
    stream = io.StringIO()
    log = RunLog("json", stream)
    with log.stage("pages") as stage:
        stage.add(pages=2, files=1)
        stage.add(pages=3)
        stage.set(files=7)
    end = _records(stream)[-1]
    assert end["event"] == "stage_end" and end["stage"] == "pages"
    assert isinstance(end["seconds"], float) and end["seconds"] >= 0
    assert end["counts"] == {"pages": 5, "files": 7}


def test_log_json_stage_failed_is_logged_and_reraised() -> None:
    stream = io.StringIO()
    log = RunLog("json", stream)
    with pytest.raises(RuntimeError, match="disk full"), log.stage("index") as stage:
        stage.add(files=4)
        raise RuntimeError("disk full\nsecond line")
    failed = _records(stream)[-1]
    assert list(failed) == [
        "ts", "level", "run_id", "event", "stage", "seconds", "counts", "error", "version"
    ]  # fmt: skip
    assert failed["level"] == "error"
    assert failed["seconds"] >= 0
    assert {k: failed[k] for k in ("event", "stage", "counts", "error")} == {
        "event": "stage_failed",
        "stage": "index",
        "counts": {"files": 4},
        "error": "disk full",
    }
    assert log.seconds == {}


class _SignalOnStart(io.StringIO):
    """A stream during whose write of the first stage start a stop signal lands (as it may,
    the moment a supervisor sees that line)."""

    def __init__(self) -> None:
        super().__init__()
        self.landed = False

    def write(self, text: str) -> int:
        written = super().write(text)
        if '"stage_start"' in text and not self.landed:
            self.landed = True
            raise Interrupted(signal.SIGTERM)
        return written


def test_log_json_signal_while_a_stage_start_is_logged_fails_that_stage() -> None:
    stream = _SignalOnStart()
    log = RunLog("json", stream)
    with pytest.raises(Interrupted), log.stage("derive"):
        pass
    events = [(r["event"], r.get("stage"), r.get("error")) for r in _records(stream)]
    assert events == [
        ("stage_start", "derive", None),
        ("stage_failed", "derive", "interrupted by SIGTERM"),
    ]


def test_log_json_on_a_terminal_has_no_display(few_threads: int) -> None:
    stream = _Terminal()
    log = RunLog("json", stream)
    with log.stage("read"):
        assert threading.active_count() == few_threads
    log.close()
    assert "\r" not in stream.getvalue() and len(_records(stream)) == 2


def test_log_json_event_rejects_reserved_fields() -> None:
    with pytest.raises(ValueError, match="reserved"):
        RunLog("json", io.StringIO()).event("mode", run_id="x")


def test_log_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        RunLog("xml", io.StringIO())


def test_log_text_lines() -> None:
    stream = io.StringIO()
    log = RunLog("text", stream)
    with log.stage("read") as stage:
        stage.set(files=3, rows=1000)
    log.event("mode", mode="incremental", reason="state found")
    log.event("published")
    with log.stage("derive"):
        pass
    assert _timeless(stream.getvalue()) == (
        "convsum: read started\n"
        "convsum: read done in T s (files=3, rows=1000)\n"
        "convsum: mode incremental (reason=state found)\n"
        "convsum: published\n"
        "convsum: derive started\n"
        "convsum: derive done in T s\n"
    )


def test_log_text_run_id_prefixes_every_line_once_set() -> None:
    stream = io.StringIO()
    log = RunLog("text", stream, tty=False)
    log.event("start")
    log.run_id = "20261126T153000Z-ab12cd"
    with log.stage("read"):
        pass
    assert _timeless(stream.getvalue()) == (
        "convsum: start\n"
        "convsum: [20261126T153000Z-ab12cd] read started\n"
        "convsum: [20261126T153000Z-ab12cd] read done in T s\n"
    )


def test_log_text_stage_failed() -> None:
    stream = io.StringIO()
    log = RunLog("text", stream)
    with pytest.raises(KeyboardInterrupt), log.stage("pages") as stage:
        stage.add(pages=2)
        raise KeyboardInterrupt
    assert _timeless(stream.getvalue()).splitlines()[-1] == (
        "convsum: pages failed after T s (pages=2): KeyboardInterrupt"
    )


def test_log_tty_redraws_in_place_then_ends_with_the_final_line(few_threads: int) -> None:
    stream = _Terminal()
    log = RunLog("text", stream)
    with log.stage("read") as stage:
        assert _screen(stream) == ["> convsum: read ... T s"]  # drawn at the start
        stage.add(rows=5)
        time.sleep(0.6)  # then redrawn by rich's thread, with the count
        assert _screen(stream) == ["> convsum: read ... T s (rows=5)"]
    log.close()
    assert _screen(stream) == ["convsum: read done in T s (rows=5)", "> "]


def test_log_tty_event_in_a_stage_prints_above_the_live_line() -> None:
    stream = _Terminal()
    with RunLog("text", stream) as log:
        log.event("start")
        with log.stage("derive"):
            log.event("mode", mode="full")
            assert _screen(stream) == [
                "convsum: start",
                "convsum: mode full",
                "> convsum: derive ... T s",
            ]
    assert _screen(stream) == ["convsum: start", "convsum: mode full",
                               "convsum: derive done in T s", "> "]  # fmt: skip


def test_log_tty_live_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Terminal()
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda _fd=0: os.terminal_size((20, 24)))
    with RunLog("text", stream) as log, log.stage("summaries") as stage:
        stage.set(conversations=123456)
        # Cut, not wrapped: a wrapped line would be redrawn from its last row only.
        assert _screen(stream, 20) == ["> convsum: summaries ."]
    assert _screen(stream, 80) == ["convsum: summaries done in T s (conversations=123456)", "> "]


class _SlowCounts(dict[str, int]):
    """Counters that yield to other threads between reading a value and storing the new one."""

    def __setitem__(self, key: str, value: int) -> None:
        time.sleep(0)  # without a lock, another add() now reads the value this one read
        super().__setitem__(key, value)


def test_log_stage_add_from_many_threads_sums() -> None:
    with RunLog("json", io.StringIO()).stage("pages") as stage:
        stage.counts = _SlowCounts()

        def add_many() -> None:
            for _ in range(100):
                stage.add(pages=1, bytes=10)

        with ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(add_many) for _ in range(8)]:
                future.result()
        assert stage.counts == {"pages": 800, "bytes": 8000}


def test_log_seconds_records_each_finished_stage_in_order() -> None:
    log = RunLog("json", io.StringIO())
    with log.stage("read"):
        time.sleep(0.05)
    with log.stage("derive"):
        pass
    with log.stage("read"):
        time.sleep(0.02)
    assert list(log.seconds) == ["read", "derive"]
    assert 0.07 <= log.seconds["read"] < 0.5 and 0 <= log.seconds["derive"] < 0.05
    assert all(round(value, 3) == value for value in log.seconds.values())


def test_log_stage_end_stops_the_display_thread(few_threads: int) -> None:
    log = RunLog("text", _Terminal())
    with log.stage("read"):
        assert threading.active_count() == few_threads + 1
    assert _threads_end(few_threads)


def test_log_close_is_idempotent_stops_the_thread_and_silences(few_threads: int) -> None:
    stream = _Terminal()
    log = RunLog("text", stream)
    with log.stage("read"):
        assert threading.active_count() == few_threads + 1
        log.close()
        assert _threads_end(few_threads)
        written = stream.getvalue()
        log.close()
        log.event("mode", mode="full")
    assert stream.getvalue() == written
    assert _screen(stream) == ["> "]  # the live line is gone


def test_log_live_totals_are_what_the_stages_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected: dict[str, dict[str, int]] = {}
    expect = Stage.expect

    def recorded(stage: Stage, **totals: int) -> None:
        expected[stage.name] = totals
        expect(stage, **totals)

    monkeypatch.setattr(Stage, "expect", recorded)
    inputs, out = tmp_path / "in", tmp_path / "out"
    config = RunConfig(messages=str(inputs / "messages"), statuses=str(inputs / "statuses"),
                       out=str(out), page_size=10, desc_pages=True)  # fmt: skip
    for days, mode in ((DAYS[:1], "full"), (DAYS[1:], "incremental")):
        land(inputs, days)
        expected.clear()
        stream = io.StringIO()
        with RunLog("json", stream) as log:
            assert run_job(config, log).mode == mode
        reached = {r["stage"]: r["counts"] for r in _records(stream) if r["event"] == "stage_end"}
        assert expected["summaries"] == reached["summaries"]
        assert reached["summaries"]["files"] > 0
        if mode == "full":
            assert expected["pages"] == reached["pages"]
        else:  # an update rewrites the pages from where its changes start: no total
            assert "pages" not in expected


def test_log_tty_live_line_shows_the_total_share_and_time_left() -> None:
    stage = Stage("pages")
    stage.add(files=1200, dirs=3)
    assert stage.progress() == " (files=1200, dirs=3)"
    stage.expect(files=4800)
    stage._started -= 10  # ten seconds for the first quarter: thirty more at that pace
    assert re.fullmatch(r" \(25 %, 30\.\ds left, files=1,200/4,800, dirs=3\)", stage.progress())
    stage.add(files=3600)
    assert stage.progress() == " (100 %, 0.0s left, files=4,800/4,800, dirs=3)"
    assert Stage("summaries").progress() == ""
    unstarted = Stage("summaries")
    unstarted.expect(files=10)
    unstarted.set(files=0)
    assert unstarted.progress() == " (0 %, files=0/10)"
