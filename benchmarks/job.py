"""The job's benchmark (`make bench`, or `python -m benchmarks.job` from the repository root):
the job against two floors, measured as whole processes.

Floors, measured in the same session on the same data:
1. the bare query: one hand-written DuckDB statement computing only
   (owner, participant, direction, code, messages, sms), arg_max for the latest status;
2. the bare writer: a minimal loop writing as many files, with as many bytes, as the full run;
   and the same files written by two threads, taking turns with it, to decide whether two
   writers would beat one on this disk (the ratio of each pair, and their median).
And the nightly case: the data set split at its last 1 % of messages; a full run over the rest,
then an incremental run that adds the last 1 % of messages and every status logged since.
Each command runs as its own process; wall time, CPU time (user + system) and peak memory (the
process's maximum resident set) come from the operating system's accounting of that process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from convsum.config import ENGINES
from convsum.publish.tree import make_marked, remove_made
from convsum.sql import literal

# This file, run as a script: the helper processes of `_helper` (the floors, the nightly split).
HELPERS = Path(__file__).resolve()
WRITER, WRITERS = "bare writer", "bare writer, two threads"
FULL = ("full", "full gzip")  # the labels' ends of a full run (as served, and gzip)
GZIP_FULL = "full gzip"
STAGES = ("read", "derive", "pages", "summaries", "tables", "swap", "index")
NIGHTLY_SHARE = 0.01  # the share of messages that arrives in one night

# Split a data set into what had arrived before its last night and what arrived in that night:
# messages by their creation time, statuses by theirs (late statuses of older messages included).
_NIGHT_SPLIT = """
COPY (SELECT * FROM read_parquet($source) WHERE (created >= $cutoff) = $night)
TO {target} (FORMAT parquet)
"""

BARE_QUERY = """
WITH latest AS (
    SELECT messageId AS id, arg_max(code, created) AS code
    FROM read_parquet($statuses) GROUP BY messageId
), m AS (
    SELECT m.owner, m.sender, m.recipient, m.direction, m.segments, l.code
    FROM read_parquet($messages) AS m LEFT JOIN latest AS l USING (id)
)
SELECT owner, participant, direction, code, count(*) AS messages, sum(segments) AS sms
FROM (
    SELECT owner, sender AS participant, direction, code, segments FROM m
    UNION ALL
    SELECT owner, recipient, direction, code, segments FROM m WHERE recipient <> sender
)
GROUP BY ALL
"""


@dataclass
class Measurement:
    """One process: what ran, and what it cost."""

    label: str
    wall: float
    cpu: float
    peak_mib: float
    stages: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    disk: float = 0.0  # bytes the output root takes on disk (du) after a full run


def _report(stdout: bytes) -> dict[str, Any]:
    try:
        value = json.loads(stdout)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def measured(label: str, command: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Run `command`; return its wall time, and CPU time and peak memory from wait4(2).

    The disk is flushed first, so that no command pays for the writes and deletions of the one
    before it (removing a tree of many files leaves seconds of work behind the unlinks).
    """
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    if process.returncode:
        msg = f"{label} failed with exit code {process.returncode}: {' '.join(command)}"
        raise RuntimeError(msg)
    report = _report(stdout)
    return Measurement(
        label,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        stages=report.get("stages", {}),
        report=report,
    )


