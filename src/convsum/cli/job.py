"""The job's commands: run, sync, status, nginx-conf (serving), generate (test logs)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from convsum.cli.base import (
    CONFIG_TABLES,
    CONTEXT,
    Duration,
    UsageFromConfig,
    checked,
    checked_later,
    cli,
    job_log,
    job_record,
)
from convsum.config import (
    DEFAULT_API_CACHE_CONTROL,
    DEFAULT_CACHE_CONTROL,
    DEFAULT_MAX_LIMIT,
    ENGINES,
    LOG_FORMATS,
    ONLY,
    build_config,
    check_memory_limit,
    check_metrics_file,
    check_page_size,
    check_spark_master,
    load_toml,
)
from convsum.errors import ConfigError
from convsum.extras import EXTRAS, require

if TYPE_CHECKING:
    from convsum.publish.bucket import Destination
    from convsum.results import RunReport, SyncReport


def _bucket(url: str) -> Destination:
    """Parse a bucket's URL, once the extra that reaches buckets is found installed.

    The publishers are imported where a command uses them, so that `--help`, completion and the
    other commands do not pay for them.
    """
    from convsum.publish.bucket import Destination

    destination = Destination.parse(url)
    require("s3")
    return destination


def _installed(engine: str) -> str:
    """Return the engine's name if what it needs is installed; else exit 2 saying what to do."""
    if engine in EXTRAS:
        require(engine)
    if engine == "spark":
        from convsum.engines.spark_session import java_problem

        problem = java_problem()
        if problem is not None:
            raise ConfigError(problem)
    return engine


_metrics_option = click.option(
    "--metrics-file",
    metavar="PATH.prom",
    callback=checked(check_metrics_file),
    help="Write the job's metrics here when it ends, published or failed, in Prometheus' text "
    "format, for node_exporter's textfile collector.",
)

