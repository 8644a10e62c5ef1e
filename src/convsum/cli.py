"""The command line: parse, validate, call one core function, map errors to exit codes."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from convsum import __version__
from convsum.config import (
    ENGINES,
    LOG_FORMATS,
    ONLY,
    build_config,
    check_memory_limit,
    check_page_size,
    load_toml,
)
from convsum.errors import ConfigError, ConvsumError, RunLockedError
from convsum.interrupts import Received, interruptible
from convsum.log import RunLog
from convsum.publish.nginx import check_listen, check_user, render

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the output root; try again later


class _UsageFromConfig(click.UsageError):
    """A configuration problem is a usage problem: exit code 2."""


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convsum")
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


@cli.command(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convsum")
@click.option("--messages", metavar="PATH", help="Message log: Parquet file, directory or glob.")
@click.option("--statuses", metavar="PATH", help="Status log: Parquet file, directory or glob.")
@click.option("--out", metavar="DIR", help="Output root (the served tree is DIR/current/api).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file with the same keys as these options; options given here win.",
)
@click.option("--engine", type=click.Choice(ENGINES), help="Computation engine [default: duckdb].")
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
    help="Engine memory cap, as 4GB or 512MiB [default: engine's].",
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
@click.option("--report", is_flag=True, help="Print the run report (JSON) on stdout.")
def run(config_file: Path | None, report: bool, full: bool, **options: Any) -> None:
    """Read the logs, compute every conversation and publish the static API tree.

    A run adds only the input files it has not read yet to the published tree, unless it must
    rebuild (see --full and --rebuild). Bad input (a missing file or column, a wrong type, a null
    id, an unknown direction, a corrupt file) exits with code 1 and publishes nothing; misuse of
    the command line exits with 2; a second run on an output root that a run is writing exits at
    once with 75.
    """
    from convsum.run import run_job

    try:
        file_values = load_toml(config_file) if config_file else {}
        config = build_config(file_values, options)
    except ConfigError as exc:
        raise _UsageFromConfig(str(exc)) from exc
    with RunLog(config.log_format) as log:
        say_error = partial(_say_error, log)
        with interruptible(lambda got: say_error(_interrupted(got), got.exit_code)) as received:
            try:
                result = run_job(config, log, full=full)
            except BaseException as exc:
                if received.signum is not None:  # whatever the engine raised on its way out
                    code, message = received.exit_code, _interrupted(received)
                elif isinstance(exc, ConvsumError):
                    code = EXIT_LOCKED if isinstance(exc, RunLockedError) else 1
                    message = str(exc)
                else:
                    raise
                say_error(message, code)
                raise click.exceptions.Exit(code) from exc
        out = Path(config.out)
        log.event(
            "published",
            mode=result["mode"],
            files_written=result["files_written"],
            files_unchanged=result["files_unchanged"],
            files_removed=result["files_removed"],
            owners=result["owners"],
            participants=result["participants"],
            api=str(out / "current" / "api"),
        )
    if config.log_format == "text":
        click.echo(
            "convsum: serve it with: mkdir -p nginx && convsum nginx-conf "
            f"{shlex.quote(str(out))} --listen 127.0.0.1:8080 > nginx/nginx.conf && "
            'nginx -p "$PWD/nginx" -c "$PWD/nginx/nginx.conf"',
            err=True,
        )
    if report:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


def _say_error(log: RunLog, message: str, code: int) -> None:
    """Report a failed run: one `Error:` line, or an `error` event in the JSON log."""
    if log.fmt == "json":
        log.event("error", message=message, exit_code=code)
    log.close()
    if log.fmt != "json":
        click.echo(f"Error: {message}", err=True)


def _interrupted(received: Received) -> str:
    return (
        f"interrupted by {received.name}; nothing more was published, and the next run "
        "finishes the job"
    )


@cli.command("nginx-conf", context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convsum")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
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
def nginx_conf(out: Path, listen: str, user: str | None) -> None:
    """Print an nginx configuration that serves the tree published in OUT as the read API.

    The page size and the orders served are read from the published manifest. Start nginx with
    `nginx -p PREFIX -c FILE`; its pid, logs and temporary files go under PREFIX.
    """
    from convsum.publish.manifest import MANIFEST
    from convsum.publish.tree import API, CURRENT

    manifest_path = out / CURRENT / MANIFEST
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
        layout = manifest["layout"]
    except (OSError, orjson.JSONDecodeError, KeyError) as exc:
        msg = f"{manifest_path}: no published manifest; run `convsum run --out {out}` first"
        raise click.ClickException(msg) from exc
    api_root = out.resolve() / CURRENT / API
    conf = render(api_root, listen, layout["page_size"], layout["orders"], user)
    # A path that is not UTF-8 reaches nginx as the same bytes.
    sys.stdout.buffer.write(conf.encode("utf-8", "surrogateescape"))


@cli.command(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convsum")
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

    try:
        result = write_logs(out, count, seed=seed, owners=owners)
    except ConvsumError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"convsum: wrote {result.messages} messages and {result.statuses} statuses "
        f"({result.files} files) under {out}",
        err=True,
    )


@cli.command(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convsum")
@click.option(
    "--messages",
    "count",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Data set size.",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data set directory, reused when it holds this size [default: bench_data/N].",
)
@click.option(
    "--engine",
    "engines",
    type=click.Choice(ENGINES),
    multiple=True,
    help="Engines to measure (repeatable) [default: all].",
)
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads [default: all cores].")
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench_data/work"),
    show_default=True,
    help="Scratch directory for outputs.",
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs of each; medians.",
)
@click.option(
    "--nightly/--no-nightly",
    default=True,
    show_default=True,
    help="Also measure a nightly incremental run (1 % new messages and their statuses).",
)
def bench(
    count: int,
    data: Path | None,
    engines: tuple[str, ...],
    threads: int | None,
    work: Path,
    runs: int,
    nightly: bool,
) -> None:
    """Measure each engine against the bare-query and bare-writer floors; print a table.

    Per engine, a summaries-only run and a full run; each run, and each floor, is one process
    whose wall time, CPU time and peak memory are measured; every figure is a median of --runs.
    With --nightly, per engine also a full run over all but the last 1 % of messages and the
    incremental run that adds them with every status logged since.
    """
    from convsum.bench import format_table, run_bench, run_nightly

    directory = data or Path("bench_data") / str(count)
    say = lambda label: click.echo(f"convsum bench: {label}", err=True)  # noqa: E731
    try:
        results = run_bench(
            directory, count, list(engines or ENGINES), work, threads, runs=runs, progress=say
        )
        if nightly:
            for engine in engines or ENGINES:
                results += run_nightly(directory, engine, work, threads, runs=runs, progress=say)
    except ConvsumError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(results, count))