def ensure_data(directory: Path, messages: int, seed: int) -> Path:
    """Generate the data set unless `directory` already holds this size and seed.

    The generator runs as its own process: a measured command's peak memory, as the kernel
    reports it, starts from the memory of the process that started it, so that one stays small.
    """
    marker = directory / "generated.json"
    wanted = {"messages": messages, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return directory
    command = [sys.executable, "-m", "convsum", "generate", "--messages", str(messages)]
    command += ["--out", str(directory), "--seed", str(seed)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(wanted))
    return directory


def bare_query(messages: str, statuses: str, threads: int | None) -> None:
    """Run the bare query floor to completion (in this process)."""
    import duckdb

    config: dict[str, Any] = {"threads": threads} if threads else {}
    con = duckdb.connect(config=config)
    con.execute(
        f"CREATE TABLE result AS {BARE_QUERY}", {"messages": messages, "statuses": statuses}
    )
    con.close()


def bare_writer(directory: Path, files: int, total_bytes: int) -> None:
    """Write `files` files holding `total_bytes` bytes in all, 1,000 to a directory."""
    body = b"x" * (total_bytes // max(files, 1))
    make_marked(directory)
    for start in range(0, files, 1_000):
        sub = directory / f"d{start // 1_000}"
        sub.mkdir(parents=True)
        for n in range(start, min(start + 1_000, files)):
            with (sub / f"{n}.json").open("wb") as handle:
                handle.write(body)


def bare_writers(directory: Path, files: int, total_bytes: int, threads: int) -> None:
    """`bare_writer`'s files, the directories of 1,000 shared out among `threads` threads."""
    from concurrent.futures import ThreadPoolExecutor

    body = b"x" * (total_bytes // max(files, 1))
    make_marked(directory)

    def write(start: int) -> None:
        sub = directory / f"d{start // 1_000}"
        sub.mkdir(parents=True)
        for n in range(start, min(start + 1_000, files)):
            with (sub / f"{n}.json").open("wb") as handle:
                handle.write(body)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(0, files, 1_000)))


def disk_usage(path: Path) -> float:
    """Return the bytes `path` takes on disk, as `du` counts them."""
    done = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True)
    return float(done.stdout.split()[0]) * 1024


def median_of(runs: list[Measurement]) -> Measurement:
    """Return one measurement whose every figure is the median of `runs`'s."""
    stages = {k: statistics.median(r.stages[k] for r in runs) for k in runs[0].stages}
    return Measurement(
        runs[0].label,
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        statistics.median(r.peak_mib for r in runs),
        stages=stages,
        report=runs[0].report,
        disk=statistics.median(r.disk for r in runs),
    )


class Samples:
    """A benchmark's measurements, taken in turns (every command once, then again), so that a
    slow spell of the machine falls on every command alike; each figure is the median of a
    command's turns."""

    def __init__(self, runs: int, progress: Callable[[str], None]) -> None:
        self.runs, self._progress = runs, progress
        self._taken: dict[str, list[Measurement]] = {}

    def turns(self) -> Iterator[int]:
        return iter(range(self.runs))

    def say(self, turn: int, what: str) -> None:
        self._progress(f"{what} ({turn + 1}/{self.runs})")

    def take(
        self, turn: int, label: str, command: list[str], env: dict[str, str] | None = None
    ) -> Measurement:
        """Measure `command` once, as this turn's sample of `label`."""
        self.say(turn, label)
        sample = measured(label, command, env)
        self._taken.setdefault(label, []).append(sample)
        return sample

    def each(self, label: str) -> list[Measurement]:
        """Every turn's sample of `label`, in order."""
        return self._taken.get(label, [])

    def medians(self) -> list[Measurement]:
        return [median_of(samples) for samples in self._taken.values()]


