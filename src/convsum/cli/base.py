"""The command group, its one failure policy, and what every command shares."""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from convsum import __version__
from convsum.errors import ConfigError, ConvsumError, first_line
from convsum.interrupts import Received, interruptible
from convsum.log import RunLog

if TYPE_CHECKING:
    from convsum.metrics import Job
    from convsum.results import RunReport, SyncReport

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
GROUP_CONTEXT = {**CONTEXT, "auto_envvar_prefix": "CONVSUM"}


class UsageFromConfig(click.UsageError):
    """A configuration problem is a usage problem: exit code 2."""


@contextmanager
def _failure_policy(ctx: click.Context) -> Iterator[None]:
    """How every command ends when it fails: one `Error:` line and an exit code.

    A ConvsumError exits with its class's code (errors.py: 1 for what the user can fix, 2 for a
    query that cannot run as asked, 75 when another run holds the output root); SIGINT or
    SIGTERM with 128 + the signal, once the command has cleaned up (interrupts.py). A job with
    a progress log (`job_log`) says it there: the live line ends first, and in JSON the line is
    an `error` event. A job (`job_record`) adds a line to its output root's history as it ends,
    and writes its metrics file if it has one, whatever the exit code. Misuse of the command
    line is Click's: exit code 2.
    """

    def say(message: str, code: int) -> None:
        log: RunLog | None = ctx.meta.get(_JOB_LOG)
        if log is not None and log.fmt == "json":
            log.event("error", message=message, exit_code=code)
        if log is not None:
            log.close()
        if log is None or log.fmt != "json":
            click.echo(f"Error: {message}", err=True)

    def interrupted(received: Received) -> str:
        message = f"interrupted by {received.name}"
        if _JOB_LOG in ctx.meta:
            message += (
                f"; nothing more was published, and the next {ctx.info_name} finishes the job"
            )
        return message

    with interruptible(lambda got: say(interrupted(got), got.exit_code)) as received:
        try:
            yield
        except BaseException as exc:
            if received.signum is not None:  # whatever the command raised on its way out
                code, message = received.exit_code, interrupted(received)
            elif isinstance(exc, ConvsumError):
                code, message = exc.exit_code, str(exc)
            else:
                _ended(ctx, 1, first_line(exc))  # a bug: Python exits with 1 after the traceback
                if _JOB_LOG in ctx.meta:
                    ctx.meta[_JOB_LOG].close()
                raise
            _ended(ctx, code, message)
            say(message, code)
            raise click.exceptions.Exit(code) from exc
        _ended(ctx, 0)
        if _JOB_LOG in ctx.meta:
            ctx.meta[_JOB_LOG].close()


class Command(click.Command):
    """A convsum command: its callback runs under the failure policy."""

    def invoke(self, ctx: click.Context) -> Any:
        with _failure_policy(ctx):
            return super().invoke(ctx)


class _Group(click.Group):
    """The convsum group: its commands are `Command`s, its subgroups `_Group`s."""

    command_class = Command
    group_class = type


@click.group(cls=_Group, context_settings=GROUP_CONTEXT)
def cli() -> None:
    """Turn SMS message and delivery-report logs into a static conversations API."""


T = TypeVar("T")


def checked(
    check: Callable[[T], T],
) -> Callable[[click.Context, click.Parameter, T | None], T | None]:
    """Return a Click callback applying one of the configuration's checks (a bad value exits 2)."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: T | None) -> T | None:
        if value is None:
            return None
        try:
            return check(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


def checked_later(path: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """`checked`, with the check named as `module:attribute` (`convsum.publish.bucket:
    Destination.parse`) and imported only when a value is given: `--help` and the other commands
    import no publisher."""

    def check(value: Any) -> Any:
        module, attribute = path.split(":")
        found: Any = importlib.import_module(module)
        for name in attribute.split("."):
            found = getattr(found, name)
        return found(value)

    return checked(check)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration as a number and a unit: 90s, 30m, 48h or 2d."""

    name = "DURATION"
    MAX_SECONDS = 36500 * 86400  # a hundred years: any age a message can have
    _UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        found = re.fullmatch(r"(\d{1,12})([smhd])", str(value).strip())
        seconds = int(found.group(1)) * self._UNITS[found.group(2)] if found else 0
        if found is None or seconds > self.MAX_SECONDS:
            self.fail(
                f"{value!r} is not a duration like 90s, 30m, 48h or 2d, of at most 36500d",
                param,
                ctx,
            )
        return seconds


CONFIG_TABLES = "convsum.config_tables"
_JOB_LOG = "convsum.job_log"
_JOB_RECORD = "convsum.job_record"


@contextmanager
def job_log(fmt: str) -> Iterator[RunLog]:
    """Open the progress log of a job (run, sync). The failure policy closes it once it has
    said there how the job ended (and whether its ending could be recorded)."""
    log = RunLog(fmt)
    click.get_current_context().meta[_JOB_LOG] = log
    yield log


@dataclass
class JobRecord:
    """What a job's ending is recorded with: its output root's history (if the root exists) and
    its metrics file (if given); the job sets `result` once it has one."""

    job: Job
    out: Path
    metrics: Path | None
    started: float
    destination: str | None = None  # a sync's
    result: RunReport | SyncReport | None = None


def job_record(
    job: Job, out: str | Path, metrics: str | None = None, destination: str | None = None
) -> JobRecord:
    """Have the failure policy record this job's ending, whatever its exit code."""
    record = JobRecord(job, Path(out), Path(metrics) if metrics else None, time.time(), destination)
    click.get_current_context().meta[_JOB_RECORD] = record
    return record


def _ended(ctx: click.Context, code: int, message: str | None = None) -> None:
    """Record the ending of the job that ended with `code` (and `message`), if it is one."""
    record: JobRecord | None = ctx.meta.pop(_JOB_RECORD, None)
    if record is None:
        return
    from convsum import history

    finished, result = time.time(), record.result
    log: RunLog | None = ctx.meta.get(_JOB_LOG)
    ended = history.Ended(
        job=record.job,
        run_id=result.run_id if result is not None else log.run_id if log else None,
        started=history.moment(record.started),
        finished=history.moment(finished),
        exit_code=code,
        error=message,
        stage=log.failed_stage if log and code else None,
        mode=getattr(result, "mode", None),
        destination=record.destination,
    )
    try:
        history.append(record.out, ended)
    except OSError as exc:  # the job's own outcome stands; say why its record is missing
        _warn(log, f"{record.out / history.HISTORY}: not recorded ({exc.strerror})")
    if record.metrics is not None:
        from convsum.metrics import Ending, write

        try:
            write(record.metrics, Ending(record.job, record.started, finished, code, result))
        except OSError as exc:
            _warn(log, f"{record.metrics}: metrics not written ({exc.strerror})")


def _warn(log: RunLog | None, message: str) -> None:
    """Say `message` as a warning: a `warning` event of a JSON log, else a line on stderr."""
    if log is not None and log.fmt == "json":
        log.event("warning", message=message)
    else:
        click.echo(f"convsum: warning: {message}", err=True)


def add_version(command: click.Command) -> None:
    """Give `command`, and every command under it, `-V`/`--version`: one rule, not a decorator
    that each new command must remember."""
    click.version_option(__version__, "-V", "--version", prog_name="convsum")(command)
    for sub in getattr(command, "commands", {}).values():
        add_version(sub)
