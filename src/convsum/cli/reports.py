"""The commands over the tables a tree serves: query, report, html, and their options."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from convsum.cli.base import CONTEXT, Command, Duration, checked, cli
from convsum.config import (
    DEFAULT_SPILL_LIMIT,
    check_memory_limit,
)
from convsum.errors import QueryError
from convsum.extras import require

if TYPE_CHECKING:
    from convsum.reporting.human import Unit
    from convsum.reporting.query import Budget, Tables
    from convsum.reporting.reports import Parameters


# ISO 8601 as the API writes it (a Z, milliseconds), with any offset, or without one (UTC).
AS_OF_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def _check_tz(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Accept UTF-8 text (reporting.reports.Parameters checks that it names a time zone)."""
    return None if value is None else _utf8(value, "time zone")


def _utf8(text: str, what: str, hint: str | None = None) -> str:
    """Return `text` if it is UTF-8 (Click passes other bytes of argv through as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise click.BadParameter(f"the {what} is not UTF-8 text", param_hint=hint) from None
    return text


def _budget_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options bounding what a query may use, --memory-limit and --spill-limit, given to
    the command as one `budget` (a reporting.query.Budget)."""

    @functools.wraps(command)
    def with_budget(*args: Any, memory_limit: str | None, spill_limit: str, **kwargs: Any) -> Any:
        from convsum.reporting.query import Budget

        return command(*args, budget=Budget(memory_limit, spill_limit), **kwargs)

    wrapped = click.option(
        "--spill-limit",
        metavar="SIZE",
        default=DEFAULT_SPILL_LIMIT,
        show_default=True,
        callback=checked(check_memory_limit),
        help="The most a query may write to its temporary directory (under TMPDIR) when it "
        "needs more than --memory-limit.",
    )(with_budget)
    return click.option(
        "--memory-limit",
        metavar="SIZE",
        callback=checked(check_memory_limit),
        help="Query memory budget, as 4GB or 512MiB [default: half the memory, at most 3GiB].",
    )(wrapped)


def _output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that prints rows: -F/--format, -o/--output, --raw, --limit."""
    from convsum.reporting import FORMATS

    command = _budget_options(command)
    command = click.option(
        "--limit",
        type=click.IntRange(min=0),
        metavar="N",
        help=f"Write at most the first N rows, 0 for all [default: {TABLE_ROWS} in the table "
        "format, all in the others].",
    )(command)
    command = click.option(
        "--raw",
        is_flag=True,
        help="csv and tsv: write every cell as it is, without the guard that keeps a "
        "spreadsheet from running a cell as a formula (a leading ').",
    )(command)
    command = click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the rows to FILE instead of standard output; its suffix names the format "
        "(.csv, .tsv, .json, .jsonl, .md, .parquet) unless -F does.",
    )(command)
    return click.option(
        "-F",
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        help="Output format [default: from the -o file's suffix; else table on a terminal, "
        "csv otherwise].",
    )(command)


def _outside_output_roots(output: Path | None, out: Path) -> Path | None:
    """Return `output` unless it lies inside an output root (exit 2): a file written there
    would overwrite or join what the tree serves and syncs."""
    from convsum.publish.tree import MARK

    if output is None or str(output) == "-":
        return output
    target = output.resolve()
    roots = [out.resolve(), *(d for d in target.parents if (d / MARK).exists())]
    inside = next((root for root in roots if target.is_relative_to(root)), None)
    if inside is not None:
        msg = f"{output} is inside the output root {inside}: write it elsewhere"
        raise click.BadParameter(msg, param_hint="-o/--output")
    return output


# The rows the terminal's table shows unless --limit says otherwise: what fits on a screen or two.
TABLE_ROWS = 40

# The formats -o FILE's suffix chooses (every format but the terminal's table).
_SUFFIXES = {
    ".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".md": "markdown", ".markdown": "markdown", ".parquet": "parquet",
}  # fmt: skip


def _destination(fmt: str | None, output: Path | None, out: Path) -> tuple[str | None, Path | None]:
    """Return the format and the file (None: standard output) that -F and -o ask for, before
    anything runs: -o's suffix names the format unless -F does, and `-o -` is standard output."""
    if output is not None and str(output) == "-":
        return fmt, None
    output = _outside_output_roots(output, out)
    if fmt is None and output is not None:
        fmt = _SUFFIXES.get(output.suffix.lower())
        if fmt is None:
            known = ", ".join(sorted(_SUFFIXES))
            msg = f"no format is named by {output.name!r}: end it in {known}, or give -F"
            raise click.BadParameter(msg, param_hint="-o/--output")
    return fmt, output


