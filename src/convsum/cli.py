"""The command line: parse, validate, call one core function, map errors to exit codes."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
import orjson

from convsum import __version__
from convsum.config import (
    DEFAULT_CACHE_CONTROL,
    DEFAULT_SPILL_LIMIT,
    ENGINES,
    LOG_FORMATS,
    ONLY,
    build_config,
    check_memory_limit,
    check_page_size,
    check_spark_master,
    load_toml,
)
from convsum.errors import ConfigError, ConvsumError, QueryError
from convsum.interrupts import Received, interruptible
from convsum.log import RunLog
from convsum.publish.bucket import Destination, check_cache_control
from convsum.publish.nginx import (
    DEFAULT_API_CACHE_CONTROL,
    DEFAULT_MAX_LIMIT,
    TokenApi,
    check_listen,
    check_trusted_proxy,
    check_user,
    render,
)
from convsum.publish.tree import API, CURRENT, MARK
from convsum.results import RunReport, SyncReport, as_dict

if TYPE_CHECKING:
    from convsum.reporting.query import Budget

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
GROUP_CONTEXT = {**CONTEXT, "auto_envvar_prefix": "CONVSUM"}


class _UsageFromConfig(click.UsageError):
    """A configuration problem is a usage problem: exit code 2."""


@contextmanager
def _failure_policy(ctx: click.Context) -> Iterator[None]:
    """How every command ends when it fails: one `Error:` line and an exit code.

    A ConvsumError exits with its class's code (errors.py: 1 for what the user can fix, 2 for a
    query that cannot run as asked, 75 when another run holds the output root); SIGINT or
    SIGTERM with 128 + the signal, once the command has cleaned up (interrupts.py). A job with
    a progress log (`job_log`) says it there: the live line ends first, and in JSON the line is
    an `error` event. Misuse of the command line is Click's: exit code 2.
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
                if _JOB_LOG in ctx.meta:
                    ctx.meta[_JOB_LOG].close()
                raise
            say(message, code)
            raise click.exceptions.Exit(code) from exc


class _Command(click.Command):
    """A convsum command: its callback runs under the failure policy."""

    def invoke(self, ctx: click.Context) -> Any:
        with _failure_policy(ctx):
            return super().invoke(ctx)


class _Group(click.Group):
    """The convsum group: its commands are `_Command`s, its subgroups `_Group`s."""

    command_class = _Command
    group_class = type


@click.group(cls=_Group, context_settings=GROUP_CONTEXT)
def cli() -> None:
    """Turn SMS message and delivery-report logs into a static conversations API."""


T = TypeVar("T")