def run_bench(
    data: Path,
    messages: int,
    engines: list[str],
    work: Path,
    threads: int | None = None,
    seed: int = 1,
    runs: int = 1,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[Measurement]:
    """Measure every engine's summaries-only and full runs and the two floors, `runs` times each
    (see Samples)."""
    ensure_data(data, messages, seed)
    convsum = [sys.executable, "-m", "convsum"]
    inputs, extra = _run_options(data, threads)
    here = [sys.executable, str(HELPERS)]
    query = [*here, "query", str(data / "messages"), str(data / "statuses"), str(threads or 0)]
    samples = Samples(runs, progress)
    for turn in samples.turns():
        sizes: dict[str, Any] = {}  # of the first engine's full run: the writer floor's
        for label, command in _commands(convsum, inputs, extra, engines, work):
            sample = samples.take(turn, label, command)
            if label.endswith(FULL):
                sizes = sizes or sample.report
                sample.disk = disk_usage(work / "out")
            remove_made(work / "out")
        if "spark" in engines:  # shown apart: the JVM's start is part of every Spark run
            samples.take(turn, "spark startup", [*here, "spark-startup"])
        samples.take(turn, "bare query", query)
        files, size = sizes["files_written"], sizes["bytes_written"]
        # One writer and two, first one then the other in turn: a pair of each turn.
        writers = [(WRITER, "1"), (WRITERS, "2")]
        for label, threads_ in writers if turn % 2 == 0 else writers[::-1]:
            floor = [*here, "writer", str(work / "floor"), str(files), str(size), threads_]
            samples.take(turn, label, floor)
            remove_made(work / "floor")
    results = samples.medians()
    pairs = zip(samples.each(WRITERS), samples.each(WRITER), strict=True)
    for m in results:
        if m.label == WRITERS:
            m.report = {"pair_ratios": [two.wall / one.wall for two, one in pairs]}
    return results


def nightly_inputs(data: Path, work: Path) -> tuple[Path, dict[str, Path]]:
    """Split `data` at its last night; return the input root (the earlier part) and the night's
    files, to be moved into it, by role.

    The split runs as its own process, for the same reason as the generator (`ensure_data`).
    """
    root, night = work / "nightly" / "in", work / "nightly" / "night"
    here = [sys.executable, str(HELPERS)]
    subprocess.run([*here, "split", str(data), str(root), str(night)], check=True)
    return root, {role: night / f"{role}.parquet" for role in ("messages", "statuses")}


def _arrive(root: Path, night: dict[str, Path], arrived: bool) -> None:
    """Put the night's files among the inputs under `root` (linked), or take them out."""
    for role, path in night.items():
        target = root / role / path.name
        if arrived:
            os.link(path, target)
        else:
            target.unlink(missing_ok=True)


def split_night(data: Path, root: Path, night: Path) -> None:
    """Write the data before its last night under `root`, and that night's under `night`."""
    import duckdb

    remove_made(root.parent)
    make_marked(root.parent)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    source = {role: str(data / role / "*.parquet") for role in ("messages", "statuses")}
    cutoff = con.execute(
        "SELECT quantile_disc(created, $q) FROM read_parquet($m)",
        {"q": 1 - NIGHTLY_SHARE, "m": source["messages"]},
    ).fetchone()
    night.mkdir(parents=True)
    for role in ("messages", "statuses"):
        (root / role).mkdir(parents=True)
        for target, is_night in ((root / role / "before.parquet", False),
                                 (night / f"{role}.parquet", True)):  # fmt: skip
            sql = _NIGHT_SPLIT.format(target=literal(str(target)))
            con.execute(sql, {"source": source[role], "cutoff": cutoff[0] if cutoff else None,
                              "night": is_night})  # fmt: skip
    con.close()


def run_nightly(
    data: Path,
    engine: str,
    work: Path,
    threads: int | None = None,
    runs: int = 1,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[Measurement]:
    """Measure a full run over all but the last night, the incremental run adding it, and one
    more run without a new file."""
    root, night = nightly_inputs(data, work)
    inputs, extra = _run_options(root, threads)
    base = [sys.executable, "-m", "convsum", "run", *inputs, "--out", str(work / "out")]
    command = [*base, "--engine", engine, *extra, "--report"]
    samples = Samples(runs, progress)
    for turn in samples.turns():
        _arrive(root, night, False)
        samples.take(turn, f"{engine} nightly full", command)
        _arrive(root, night, True)
        samples.take(turn, f"{engine} nightly increment", command)
        samples.take(turn, f"{engine} nightly unchanged", command)
        remove_made(work / "out")
    return samples.medians()


def run_sync(
    data: Path,
    work: Path,
    threads: int | None = None,
    runs: int = 1,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[Measurement]:
    """Measure `convsum sync` of a whole new tree to an empty bucket, then of the nightly run
    that follows (the split of `run_nightly`), and of the first tree stored gzip-compressed to
    another bucket, against a local S3-compatible server.

    The server is started anew for each turn: it holds every object in memory.
    """
    from tests.support.s3server import CREDENTIALS, local_s3, local_s3_client

    root, night = nightly_inputs(data, work)
    inputs, extra = _run_options(root, threads)
    out = work / "out"
    convsum = [sys.executable, "-m", "convsum"]
    run = [*convsum, "run", *inputs, "--out", str(out), *extra]
    samples = Samples(runs, progress)
    for turn in samples.turns():
        _arrive(root, night, False)
        samples.say(turn, "a full run to sync")
        subprocess.run(run, check=True, stderr=subprocess.DEVNULL)
        with local_s3(work / "moto.log") as endpoint:
            env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
            local_s3_client(endpoint).create_bucket(Bucket="convsum-bench")
            sync = [*convsum, "sync", str(out), "s3://convsum-bench/api", "--report"]
            samples.take(turn, "sync first", sync, env)
            _arrive(root, night, True)
            samples.say(turn, "the nightly run to sync")
            subprocess.run(run, check=True, stderr=subprocess.DEVNULL)
            samples.take(turn, "sync nightly", sync, env)
            remove_made(out)
            _arrive(root, night, False)
            samples.say(turn, "a full gzip run to sync")
            subprocess.run([*run, "--gzip"], check=True, stderr=subprocess.DEVNULL)
            local_s3_client(endpoint).create_bucket(Bucket="convsum-bench-gzip")
            packed = [*convsum, "sync", str(out), "s3://convsum-bench-gzip/api", "--report"]
            samples.take(turn, "sync first gzip", packed, env)
        remove_made(out)
    return samples.medians()


def format_sync(results: list[Measurement]) -> str:
    """Return the syncs as a Markdown table: objects and bytes sent, and per second, CPU per
    object."""
    lines = [
        "| sync | objects sent | deleted | MB sent | wall s | objects/s | MB/s | cpu s "
        "| cpu ms/object |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        sent, megabytes = m.report.get("sent", 0), m.report.get("bytes", 0) / 1e6
        rate = f"{sent / m.wall:.0f} | {megabytes / m.wall:.1f}" if m.wall else " | "
        per = f"{1000 * m.cpu / sent:.2f}" if sent else ""
        lines.append(
            f"| {m.label} | {sent:,} | {m.report.get('deleted', 0):,} | "
            f"{megabytes:.1f} | {m.wall:.1f} | {rate} | {m.cpu:.1f} | {per} |"
        )
    return "\n".join(lines)


TABLE_LABEL = "report stuck -F table"


def run_reports(
    data: Path,
    work: Path,
    threads: int | None = None,
    runs: int = 1,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[Measurement]:
    """Measure each named report (a whole `convsum report` process) on a published full run.

    The run publishes summaries only: the tables do not depend on the pages.
    """
    from convsum.reporting.reports import REPORTS

    out = work / "reports"
    inputs, extra = _run_options(data, threads)
    convsum = [sys.executable, "-m", "convsum"]
    progress("publishing the tables to report on")
    subprocess.run(
        [*convsum, "run", *inputs, "--out", str(out), "--only", "summaries", *extra],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    samples = Samples(runs, progress)
    for turn in samples.turns():
        for name in REPORTS:
            command = [*convsum, "report", name, str(out), "-F", "csv", "-o", os.devnull]
            samples.take(turn, f"report {name}", command)
        # The terminal's table (its first 40 rows, fitted and formatted) against the CSV of all.
        command = [*convsum, "report", "stuck", str(out), "-F", "table", "-o", os.devnull]
        samples.take(turn, TABLE_LABEL, command)
        samples.take(turn, "html", [*convsum, "html", str(out), "-o", os.devnull])
    remove_made(out)
    return samples.medians()


def format_reports(results: list[Measurement]) -> str:
    """Return the reports' measurements as a Markdown table, and the terminal table's time as a
    ratio to the CSV's (the target: at most 2)."""
    lines = ["| report | wall s | cpu s | peak MiB |", "|---|---|---|---|"]
    lines += [
        f"| {m.label.removeprefix('report ')} | {m.wall:.2f} | {m.cpu:.2f} | {m.peak_mib:.0f} |"
        for m in results
    ]
    by_label = {m.label: m for m in results}
    if TABLE_LABEL in by_label and "report stuck" in by_label:
        ratio = by_label[TABLE_LABEL].wall / by_label["report stuck"].wall
        lines += ["", f"stuck as the terminal's table / as CSV: {ratio:.2f}x (target at most 2x)"]
    return "\n".join(lines)


def _run_options(data: Path, threads: int | None) -> tuple[list[str], list[str]]:
    """Return `convsum run`'s input options for a data set, and its thread option if any."""
    inputs = ["--messages", str(data / "messages"), "--statuses", str(data / "statuses")]
    return inputs, ["--threads", str(threads)] if threads else []


def _commands(
    convsum: list[str], inputs: list[str], extra: list[str], engines: list[str], work: Path
) -> Iterator[tuple[str, list[str]]]:
    for engine in engines:
        base = [*convsum, "run", *inputs, "--out", str(work / "out"), "--engine", engine, *extra]
        yield f"{engine} summaries", [*base, "--only", "summaries", "--report"]
        yield f"{engine} full", [*base, "--report"]
        if engine == engines[0]:  # the first engine's tree stored gzip-compressed too
            yield f"{engine} {GZIP_FULL}", [*base, "--gzip", "--report"]


def format_table(results: list[Measurement], messages: int) -> str:
    """Return the results as a Markdown table, with the ratios to the floors."""
    by_label = {m.label: m for m in results}
    nan = Measurement("", float("nan"), 0.0, 0.0)
    query = by_label.get("bare query", nan).wall
    writer = by_label.get("bare writer", nan).wall
    header = ["run", *STAGES, "wall s", "cpu s", "peak MiB", "disk GB", "ratio to floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in results:
        if m.label.endswith(("nightly increment", "nightly unchanged")):
            night_full = by_label[m.label.rsplit(" ", 1)[0] + " full"]
            ratio = f"{m.wall / night_full.wall:.3f} x full"
        elif m.label.endswith(("nightly full", "startup")):
            ratio = ""
        elif m.label.endswith("summaries"):
            ratio = f"{m.wall / query:.2f} x query"
        elif m.label.endswith(FULL):
            ratio = f"{m.wall / (query + writer):.2f} x (query + writer)"
        elif m.label == WRITERS:
            ratio = f"{m.wall / writer:.2f} x one writer"
        else:
            ratio = "floor"
        stages = [f"{m.stages[s]:.1f}" if s in m.stages else "" for s in STAGES]
        disk = f"{m.disk / 1e9:.2f}" if m.disk else ""
        row = [m.label, *stages, f"{m.wall:.1f}", f"{m.cpu:.1f}", f"{m.peak_mib:.0f}", disk]
        row.append(ratio)
        lines.append("| " + " | ".join(row) + " |")
    full = [m for m in results if m.label.endswith(" full") and "nightly" not in m.label]
    if full:
        report = full[0].report
        lines.append("")
        lines.append(
            f"{messages:,} messages; {report.get('participants', 0):,} conversations; "
            f"{report.get('files_written', 0):,} files, "
            f"{report.get('bytes_written', 0) / 1e9:.2f} GB"
        )
    for m in results:
        if m.label == WRITERS and m.report.get("pair_ratios"):
            ratios = m.report["pair_ratios"]
            lines.append(
                f"two writers to one, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)} "
                f"(median {statistics.median(ratios):.2f} of {len(ratios)} pairs)"
            )
        if m.label.endswith("nightly increment"):
            r = m.report
            lines.append(
                f"{m.label}: {sum(r['rows_read'].values()):,} rows read from "
                f"{sum(r['files_read'].values())} new files; {r['conversations_changed']:,} "
                f"conversations changed; {r['files_written']:,} files written, "
                f"{r['files_unchanged']:,} unchanged, {r['files_removed']:,} removed"
            )
    return "\n".join(lines)


# The targets every `make bench` checks (this machine: 2 cores, 24 GB): (what, goal, unit).
TARGETS = {
    "compute": ("read + derive of a summaries-only run, to the bare query", 1.5, "x"),
    "full": ("full run, to bare query + bare writer", 1.0, "x"),
    "night": ("nightly increment (1 % new messages), to its full run", 0.10, "x"),
    "unchanged": ("night without a new file, wall time", 2.0, "s"),
    "memory": ("peak memory of any run", 4096.0, "MiB"),
    # The goals of a full tree are those at 10 million messages (`--messages 10000000`).
    "tree_time": ("full tree, wall time (the goal at 10 million messages)", 240.0, "s"),
    "tree_disk": ("full tree on disk, du of the output root (at 10 million)", 15.0, "GB"),
    "writers": ("two writer threads, to one (median of pairs; under 1: two are faster)", 1.0, "x"),
}


def targets(results: list[Measurement]) -> list[tuple[str, str, float]]:
    """Return (target, run, measured value) for every target the results can check."""
    by_label = {m.label: m for m in results}
    query = by_label.get("bare query")
    writer = by_label.get("bare writer")
    rows: list[tuple[str, str, float]] = []
    for m in results:
        label = m.label
        if label.endswith(" summaries") and query:
            compute = sum(m.stages.get(stage, 0.0) for stage in ("read", "derive"))
            rows.append(("compute", label, compute / query.wall))
        elif label.endswith(FULL) and "nightly" not in label:
            if query and writer:
                rows.append(("full", label, m.wall / (query.wall + writer.wall)))
            rows.append(("tree_time", label, m.wall))
            rows.append(("tree_disk", label, m.disk / 1e9))
        elif label == WRITERS and m.report.get("pair_ratios"):
            rows.append(("writers", label, statistics.median(m.report["pair_ratios"])))
        elif label.endswith("nightly increment"):
            rows.append(
                ("night", label, m.wall / by_label[label.replace("increment", "full")].wall)
            )
        elif label.endswith("nightly unchanged"):
            rows.append(("unchanged", label, m.wall))
        if not label.startswith(WRITER) and label != "bare query" and "startup" not in label:
            rows.append(("memory", label, m.peak_mib))
    return rows


def format_targets(results: list[Measurement]) -> str:
    """Return the targets as a Markdown table: goal, measured value, met or by how much not."""
    lines = ["| target | run | goal | measured | met |", "|---|---|---|---|---|"]
    for key, label, value in targets(results):
        what, goal, unit = TARGETS[key]
        met = "yes" if value <= goal else f"no ({value / goal:.2f} x the goal)"
        number = f"{value:.0f}" if unit in ("MiB", "s") and value >= 100 else f"{value:.2f}"
        lines.append(f"| {what} | {label} | {goal:g} {unit} | {number} {unit} | {met} |")
    return "\n".join(lines)


def spark_startup() -> None:
    """Start the Spark engine's session in local mode, run one task on each core, and stop."""
    from convsum.engines.spark_session import session

    spark = session(None, {})
    cores = spark.sparkContext.defaultParallelism
    spark.sparkContext.parallelize(range(cores), cores).map(abs).collect()
    spark.stop()


def _helper(argv: list[str]) -> None:
    """Run one helper process: the floors `query MESSAGES STATUSES THREADS` and `writer DIR FILES
    BYTES THREADS`, `spark-startup`, or `split DATA ROOT NIGHT` (see `nightly_inputs`)."""
    if argv[0] == "split":
        split_night(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    elif argv[0] == "query":
        messages, statuses = (str(Path(p) / "*.parquet") for p in argv[1:3])
        bare_query(messages, statuses, int(argv[3]) or None)
    elif argv[0] == "writer":
        if argv[4:5] == ["1"]:
            bare_writer(Path(argv[1]), int(argv[2]), int(argv[3]))
        else:
            bare_writers(Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]))
    elif argv[0] == "spark-startup":
        spark_startup()
    else:
        raise SystemExit(f"unknown floor {argv[0]!r}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option(
    "--reports/--no-reports",
    default=True,
    show_default=True,
    help="Also time each named report (a whole `convsum report` process).",
)
@click.option(
    "--sync/--no-sync",
    default=True,
    show_default=True,
    help="Also time `convsum sync` of a new tree and of a nightly run, to a local S3 server.",
)
def main(
    count: int,
    data: Path | None,
    engines: tuple[str, ...],
    threads: int | None,
    work: Path,
    runs: int,
    nightly: bool,
    reports: bool,
    sync: bool,
) -> None:
    """Measure each engine against the bare-query and bare-writer floors; print a table.

    Per engine, a summaries-only run and a full run; each run, and each floor, is one process
    whose wall time, CPU time and peak memory are measured; every figure is a median of --runs.
    With --nightly, per engine also a full run over all but the last 1 % of messages, the
    incremental run that adds them with every status logged since, and a run without a new
    file. With --reports, each named report over the tables of a full run. With --sync, the
    sync of a new tree to an empty bucket and of the nightly run after it, to moto's S3 server
    on this machine (objects per second). Then the targets: each goal, the measured value and
    whether it is met.
    """
    directory = data or Path("bench_data") / str(count)
    say = lambda label: click.echo(f"bench: {label}", err=True)  # noqa: E731
    results = run_bench(
        directory, count, list(engines or ENGINES), work, threads, runs=runs, progress=say
    )
    if nightly:
        for engine in engines or ENGINES:
            results += run_nightly(directory, engine, work, threads, runs=runs, progress=say)
    timed = run_reports(directory, work, threads, runs=runs, progress=say) if reports else []
    synced = run_sync(directory, work, threads, runs=runs, progress=say) if sync else []
    click.echo(format_table(results, count))
    click.echo("\n" + format_targets(results))
    if timed:
        click.echo("\n" + format_reports(timed))
    if synced:
        click.echo("\n" + format_sync(synced))


if __name__ == "__main__":
    if sys.argv[1:2] and not sys.argv[1].startswith("-"):
        _helper(sys.argv[1:])
    else:
        main()
