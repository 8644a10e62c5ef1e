"""The run's event log: stage timings and one-off events, as text lines, a live line or JSON."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from convsum.config import LOG_FORMATS
from convsum.errors import first_line

PREFIX = "convsum: "
REFRESH_SECONDS = 0.25  # the live line is redrawn about four times a second
ERASE_LINE = "\r\x1b[K"  # back to the start of the line, then erase to its end
# Keys every JSON record sets itself; an event field of the same name would overwrite one.
_RESERVED = frozenset({"ts", "run_id", "event"})


class Stage:
    """An open stage: its name and counters, which any thread may update."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    def add(self, **counts: int) -> None:
        """Increment counters; a counter not seen before starts at zero."""
        with self._lock:
            for key, value in counts.items():
                self.counts[key] = self.counts.get(key, 0) + value

    def set(self, **counts: int) -> None:
        """Set counters to absolute values."""
        with self._lock:
            self.counts.update(counts)

    def elapsed(self) -> float:
        """Return the wall seconds since the stage started."""
        return time.perf_counter() - self._started

    def snapshot(self) -> dict[str, int]:
        """Return a copy of the counters, consistent even while other threads add to them."""
        with self._lock:
            return dict(self.counts)


class RunLog:
    """Write the run's events to a stream: text lines, a live terminal line, or JSON lines.

    Every write goes through one lock, so the display thread and the caller's threads never
    interleave. After `close()` nothing more is written.
    """

    def __init__(
        self, fmt: str = "text", stream: TextIO | None = None, tty: bool | None = None
    ) -> None:
        if fmt not in LOG_FORMATS:
            msg = f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}"
            raise ValueError(msg)
        self.fmt = fmt
        self.run_id: str | None = None
        self.seconds: dict[str, float] = {}
        self._stream: TextIO = sys.stderr if stream is None else stream
        self._live_display = fmt == "text" and (self._stream.isatty() if tty is None else tty)
        self._lock = threading.Lock()
        self._open: list[Stage] = []
        self._live = False  # a live line is on screen, not yet ended by a newline
        self._closed = False
        self._display: tuple[threading.Thread, threading.Event] | None = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def event(self, name: str, **fields: Any) -> None:
        """Log a one-off event, as `event("mode", mode="incremental", reason="no state yet")`.

        In text a field named like the event follows the name (`mode incremental (reason=...)`).
        """
        clash = _RESERVED & fields.keys()
        if clash:
            msg = f"event {name!r}: field names {sorted(clash)} are reserved for the record"
            raise ValueError(msg)
        if self.fmt == "json":
            self._write_json(name, fields)
        else:
            self._write_line(_event_text(name, fields))

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Time a stage: log its start, then its end with seconds and counts.

        An exception in the stage is logged as `stage_failed` (seconds, counts and the first line
        of the error) and re-raised. Only finished stages are added to `seconds`; a stage name
        that runs twice adds up.
        """
        stage = Stage(name)
        try:
            # Inside: a signal that lands while the start is being logged fails this stage.
            self._begin(stage)
            yield stage
        except BaseException as exc:
            self._finish(stage, first_line(exc))
            raise
        self._finish(stage, None)

    def close(self) -> None:
        """Stop the display thread and end any live line; later calls do nothing."""
        self._stop_display(only_if_idle=False)
        with self._lock:
            if self._live:
                self._write("\n")
                self._live = False
            self._closed = True

    def _begin(self, stage: Stage) -> None:
        if self.fmt == "json":
            self._write_json("stage_start", {"stage": stage.name})
            return
        with self._lock:
            self._open.append(stage)
        if self._live_display:
            with self._lock:
                self._write(self._live_line())
            self._start_display()
        else:
            self._write_line(f"{stage.name} started")

    def _finish(self, stage: Stage, error: str | None) -> None:
        seconds, counts = round(stage.elapsed(), 3), stage.snapshot()
        with self._lock:
            if stage in self._open:
                self._open.remove(stage)
            if error is None:
                self.seconds[stage.name] = round(self.seconds.get(stage.name, 0.0) + seconds, 3)
        if self.fmt == "json":
            record: dict[str, Any] = {"stage": stage.name, "seconds": seconds, "counts": counts}
            if error is None:
                self._write_json("stage_end", record)
            else:
                self._write_json("stage_failed", {**record, "error": error})
            return
        if error is None:
            self._write_line(f"{stage.name} done in {seconds:.3f} s{_fields_text(counts)}")
        else:
            self._write_line(
                f"{stage.name} failed after {seconds:.3f} s{_fields_text(counts)}: {error}"
            )
        self._stop_display(only_if_idle=True)

    def _write_json(self, event: str, fields: dict[str, Any]) -> None:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {"ts": ts, "run_id": self.run_id, "event": event, **fields}
        # default=str: a Path or a datetime in an event's fields is logged rather than fatal.
        line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE).decode()
        with self._lock:
            self._write(line)

    def _write_line(self, text: str) -> None:
        """Write one finished text line, replacing any live line and redrawing it below."""
        with self._lock:
            erase = ERASE_LINE if self._live else ""
            self._live = False
            self._write(f"{erase}{self._prefix()}{text}\n{self._live_line()}")

    def _live_line(self) -> str:
        """Return the live line of the innermost open stage, or "" (lock held)."""
        if not self._live_display or self._closed or not self._open:
            return ""
        stage = self._open[-1]
        text = f"{self._prefix()}{stage.name} ... {stage.elapsed():.1f} s"
        text += _fields_text(stage.snapshot())
        width = self._width()
        if width > 1:
            # A line wider than the terminal wraps, and `\r` would then redraw only its tail.
            text = text[: width - 1]
        self._live = True
        return ERASE_LINE + text

    def _prefix(self) -> str:
        # The whole run id: it is short, and greppable in the manifest and the run report.
        return f"{PREFIX}[{self.run_id}] " if self.run_id else PREFIX

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return 0

    def _write(self, text: str) -> None:
        """Write and flush (lock held); a log that cannot be written must not fail the run."""
        if not text or self._closed:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._closed = True

    def _start_display(self) -> None:
        with self._lock:
            if self._display is not None or self._closed:
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._refresh, args=(stop,), name="convsum-log-display", daemon=True
            )
            thread.start()
            self._display = (thread, stop)

    def _stop_display(self, *, only_if_idle: bool) -> None:
        with self._lock:
            if only_if_idle and self._open:
                return
            display, self._display = self._display, None
        if display is None:
            return
        thread, stop = display
        stop.set()
        # Joined outside the lock: the thread may be waiting for it to draw one last time.
        if thread is not threading.current_thread():
            thread.join()

    def _refresh(self, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_SECONDS):
            with self._lock:
                if not stop.is_set():
                    self._write(self._live_line())


def _event_text(name: str, fields: dict[str, Any]) -> str:
    rest = dict(fields)
    head = f"{name} {rest.pop(name)}" if name in rest else name
    return head + _fields_text(rest)


def _fields_text(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    return " (" + ", ".join(f"{key}={value}" for key, value in fields.items()) + ")"