def _checked(
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


_cache_control_option = click.option(
    "--cache-control",
    metavar="VALUE",
    callback=_checked(check_cache_control),
    help=f"Cache-Control of every object a sync sends [default: {DEFAULT_CACHE_CONTROL}].",
)


@cli.command(context_settings=CONTEXT)
@click.option("--messages", metavar="PATH", help="Message log: Parquet file, directory or glob.")
@click.option("--statuses", metavar="PATH", help="Status log: Parquet file, directory or glob.")
@click.option("--out", metavar="DIR", help="Output root (the served tree is DIR/current/api).")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, _param, path: _config_file(ctx, path),
    help="TOML file with the same keys as these options; options given here win.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    callback=lambda _ctx, _param, name: _installed(name),
    help="Computation engine [default: duckdb].",
)
@click.option(
    "--spark-master",
    metavar="URL",
    callback=_checked(check_spark_master),
    help="With --engine spark: the cluster, as spark://HOST:7077 or yarn [default: "
    "spark-submit's, else local[*]].",
)
@click.option(
    "--page-size",
    type=int,
    callback=_checked(check_page_size),
    help="Messages per page; must divide 10000 [default: 50].",
)
@click.option(
    "--desc-pages/--no-desc-pages",
    default=None,
    help="Also write descending pages, to serve order=DESC [default: off].",
)
@click.option(
    "--only",
    type=click.Choice(ONLY),
    help="Publish only this part: summaries skips the message pages [default: everything].",
)
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads [default: all cores].")
@click.option(
    "--memory-limit",
    metavar="SIZE",
    callback=_checked(check_memory_limit),
    help="Engine memory budget, as 4GB or 512MiB [default: half the memory, at most 3GiB].",
)
@click.option(
    "--rebuild/--no-rebuild",
    default=None,
    help="Allow a full rebuild when an input file read earlier changed or disappeared, or the "
    "output settings changed; with --no-rebuild such a run fails instead [default: allow].",
)
@click.option("--full", is_flag=True, help="Rebuild everything, ignoring the state store.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="Progress as text (a live line on a terminal) or JSON lines [default: text].",
)
@click.option(
    "--sync-to",
    metavar="s3://BUCKET/PREFIX",
    callback=_checked(lambda url: str(Destination.parse(url))),
    help="After publishing, sync the tree to this bucket (see `convsum sync`).",
)
@_cache_control_option
@click.option("--report", is_flag=True, help="Print the run report (JSON) on stdout.")
def run(report: bool, full: bool, **options: Any) -> None:
    """Read the logs, compute every conversation and publish the static API tree.

    A run adds only the input files it has not read yet to the published tree, unless it must
    rebuild (see --full and --rebuild). Bad input (a missing file or column, a wrong type, a null
    id, an unknown direction, a corrupt file) exits with code 1 and publishes nothing; misuse of
    the command line exits with 2; a second run on an output root that a run is writing exits at
    once with 75.
    """
    from convsum.run import run_job

    tables = click.get_current_context().meta.get(_CONFIG_TABLES, {})
    try:
        config = build_config({**options, **tables})
    except ConfigError as exc:
        raise _UsageFromConfig(str(exc)) from exc
    with job_log(config.log_format) as log:
        result = run_job(config, log, full=full)
        out = Path(config.out)
        log.event(
            "published",
            mode=result.mode,
            files_written=result.files.files_written,
            files_unchanged=result.files.files_unchanged,
            files_removed=result.files.files_removed,
            owners=result.data.owners,
            participants=result.data.participants,
            api=str(out / "current" / "api"),
        )
        if config.sync_to:
            from convsum.publish.sync import sync_tree

            sync_tree(out, Destination.parse(config.sync_to), config.cache_control, log)
    if config.log_format == "text":
        click.echo(
            "convsum: serve it with: mkdir -p nginx && convsum nginx-conf "
            f"{shlex.quote(str(out))} --listen 127.0.0.1:8080 > nginx/nginx.conf && "
            'nginx -p "$PWD/nginx" -c "$PWD/nginx/nginx.conf"',
            err=True,
        )
    if report:
        _print_report(result)


_CONFIG_TABLES = "convsum.config_tables"
_JOB_LOG = "convsum.job_log"


def _installed(engine: str | None) -> str | None:
    """Return the engine's name if what it needs is installed; else exit 2 saying what to do."""
    if engine == "spark":
        from convsum.engines.spark_session import INSTALL_HINT, java_problem

        problem = INSTALL_HINT if importlib.util.find_spec("pyspark") is None else java_problem()
        if problem is not None:
            raise click.BadParameter(problem)
    return engine


def _config_file(ctx: click.Context, path: Path | None) -> None:
    """Read the TOML file first (an eager option): its keys become the options' defaults.

    So Click merges and checks them like the options: the command line wins, then the
    environment, then the file. The tables that are not options ([codes], [columns]) are kept
    in the context for the command.
    """
    if path is None:
        return
    try:
        values = load_toml(path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="--config") from exc
    options = {p.name for p in ctx.command.params}
    ctx.default_map = {
        **(ctx.default_map or {}),
        **{k: v for k, v in values.items() if k in options},
    }
    ctx.meta[_CONFIG_TABLES] = {k: v for k, v in values.items() if k not in options}


@contextmanager
def job_log(fmt: str) -> Iterator[RunLog]:
    """Open the progress log of a job (run, sync). A job that fails leaves it open: the failure
    policy says there how the job ended, then closes it."""
    log = RunLog(fmt)
    click.get_current_context().meta[_JOB_LOG] = log
    yield log
    log.close()


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("destination", metavar="s3://BUCKET/PREFIX", callback=_checked(Destination.parse))
@_cache_control_option
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    help="Progress as text (a live line on a terminal) or JSON lines [default: text].",
)
@click.option(
    "--verify",
    is_flag=True,
    help="List the bucket and repair what differs from the tree: send missing and altered "
    "objects, delete strays (a sync after a full run does this itself).",
)
@click.option("--report", is_flag=True, help="Print the sync report (JSON) on stdout.")
def sync(
    out: Path,
    destination: Destination,
    cache_control: str | None,
    log_format: str,
    verify: bool,
    report: bool,
) -> None:
    """Copy the tree published in OUT to an S3-compatible bucket, which then serves the API.

    Sends new and changed pages, then summaries, then deletions, then the bucket's manifest.json
    (the run it holds). Resumable: a sync stopped at any point is finished by the next one, and
    a synced tree sends nothing. Credentials and the endpoint come from the AWS environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws). A failed
    request exits with 1 naming the object, as does a key longer than S3's 1024 bytes (before
    any request); a run writing OUT makes it exit with 75.
    """
    from convsum.publish.sync import sync_tree

    with job_log(log_format) as log:
        cache_control = cache_control or DEFAULT_CACHE_CONTROL
        result = sync_tree(out, destination, cache_control, log, verify=verify)
    if report:
        _print_report(result)