def _emit(
    table: Any,
    fmt: str | None,
    output: Path | None,
    raw: bool,
    limit: int | None,
    notes: list[str],
    units: Mapping[str, Unit] | None = None,
) -> None:
    """Write the rows (the first `limit`) to `output` or standard output, the `units` for the
    human formats; say what was written on standard error."""
    from convsum.reporting.output import Display, write

    to_terminal = output is None and sys.stdout.isatty()
    fmt = fmt or ("table" if to_terminal else "csv")
    limit = TABLE_ROWS if limit is None and fmt == "table" else limit or 0
    shown = table.slice(0, limit) if 0 < limit < table.num_rows else table
    if fmt == "parquet" and to_terminal:
        raise QueryError("parquet is binary: write it with -o FILE or into a pipe")
    import shutil  # here: it imports bz2 and lzma, which convsum --help does not need

    width = shutil.get_terminal_size().columns if to_terminal else None
    display = Display(width=width, terminal=to_terminal, raw=raw, units=units or {})
    try:
        if output is None:
            write(shown, fmt, sys.stdout.buffer, display)
            sys.stdout.flush()
        else:
            with output.open("wb") as handle:
                write(shown, fmt, handle, display)
    except BrokenPipeError:
        # The reader stopped early (`| head`): end quietly, as a process killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(128 + signal.SIGPIPE) from None
    except OSError as exc:
        raise click.ClickException(f"{output or 'stdout'}: cannot write ({exc.strerror})") from exc
    rows = f"{table.num_rows:,} row" + ("" if table.num_rows == 1 else "s")
    if shown is not table:
        rows += f" ({shown.num_rows:,} shown; --limit 0 for all)"
    click.echo("convsum: " + "; ".join([rows, *notes]), err=True)


class _QueryCommand(Command):
    """`query`, whose SQL may start with a `--` comment.

    Click would take such an argument for an unknown option; one that starts with `--` and holds
    whitespace cannot be an option's name, so it is passed as the SQL (after a `--`).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            sql = [a for a in args if a.startswith("--") and any(c.isspace() for c in a)]
            args = [a for a in args if a not in sql] + (["--", *sql] if sql else [])
        return super().parse_args(ctx, args)


@cli.command(cls=_QueryCommand, context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("sql", required=False)
@click.option(
    "-f",
    "--file",
    "sql_file",
    type=click.File("rb"),
    help="Read the SQL from FILE (- for standard input).",
)
@_output_options
def query(
    out: Path,
    sql: str | None,
    sql_file: Any,
    fmt: str | None,
    output: Path | None,
    raw: bool,
    limit: int | None,
    budget: Budget,
) -> None:
    """Run one read-only SQL statement over the tables OUT serves.

    The tables are messages, statuses, conversations and runs, as of the last published run
    (docs/reporting.md lists their columns); timestamps are UTC. SQL comes from the argument, from
    -f FILE, or from standard input when SQL is -. Anything but one SELECT (or FROM, WITH,
    VALUES, DESCRIBE, SUMMARIZE) is refused with exit code 2, as is reading any other file.
    """
    from convsum.reporting.query import open_tables

    if (sql is None) == (sql_file is None):
        raise click.UsageError("give the SQL as an argument, with -f FILE, or as - for stdin")
    text = _sql_text(sql, sql_file)
    fmt, output = _destination(fmt, output, out)

    with open_tables(out, budget) as tables:
        rows, run_id = tables.run(text), tables.run_id
    _emit(rows, fmt, output, raw, limit, [f"run {run_id}", "timestamps UTC"])


def _sql_text(sql: str | None, sql_file: Any) -> str:
    """Return the SQL of the argument, the -f file or standard input, refusing what is not UTF-8."""
    if sql_file is None and sql != "-":
        return _utf8(sql or "", "SQL", "SQL")
    if sql_file is None:
        data, source = sys.stdin.buffer.read(), "-"
    else:
        data, source = sql_file.read(), getattr(sql_file, "name", "-")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{source}: the SQL is not UTF-8 text (byte {exc.start})"
        raise click.BadParameter(msg, param_hint="SQL") from None


def _scope_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options choosing the messages a report reads: dates, time zone, owners, direction."""
    for option in reversed(
        (
            click.option(
                "--from",
                "from_",
                type=click.DateTime(["%Y-%m-%d"]),
                help="First local date (inclusive).",
            ),
            click.option(
                "--to", type=click.DateTime(["%Y-%m-%d"]), help="Last local date (exclusive)."
            ),
            click.option(
                "--tz",
                callback=_check_tz,
                help="IANA time zone of the days and dates [default: UTC].",
            ),
            click.option("--owner", "owners", multiple=True, help="Only this owner (repeatable)."),
            click.option(
                "--direction", type=click.Choice(("mt", "mo")), help="Only this direction."
            ),
        )
    ):
        command = option(command)
    return command


