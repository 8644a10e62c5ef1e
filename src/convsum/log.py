"""The run's event log: stage timings and one-off events, as text lines, a live line or JSON."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from convsum import __version__, interrupts
from convsum.config import LOG_FORMATS
from convsum.errors import first_line

if TYPE_CHECKING:
    from rich.live import Live
    from rich.text import Text

PREFIX = "convsum: "
REFRESH_SECONDS = 0.25  # the live line is redrawn about four times a second
# Keys every JSON record sets itself; an event field of the same name would overwrite one.
_RESERVED = frozenset({"ts", "level", "run_id", "event", "version"})
# The level of a JSON record, by event: a run's failure is an error, the rest is information.
_LEVELS = {"error": "error", "stage_failed": "error", "warning": "warning"}


class Stage:
    """An open stage: its name and counters, which any thread may update."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}  # what a counter will reach, once known (`expect`)
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

    def expect(self, **totals: int) -> None:
        """Say what counters will reach: the live line then shows each with its total, its
        share and the time left at the pace so far."""
        with self._lock:
            self.totals.update(totals)

    def progress(self) -> str:
        """Return the counters as the live line shows them: `25 %, 3.0s left, files=1,200/4,800`."""
        with self._lock:
            counts, totals = dict(self.counts), dict(self.totals)
        if not totals:
            return _fields_text(counts)
        from convsum.reporting.human import duration  # the job has PyArrow loaded by now

        elapsed, parts = self.elapsed(), []
        for key, value in counts.items():
            total = totals.get(key)
            if not total:
                parts.append(f"{key}={value:,}")
                continue
            # The share and the time left first: a narrow terminal crops the line's end.
            share = f"{100 * min(value, total) // total} %"
            if value:
                share += f", {duration(elapsed * max(total - value, 0) / value)} left"
            parts.append(f"{share}, {key}={value:,}/{total:,}")
        return " (" + ", ".join(parts) + ")" if parts else ""

    def elapsed(self) -> float:
        """Return the wall seconds since the stage started."""
        return time.perf_counter() - self._started

    def snapshot(self) -> dict[str, int]:
        """Return a copy of the counters, consistent even while other threads add to them."""
        with self._lock:
            return dict(self.counts)


class RunLog:
    """Write the run's events to a stream: text lines, a live terminal line, or JSON lines.

    On a terminal, text has a live line: the innermost open stage with its seconds and counts,
    redrawn about four times a second by rich's `Live` (its own thread), with every finished
    line printed above it. Writes of this class go through one lock, so the caller's threads
    never interleave, and rich's console serialises its own. After `close()` nothing more is
    written.
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
        self.failed_stage: str | None = None  # the first stage that failed
        self._started = time.perf_counter()
        self._stream: TextIO = sys.stderr if stream is None else stream
        self._live_display = fmt == "text" and (self._stream.isatty() if tty is None else tty)
        # Held only around this object's own state and writes, never while rich works: rich's
        # thread asks for the live line (which takes it) while holding rich's locks.
        self._lock = threading.Lock()
        self._open: list[Stage] = []
        self._closed = False
        self._live: Live | None = None

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
            self._finish(stage, interrupts.stopped_by() or first_line(exc))
            raise
        self._finish(stage, None)

    def elapsed(self) -> float:
        """Return the wall seconds since the log was opened (the job started)."""
        return time.perf_counter() - self._started

    def close(self) -> None:
        """End the live line, if any; later calls do nothing."""
        self._stop_live(only_if_idle=False)
        with self._lock:
            self._closed = True

    def _begin(self, stage: Stage) -> None:
        if self.fmt == "json":
            self._write_json("stage_start", {"stage": stage.name})
            return
        with self._lock:
            self._open.append(stage)
        if self._live_display:
            self._start_live()
        else:
            self._write_line(f"{stage.name} started")

    def _finish(self, stage: Stage, error: str | None) -> None:
        seconds, counts = round(stage.elapsed(), 3), stage.snapshot()
        with self._lock:
            if stage in self._open:
                self._open.remove(stage)
            if error is None:
                self.seconds[stage.name] = round(self.seconds.get(stage.name, 0.0) + seconds, 3)
            else:
                self.failed_stage = self.failed_stage or stage.name
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
        self._stop_live(only_if_idle=True)

    def _write_json(self, event: str, fields: dict[str, Any]) -> None:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            "ts": ts, "level": _LEVELS.get(event, "info"), "run_id": self.run_id, "event": event,
            **fields, "version": __version__,
        }  # fmt: skip
        # default=str: a Path or a datetime in an event's fields is logged rather than fatal.
        import orjson  # here: a command that logs nothing, or only text, never imports it

        line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE).decode()
        with self._lock:
            self._write(line)

    def _write_line(self, text: str) -> None:
        """Write one finished text line: above the live line while there is one."""
        line = f"{self._prefix()}{text}"
        live = self._live
        if live is None:
            with self._lock:
                self._write(line + "\n")
            return
        try:  # a log that cannot be written must not fail the run
            live.console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)
        except (OSError, ValueError):
            self._closed = True

    def _live_line(self) -> Text:
        """The live line: the innermost open stage, its seconds and counts (rich's thread)."""
        from rich.text import Text

        with self._lock:
            stage = self._open[-1] if self._open and not self._closed else None
        if stage is None:
            return Text()
        line = f"{self._prefix()}{stage.name} ... {stage.elapsed():.1f} s"
        # Cut at the terminal's width: a wrapped line would be redrawn from its last row only.
        return Text(line + stage.progress(), no_wrap=True, overflow="crop")

    def _prefix(self) -> str:
        # The whole run id: it is short, and greppable in the manifest and the run report.
        return f"{PREFIX}[{self.run_id}] " if self.run_id else PREFIX

    def _write(self, text: str) -> None:
        """Write and flush (lock held); a log that cannot be written must not fail the run."""
        if not text or self._closed:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._closed = True

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        if self._live is not None or self._closed:
            return
        console = Console(file=self._stream, force_terminal=True, highlight=False)
        self._live = Live(
            console=console,
            get_renderable=self._live_line,
            refresh_per_second=1 / REFRESH_SECONDS,
            transient=True,  # the stage's finished line replaces it
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def _stop_live(self, *, only_if_idle: bool) -> None:
        with self._lock:
            if only_if_idle and self._open:
                return
        live, self._live = self._live, None
        if live is not None:
            live.stop()


def _event_text(name: str, fields: dict[str, Any]) -> str:
    rest = dict(fields)
    head = f"{name} {rest.pop(name)}" if name in rest else name
    return head + _fields_text(rest)


def _fields_text(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    return " (" + ", ".join(f"{key}={value}" for key, value in fields.items()) + ")"