_cache_control_option = click.option(
    "--cache-control",
    metavar="VALUE",
    callback=checked_later("convsum.publish.bucket:check_cache_control"),
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
    callback=checked(_installed),
    help="Computation engine [default: duckdb].",
)
@click.option(
    "--spark-master",
    metavar="URL",
    callback=checked(check_spark_master),
    help="With --engine spark: the cluster, as spark://HOST:7077 or yarn [default: "
    "spark-submit's, else local[*]].",
)
@click.option(
    "--page-size",
    type=int,
    callback=checked(check_page_size),
    help="Messages per page; must divide 10000 [default: 50].",
)
@click.option(
    "--desc-pages/--no-desc-pages",
    default=None,
    help="Also write descending pages, to serve order=DESC [default: off].",
)
@click.option(
    "--gzip/--no-gzip",
    default=None,
    help="Store the served files gzip-compressed, as PATH.gz: nginx and a bucket send every "
    "client the same bytes once decoded [default: off].",
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
    callback=checked(check_memory_limit),
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
    callback=checked(lambda url: url and str(_bucket(url))),
    help="After publishing, sync the tree to this bucket (see `convsum sync`).",
)
@_cache_control_option
@_metrics_option
@click.option(
    "--max-input-age",
    type=Duration(),
    help="Fail (exit 1, nothing published) when the newest input row is older than this, as "
    "26h or 2d: the logs have stopped arriving [default: no limit].",
)
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

    tables = click.get_current_context().meta.get(CONFIG_TABLES, {})
    try:
        config = build_config({**options, **tables})
    except ConfigError as exc:
        raise UsageFromConfig(str(exc)) from exc
    record = job_record("run", config.out, config.metrics_file)
    with job_log(config.log_format) as log:
        result = record.result = run_job(config, log, full=full)
        out = Path(config.out)
        log.event(
            "published",
            mode=result.mode,
            seconds=round(log.elapsed(), 3),
            **{f"{role}_read": rows for role, rows in result.rows_read.items()},
            files_written=result.files.files_written,
            files_unchanged=result.files.files_unchanged,
            files_removed=result.files.files_removed,
            owners=result.data.owners,
            participants=result.data.participants,
            api=str(out / "current" / "api"),
        )
        if config.sync_to:
            from convsum.publish.bucket import Destination
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
    ctx.meta[CONFIG_TABLES] = {k: v for k, v in values.items() if k not in options}


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("destination", metavar="s3://BUCKET/PREFIX", callback=checked(_bucket))
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
@_metrics_option
@click.option("--report", is_flag=True, help="Print the sync report (JSON) on stdout.")
def sync(
    out: Path,
    destination: Destination,
    cache_control: str | None,
    log_format: str,
    verify: bool,
    metrics_file: str | None,
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

    record = job_record("sync", out, metrics_file, str(destination))
    with job_log(log_format) as log:
        cache_control = cache_control or DEFAULT_CACHE_CONTROL
        result = record.result = sync_tree(out, destination, cache_control, log, verify=verify)
    if report:
        _print_report(result)


def _print_report(result: RunReport | SyncReport) -> None:
    """Write a run's or a sync's report on stdout, as JSON (`--report`)."""
    import orjson

    from convsum.results import as_dict

    sys.stdout.buffer.write(orjson.dumps(as_dict(result), option=orjson.OPT_INDENT_2) + b"\n")


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--max-input-age",
    type=Duration(),
    help="Unhealthy when the served data's newest input row is older than this, as 26h or 2d.",
)
def status(out: Path, max_input_age: int | None) -> None:
    """Say whether the output root OUT is healthy: the run it serves and its age, the newest
    input, the last run and the last sync (from OUT/history.jsonl), and the work pending (an
    update left unfinished, or a run under way).

    Exits 0 when healthy; 1 when nothing is published, the last run or sync failed, the
    bucket holds another run than the one served, an update was left unfinished (a run killed
    while it changed the served tree), or the data is older than --max-input-age: a check for a
    monitoring system.
    """
    from datetime import UTC, datetime

    from convsum.history import Ended, status
    from convsum.reporting.human import duration

    now = datetime.now(UTC)
    found = status(out, max_input_age, now)

    def when(iso: str) -> str:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        ago = duration((now - moment).total_seconds())
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago} ago)"

    def ending(ended: Ended) -> str:
        if ended.exit_code == 0:
            return f"{ended.run_id}, ended {when(ended.finished)}"
        stage = f" in its {ended.stage} stage" if ended.stage else ""
        return f"{ended.run_id} failed {when(ended.finished)}{stage}, exit {ended.exit_code}: " + (
            ended.error or "no message"
        )

    served = found.served
    lines = [("served", "nothing" if served is None else
              f"run {served['run_id']}, started {when(served['started_at'])}")]  # fmt: skip
    if served is not None:
        newest = served.get("newest_input")
        lines.append(("newest input", when(newest) if newest else "none"))
    if found.last_run is not None:
        lines.append(("last run", ending(found.last_run)))
    if found.last_success is not None and found.last_success is not found.last_run:
        lines.append(("last success", ending(found.last_success)))
    if found.last_sync is not None:
        lines.append(("last sync", f"to {found.last_sync.destination}: {ending(found.last_sync)}"))
    if found.pending is None:
        lines.append(("pending", "a run is under way (it holds the state store)"))
    elif found.pending:
        lines.append(("pending", f"an unfinished update: {found.pending:,} conversations to "
                      "rewrite, which the next run does"))  # fmt: skip
    elif served is not None:
        lines.append(("pending", "nothing"))
    verdict = "healthy" if found.healthy else "unhealthy: " + "; ".join(found.problems)
    lines.append(("status", verdict))
    width = max(len(key) for key, _ in lines)
    click.echo("\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in lines))
    if not found.healthy:
        raise click.exceptions.Exit(1)


@cli.command("nginx-conf", context_settings=CONTEXT)
@click.argument(
    "out", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--from",
    "origin",
    metavar="s3://BUCKET/PREFIX",
    callback=checked(_bucket),
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
    callback=checked_later("convsum.publish.nginx:check_listen"),
    help="nginx listen address: PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH.",
)
@click.option(
    "--user",
    callback=checked_later("convsum.publish.nginx:check_user"),
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
    callback=checked_later("convsum.publish.bucket:check_cache_control"),
    help="Cache-Control of every answer of the API (they depend on the caller's token).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    metavar="CIDR",
    multiple=True,
    callback=lambda ctx, param, cidrs: tuple(
        checked_later("convsum.publish.nginx:check_trusted_proxy")(ctx, param, c) for c in cidrs
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
    from convsum.publish.nginx import TokenApi, render
    from convsum.publish.tree import API, CURRENT
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
    import orjson

    from convsum.publish.manifest import MANIFEST
    from convsum.publish.tree import CURRENT

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