def _report_names(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete a report's name (without importing the reports' engines)."""
    from convsum.reporting import REPORT_NAMES

    return [CompletionItem(name) for name in REPORT_NAMES if name.startswith(incomplete)]


@cli.command(context_settings=CONTEXT)
@click.argument("name", required=False, metavar="NAME", shell_complete=_report_names)
@click.argument(
    "out", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--list", "list_reports", is_flag=True, help="List the reports, one line each.")
@click.option(
    "--show-sql",
    is_flag=True,
    help="Print the report's SQL, with the options' values written in, instead of running it: "
    "`convsum query OUT -` runs it as it is.",
)
@_scope_options
@click.option("--by", type=click.Choice(("day", "owner", "operator")), help="latency: group by.")
@click.option("--top", type=click.IntRange(min=1), help="failures, top: how many [default: 10].")
@click.option(
    "--min-volume",
    type=click.IntRange(min=1),
    help="operators: least messages per operator [default: 100].",
)
@click.option(
    "--older-than", type=Duration(), help="stuck: least age, as 48h or 2d [default: 48h]."
)
@click.option(
    "--as-of",
    type=click.DateTime(AS_OF_FORMATS),
    help="stuck: the time ages are measured at, as 2024-01-31, 2024-01-31T12:00:00 (UTC), or "
    "with an offset as the API writes it (2024-01-31T12:00:00.000Z) [default: now].",
)
@_output_options
def report(
    name: str | None,
    out: Path | None,
    list_reports: bool,
    show_sql: bool,
    fmt: str | None,
    output: Path | None,
    raw: bool,
    limit: int | None,
    budget: Budget,
    **options: Any,
) -> None:
    """Run the named report NAME over the tables OUT serves (see --list).

    Days are local dates of a message's creation in --tz; --from and --to select the half-open
    range of local dates [FROM, TO). Options that a report does not take are refused.
    """
    from convsum.reporting.query import open_tables
    from convsum.reporting.reports import REPORTS, UNITS, Parameters, run_report

    if list_reports:
        for known in REPORTS.values():
            click.echo(f"{known.name:<10} {known.summary}")
        return
    if name is None:
        raise click.UsageError("give a report NAME (see --list)")
    chosen = REPORTS.get(name)
    if chosen is None:
        raise QueryError(f"unknown report {name!r}; one of: {', '.join(REPORTS)}")
    given = {key for key, value in options.items() if value not in (None, ())}
    extra = given - chosen.options
    if extra:
        command = click.get_current_context().command
        flags = ", ".join(p.opts[0] for p in command.params if p.name in extra)
        raise click.UsageError(f"report {name} does not take {flags}")
    values = Parameters.of(options)
    if show_sql:
        click.echo(chosen.runnable_sql(values, options["by"]), nl=False)
        return
    if out is None:
        raise click.UsageError("give the output root OUT to report on")
    fmt, output = _destination(fmt, output, out)

    with open_tables(out, budget) as tables:
        rows, run_id = run_report(tables, chosen, values, options["by"]), tables.run_id
        _warn_unknown_owners(tables, values)
    notes = [f"report {name}", f"run {run_id}"]
    import pyarrow as pa  # loaded already: the rows are Arrow's

    if any(pa.types.is_timestamp(kind) for kind in rows.schema.types):
        notes.append("timestamps UTC")
    if "tz" in chosen.options:
        notes.append(f"time zone {values.tz}")
    if "as_of" in chosen.options:
        notes.append(f"as of {values.as_of.isoformat()}Z")
    _emit(rows, fmt, output, raw, limit, notes, UNITS)


def _warn_unknown_owners(tables: Tables, values: Parameters) -> None:
    """Say on standard error which --owner matches no message (an empty report, not a quiet day)."""
    from convsum.reporting.reports import unknown_owners

    for owner in unknown_owners(tables, values):
        click.echo(f"convsum: warning: --owner {owner!r} matches no message of this run", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write (- for standard output).",
)
@_scope_options
@click.option("--top", type=click.IntRange(min=1), help="Failure codes shown [default: 10].")
@click.option(
    "--min-volume",
    type=click.IntRange(min=1),
    help="Least messages of an operator shown [default: 100].",
)
@_budget_options
def html(out: Path, output: Path, budget: Budget, **options: Any) -> None:
    """Write one self-contained HTML report of the tables OUT serves, to open offline.

    The range and its time zone; tiles of messages, delivery rate, p50 and p95 latency and
    failures with their change against the period before; charts of volume, outcomes and
    latency per day, the top failure codes and the operators; the quality counts; an owner
    selector. The same data and options give the same bytes.
    """
    require("html")
    from convsum.reporting.html import collect, render_html
    from convsum.reporting.query import open_tables
    from convsum.reporting.reports import Parameters

    _outside_output_roots(output, out)
    values = Parameters.of(options)

    with open_tables(out, budget) as tables:
        page = collect(tables, values)
        _warn_unknown_owners(tables, values)
    text, to_stdout = render_html(page), str(output) == "-"
    try:
        if to_stdout:
            sys.stdout.buffer.write(text)
            sys.stdout.flush()
        else:
            output.write_bytes(text)
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write ({exc.strerror})") from exc
    where = "standard output" if to_stdout else output
    click.echo(f"convsum: wrote {where}; run {page.run_id}; time zone {values.tz}", err=True)
