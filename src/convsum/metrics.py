"""The jobs' metrics in Prometheus' text format, for node_exporter's textfile collector.

`convsum run` and `convsum sync` given a metrics file (`--metrics-file F.prom`) write it when they
end, whether they published or failed: the command's failure policy (cli/base.py) calls `write`
with the exit code. prometheus_client writes the file (`write_to_textfile`: a temporary file
beside it, then rename(2)), so the collector never reads half a file.

The names follow Prometheus' naming guide: base units (`_seconds`, `_bytes`), `_timestamp_seconds`
for times as Unix seconds. The counts describe the last run that ended and are gauges: a run's
rows read or files written are not a counter that only grows. The last success's and the last
failure's times outlive the runs: each write carries them over from the file it replaces, read
back with prometheus_client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from convsum import __version__
from convsum.results import RunReport, SyncReport

Job = Literal["run", "sync"]


class _Gauge(Protocol):
    def __call__(self, name: str, doc: str, value: float, **labels: str) -> None: ...


# Carried over from the file replaced: the last success and failure, and the served data's
# freshness, which a failed run leaves as it was.
_CARRIED = (
    "last_success_timestamp_seconds",
    "last_failure_timestamp_seconds",
    "newest_input_timestamp_seconds",
)
_NEWEST_DOC = "The latest created of any row read: how fresh the served data is."


@dataclass(frozen=True)
class Ending:
    """How a job ended: when, with which exit code, and its report if it finished."""

    job: Job
    started: float  # Unix seconds
    finished: float
    exit_code: int
    result: RunReport | SyncReport | None = None


def write(path: Path, ending: Ending) -> None:
    """Write the metrics of `ending` to `path`, in place of the file there."""
    prefix = f"convsum_{ending.job}_"
    registry = CollectorRegistry()
    made: dict[str, Gauge] = {}

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        if name not in made:
            made[name] = Gauge(prefix + name, doc, list(labels), registry=registry)
        (made[name].labels(**labels) if labels else made[name]).set(value)

    carried = _carried(path, prefix)
    carried[_CARRIED[0 if ending.exit_code == 0 else 1]] = ending.finished
    gauge("exit_code", "Exit code of the last run that ended (0: published).", ending.exit_code)
    gauge("started_timestamp_seconds", "When the last run started.", ending.started)
    gauge("finished_timestamp_seconds", "When the last run ended.", ending.finished)
    gauge("duration_seconds", "How long the last run took.", ending.finished - ending.started)
    if "last_success_timestamp_seconds" in carried:
        gauge("last_success_timestamp_seconds", "When a run last ended with exit code 0.",
              carried["last_success_timestamp_seconds"])  # fmt: skip
    if "last_failure_timestamp_seconds" in carried:
        gauge("last_failure_timestamp_seconds", "When a run last ended with another exit code.",
              carried["last_failure_timestamp_seconds"])  # fmt: skip
    gauge("info", "The convsum version that wrote these metrics.", 1, version=__version__)
    if isinstance(ending.result, RunReport):
        _run(ending.result, gauge)
    elif ending.job == "run" and "newest_input_timestamp_seconds" in carried:
        gauge("newest_input_timestamp_seconds", _NEWEST_DOC,
              carried["newest_input_timestamp_seconds"])  # fmt: skip
    elif isinstance(ending.result, SyncReport):
        _sync(ending.result, gauge)
    write_to_textfile(str(path), registry)


def _run(report: RunReport, gauge: _Gauge) -> None:
    for stage, seconds in report.stages.items():
        gauge("stage_duration_seconds", "Seconds the last published run spent in each stage.",
              seconds, stage=stage)  # fmt: skip
    for log, rows in report.rows_read.items():
        gauge("rows_read", "Rows the last published run read, by log.", rows, log=log)
    for log, count in report.files_read.items():
        gauge("files_read", "Input files the last published run read, by log.", count, log=log)
    if report.newest_input is not None:
        newest = datetime.fromisoformat(report.newest_input).timestamp()
        gauge("newest_input_timestamp_seconds", _NEWEST_DOC, newest)
    data, files = report.data, report.files
    gauge("messages", "Messages the published tree holds, after deduplication.", data.messages)
    gauge("conversations", "Participants with a summary in the published tree.",
          data.participants)  # fmt: skip
    gauge("owners", "Owners in the published tree.", data.owners)
    for change in ("written", "unchanged", "removed"):
        count = getattr(files, f"files_{change}")
        gauge("files", "Files of the tree the last published run wrote, kept or removed.",
              count, change=change)  # fmt: skip
    gauge("written_bytes", "Bytes of the files the last published run wrote.", files.bytes_written)


def _sync(report: SyncReport, gauge: _Gauge) -> None:
    for change in ("sent", "unchanged", "deleted"):
        gauge("objects", "Objects the last finished sync sent, found unchanged or deleted.",
              getattr(report, change), change=change)  # fmt: skip
    gauge("sent_bytes", "Bytes the last finished sync sent.", report.bytes)


def _carried(path: Path, prefix: str) -> dict[str, float]:
    """The last success's and failure's times in the file at `path`, if it has them."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:  # not a metrics file (any more): start afresh
        return {}
    found = {}
    for family in families:
        name = family.name.removeprefix(prefix)
        if family.name.startswith(prefix) and name in _CARRIED and family.samples:
            found[name] = family.samples[0].value
    return found