def _print_report(result: RunReport | SyncReport) -> None:
    """Write a run's or a sync's report on stdout, as JSON (`--report`)."""
    sys.stdout.buffer.write(orjson.dumps(as_dict(result), option=orjson.OPT_INDENT_2) + b"\n")


@cli.command("nginx-conf", context_settings=CONTEXT)
@click.argument(
    "out", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--from",
    "origin",
    metavar="s3://BUCKET/PREFIX",
    callback=_checked(Destination.parse),
    help="Serve the tree synced to this bucket instead of OUT's (nginx as a caching proxy).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="With --from: the bucket's HTTP endpoint, as http://HOST:PORT, for nginx and for "
    "reading the bucket's manifest [default: the AWS environment's, as for `convsum sync`].",
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    callback=_checked(check_listen),
    help="nginx listen address: PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH.",
)
@click.option(
    "--user",
    callback=_checked(check_user),
    help="Worker user, for an nginx started as root (emits `user NAME;`).",
)
@click.option(
    "--max-limit",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_MAX_LIMIT,
    show_default=True,
    help="The greatest `limit` a list request may ask for.",
)
@click.option(
    "--cache-control",
    "api_cache_control",
    metavar="VALUE",
    default=DEFAULT_API_CACHE_CONTROL,
    show_default=True,
    callback=_checked(check_cache_control),
    help="Cache-Control of every answer of the API (they depend on the caller's token).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    metavar="CIDR",
    multiple=True,
    callback=lambda ctx, param, cidrs: tuple(
        _checked(check_trusted_proxy)(ctx, param, c) for c in cidrs
    ),
    help="A proxy whose X-Forwarded-Proto and X-Forwarded-Host make the Link header's URLs; "
    "repeatable [default: none, the request's own scheme and Host].",
)
@click.option(
    "--owner-in-path",
    is_flag=True,
    help="Serve the unauthenticated URL space /{owner}/v2/conversations/... instead, for an "
    "internal listener behind an authenticating proxy, or tests (page-aligned requests only).",
)
def nginx_conf(
    out: Path | None,
    origin: Destination | None,
    endpoint: str | None,
    listen: str,
    user: str | None,
    max_limit: int,
    api_cache_control: str,
    trusted_proxies: tuple[str, ...],
    owner_in_path: bool,
) -> None:
    """Print an nginx configuration that serves the tree published in OUT as the read API.

    The API is the gateway's: /v2/conversations/{participant}[/mt|/mo|/summary] with a Bearer
    token from OUT/tokens (`convsum tokens`), any start, limit and order, and /v2/health. The
    page size is read from the published manifest. With --from, the tree that `convsum sync`
    sent to a bucket is served instead, with the same answers (OUT then only holds the token
    store): nginx reads each object through a cache, and the bucket must let nginx read
    PREFIX/* without credentials. Start nginx with `nginx -p PREFIX -c FILE`; its pid, logs,
    temporary files and cache go under PREFIX.
    """
    if out is None and origin is None:
        raise click.UsageError("give OUT, or --from s3://BUCKET/PREFIX")
    if out is None and not owner_in_path:
        raise click.UsageError(
            "--from: give OUT too, whose token store (OUT/tokens) authenticates the callers; "
            "or --owner-in-path, for the unauthenticated owner-prefixed URL space"
        )
    if endpoint is not None and origin is None:
        raise click.UsageError("--endpoint goes with --from")
    ctx = click.get_current_context()
    api_options = ("max_limit", "api_cache_control", "trusted_proxies")
    given = [
        name
        for name in api_options
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given and owner_in_path:
        options = ", ".join(f"--{name.removeprefix('api_').replace('_', '-')}" for name in given)
        msg = f"{options}: only for the authenticated API (without --owner-in-path)"
        raise click.UsageError(msg)
    from convsum.publish.manifest import MANIFEST
    from convsum.tokens import OWNERS, TOKENS

    if origin is not None:
        source, layout = _bucket_origin(origin, endpoint)
    else:
        assert out is not None
        source, layout = out.resolve() / CURRENT / API, _published_layout(out)
    api = None
    if not owner_in_path:
        assert out is not None
        api = TokenApi(
            tokens=out.resolve() / TOKENS / OWNERS,
            manifest=out.resolve() / CURRENT / MANIFEST,
            max_limit=max_limit,
            cache_control=api_cache_control,
            trusted_proxies=trusted_proxies,
        )
    conf = render(source, listen, layout["page_size"], layout["orders"], user, api=api)
    # A path that is not UTF-8 reaches nginx as the same bytes.
    sys.stdout.buffer.write(conf.encode("utf-8", "surrogateescape"))


def _published_layout(out: Path) -> dict[str, Any]:
    from convsum.publish.manifest import MANIFEST

    manifest_path = out / CURRENT / MANIFEST
    try:
        layout: dict[str, Any] = orjson.loads(manifest_path.read_bytes())["layout"]
    except (OSError, orjson.JSONDecodeError, KeyError) as exc:
        msg = f"{manifest_path}: no published manifest; run `convsum run --out {out}` first"
        raise click.ClickException(msg) from exc
    return layout


def _bucket_origin(origin: Destination, endpoint: str | None) -> tuple[Any, dict[str, Any]]:
    """Return the bucket as nginx reaches it, and the layout of the tree synced to it (read
    from `endpoint` when given, else from the AWS environment's)."""
    from convsum.publish.bucket import Bucket, redact
    from convsum.publish.nginx import BucketOrigin
    from convsum.publish.sync import read_layout

    try:
        if endpoint is not None:  # checked before any request
            BucketOrigin.of(endpoint, origin.bucket, origin.prefix)
        bucket = Bucket(origin, 1, endpoint)
        served = BucketOrigin.of(endpoint or bucket.endpoint, origin.bucket, origin.prefix)
        return served, read_layout(bucket)
    except ConfigError as exc:
        raise click.BadParameter(redact(str(exc)), param_hint="--endpoint/--from") from exc


@cli.command(context_settings=CONTEXT)
@click.option(
    "--messages", "count", type=click.IntRange(min=1), required=True, help="How many messages."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Target directory.",
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Random seed; same seed, same files."
)
@click.option(
    "--owners", type=click.IntRange(min=1), default=3, show_default=True, help="Accounts."
)
def generate(count: int, out: Path, seed: int, owners: int) -> None:
    """Write realistic message and status logs as Parquet under OUT/messages and OUT/statuses.

    Zipf-distributed customers, a few very hot senders per owner, mt status chains, late and
    out-of-order statuses, messages without status, orphans and duplicates; deterministic per
    seed, written in chunks of a million messages.
    """
    from convsum.generate import generate as write_logs

    result = write_logs(out, count, seed=seed, owners=owners)
    click.echo(
        f"convsum: wrote {result.messages} messages and {result.statuses} statuses "
        f"({result.files} files) under {out}",
        err=True,
    )


class _Duration(click.ParamType):  # type: ignore[type-arg]
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


def _check_tz(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Accept an IANA time zone name that DuckDB knows (its own ICU data computes the days)."""
    import duckdb

    if value is None:
        return None
    value = _utf8(value, "time zone")
    query = "SELECT count(*) FROM pg_timezone_names() WHERE name = $n"
    if duckdb.execute(query, {"n": value}).fetchall() == [(0,)]:
        msg = f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Stockholm"
        raise click.BadParameter(msg)
    return value


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
        callback=_checked(check_memory_limit),
        help="The most a query may write to its temporary directory (under TMPDIR) when it "
        "needs more than --memory-limit.",
    )(with_budget)
    return click.option(
        "--memory-limit",
        metavar="SIZE",
        callback=_checked(check_memory_limit),
        help="Query memory budget, as 4GB or 512MiB [default: half the memory, at most 3GiB].",
    )(wrapped)


def _output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that prints rows: -F/--format, -o/--output and --raw."""
    from convsum.reporting.output import FORMATS

    command = _budget_options(command)
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
        help="Write the rows to FILE instead of standard output.",
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
    if output is None or str(output) == "-":
        return output
    target = output.resolve()
    roots = [out.resolve(), *(d for d in target.parents if (d / MARK).exists())]
    inside = next((root for root in roots if target.is_relative_to(root)), None)
    if inside is not None:
        msg = f"{output} is inside the output root {inside}: write it elsewhere"
        raise click.BadParameter(msg, param_hint="-o/--output")
    return output


def _emit(table: Any, fmt: str | None, output: Path | None, raw: bool, notes: list[str]) -> None:
    """Write the rows to `output` or standard output; say what was written on standard error."""
    from convsum.reporting.output import FORMATS, Display, write

    to_terminal = output is None and sys.stdout.isatty()
    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output else ""
        fmt = suffix if suffix in FORMATS else "table" if to_terminal else "csv"
    if fmt == "parquet" and to_terminal:
        raise QueryError("parquet is binary: write it with -o FILE or into a pipe")
    width = shutil.get_terminal_size().columns if to_terminal else None
    display = Display(width=width, terminal=to_terminal, raw=raw)
    try:
        if output is None:
            write(table, fmt, sys.stdout.buffer, display)
            sys.stdout.flush()
        else:
            with output.open("wb") as handle:
                write(table, fmt, handle, display)
    except BrokenPipeError:
        # The reader stopped early (`| head`): end quietly, as a process killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(128 + signal.SIGPIPE) from None
    except OSError as exc:
        raise click.ClickException(f"{output or 'stdout'}: cannot write ({exc.strerror})") from exc
    rows = f"{table.num_rows} row" + ("" if table.num_rows == 1 else "s")
    click.echo("convsum: " + "; ".join([rows, *notes]), err=True)


class _QueryCommand(_Command):
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
    output = _outside_output_roots(output, out)

    with open_tables(out, budget) as tables:
        rows, run_id = tables.run(text), tables.run_id
    _emit(rows, fmt, output, raw, [f"run {run_id}", "timestamps UTC"])


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


@cli.command(context_settings=CONTEXT)
@click.argument("name", required=False, metavar="NAME")
@click.argument(
    "out", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--list", "list_reports", is_flag=True, help="List the reports, one line each.")
@click.option("--show-sql", is_flag=True, help="Print the report's SQL instead of running it.")
@_scope_options
@click.option("--by", type=click.Choice(("day", "owner", "operator")), help="latency: group by.")
@click.option("--top", type=click.IntRange(min=1), help="failures, top: how many [default: 10].")
@click.option(
    "--min-volume",
    type=click.IntRange(min=1),
    help="operators: least messages per operator [default: 100].",
)
@click.option(
    "--older-than", type=_Duration(), help="stuck: least age, as 48h or 2d [default: 48h]."
)
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    help="stuck: the time ages are measured at, UTC [default: now].",
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
    budget: Budget,
    **options: Any,
) -> None:
    """Run the named report NAME over the tables OUT serves (see --list).

    Days are local dates of a message's creation in --tz; --from and --to select the half-open
    range of local dates [FROM, TO). Options that a report does not take are refused.
    """
    from convsum.reporting.query import open_tables
    from convsum.reporting.reports import REPORTS, run_report

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
    if show_sql:
        click.echo(chosen.sql(options["by"]), nl=False)
        return
    if out is None:
        raise click.UsageError("give the output root OUT to report on")
    output = _outside_output_roots(output, out)
    values = _report_values(options)

    with open_tables(out, budget) as tables:
        rows, run_id = run_report(tables, chosen, values, options["by"]), tables.run_id
    notes = [f"report {name}", f"run {run_id}"]
    if "tz" in chosen.options:
        notes.append(f"time zone {values['tz']}")
    if "as_of" in chosen.options:
        notes.append(f"as of {values['as_of']}")
    _emit(rows, fmt, output, raw, notes)


def _report_values(options: dict[str, Any]) -> dict[str, Any]:
    """Return the reports' parameter values from the options given (defaults where not)."""
    start, end = options.get("from_"), options.get("to")
    if start and end and start >= end:
        raise click.BadParameter("--from must be before --to", param_hint="--from")
    as_of = options.get("as_of") or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    return {
        "tz": options.get("tz") or "UTC",
        "from": start and start.date(),
        "to": end and end.date(),
        "owners": list(options.get("owners") or ()),
        "direction": options.get("direction"),
        "top": options.get("top") or 10,
        "min_volume": options.get("min_volume") or 100,
        "older_than_s": options.get("older_than") or 48 * 3600,
        "as_of": as_of.isoformat() + "Z",
    }


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write.",
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

    Charts of daily volume by direction, delivery outcome by day, latency percentiles by day,
    the top failure codes and the operators, the quality counts, and the run's facts. The same
    data and options give the same bytes.
    """
    from convsum.reporting.html import render_html
    from convsum.reporting.query import open_tables
    from convsum.reporting.reports import html_data

    _outside_output_roots(output, out)
    values = _report_values(options)

    with open_tables(out, budget) as tables:
        facts, data = html_data(tables, values)
    try:
        output.write_bytes(render_html(facts, data))
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write ({exc.strerror})") from exc
    click.echo(
        f"convsum: wrote {output}; run {facts['run_id']}; time zone {values['tz']}", err=True
    )


@cli.group(context_settings=CONTEXT)
def tokens() -> None:
    """Manage the Bearer tokens that the served API accepts, stored in OUT/tokens.

    Only each token's SHA-256 is stored. The server reads OUT/tokens/owners/ on every request,
    so a change reaches a running server without a reload. No run, rebuild or sync touches the
    store.
    """


_tokens_out = click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _check_owner(_ctx: click.Context, _param: click.Parameter, owner: str) -> str:
    from convsum.errors import TokenError
    from convsum.tokens import check_owner

    try:
        return check_owner(owner)
    except TokenError as exc:
        raise click.BadParameter(str(exc)) from exc


@tokens.command("import", context_settings=CONTEXT)
@_tokens_out
def tokens_import(out: Path) -> None:
    """Store the tokens of OWNER<TAB>TOKEN lines read from standard input.

    The gateway's existing API keys keep working. Blank lines and lines starting with # are
    skipped; a token already stored for the same owner is skipped. A malformed line, or a token
    stored for another owner, is an error naming the line, and nothing is imported.
    """
    from convsum.tokens import import_tokens

    lines = (raw.decode("utf-8", "surrogateescape") for raw in sys.stdin.buffer)
    added = import_tokens(out, lines)
    click.echo(f"convsum: imported {added} token{'' if added == 1 else 's'}", err=True)


@tokens.command("add", context_settings=CONTEXT)
@_tokens_out
@click.argument("owner", callback=_check_owner)
def tokens_add(out: Path, owner: str) -> None:
    """Make a new token for OWNER and print it on standard output, this once only.

    Only its hash is stored: a token that is lost cannot be shown again; revoke it and add
    another.
    """
    from convsum.tokens import add_token

    info, token = add_token(out, owner)
    click.echo(token)
    click.echo(f"convsum: added {info.id} for owner {_shown(info.owner)}", err=True)


@tokens.command("list", context_settings=CONTEXT)
@_tokens_out
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="One line per token (id, owner, created, revoked TIME), or a JSON array.",
)
def tokens_list(out: Path, fmt: str) -> None:
    """List the stored tokens, revoked ones included, oldest first (never a token or its hash)."""
    from dataclasses import asdict

    from convsum.tokens import list_tokens

    infos = list_tokens(out)
    if fmt == "json":
        document = [asdict(info) for info in infos]
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return
    for info in infos:
        revoked = f"\trevoked {info.revoked}" if info.revoked else ""
        click.echo(f"{info.id}\t{_shown(info.owner)}\t{info.created}{revoked}")


@tokens.command("revoke", context_settings=CONTEXT)
@_tokens_out
@click.argument("token_id", metavar="ID")
def tokens_revoke(out: Path, token_id: str) -> None:
    """Revoke the token ID (see `convsum tokens list`); the server refuses it from then on."""
    from convsum.tokens import revoke_token

    info = revoke_token(out, token_id)
    click.echo(f"convsum: {info.id} of owner {_shown(info.owner)} revoked {info.revoked}", err=True)


def _shown(owner: str) -> str:
    """Return an owner as printed on one line: as it is, or quoted when it holds a control
    character or is not the same once stripped."""
    plain = owner.isprintable() and owner == owner.strip()
    return owner if plain else orjson.dumps(owner).decode()


def _add_version(command: click.Command) -> None:
    """Give `command`, and every command under it, `-V`/`--version`: one rule, not a decorator
    that each new command must remember."""
    click.version_option(__version__, "-V", "--version", prog_name="convsum")(command)
    for sub in getattr(command, "commands", {}).values():
        _add_version(sub)


_add_version(cli)
