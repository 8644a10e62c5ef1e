"""The queryable tables of a published tree, written by the run that publishes it.

A tree's tables live beside its API files, in `trees/<id>/tables/`:

    snapshot.json                              the files that make up the tables, as of one run
    messages/empty.parquet                     the table's columns, for a table without rows
    messages/utc_day=YYYY-MM-DD/<run>-N.parquet   the messages created on that UTC day
    statuses/...                               the same layout, by the UTC day of the message
    conversations/<run>.parquet                one file, rewritten by every run
    runs/<run>.parquet                         the run history, rewritten by every run

Every file is written once, under the id of the run that wrote it, and never changed: a run adds
its files, then makes them the tables by replacing `snapshot.json` in one rename. A reader reads
the snapshot once, so a query sees one run's tables whole (see reporting/query.py). An incremental
run rewrites only the days its new rows touch; the other days' files stay listed. Files the
snapshot no longer lists are removed while no reader holds the tree (see publish/tree.py).

The rows come from the engine's own derivation (deduplicated messages, latest statuses), through
the DuckDB relations every engine offers (see engines/base.py), and the conversations from the
tallies the summaries are rendered from (incremental/tallies.py), so the tables say what the API
says, by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.publish import durable
from convsum.publish.manifest import write_json
from convsum.publish.tree import READERS, unread
from convsum.results import RunReport, as_dict
from convsum.rules import status_of
from convsum.sql import literal

TABLES = "tables"
SNAPSHOT = "snapshot.json"
FORMAT = 1
EMPTY = "empty.parquet"
DAY = "utc_day"
BY_DAY = ("messages", "statuses")
NAMES = ("messages", "statuses", "conversations", "runs")

# The latest status code's outcome; documented in docs/reporting.md's table of the `messages` table.
OUTCOMES = (
    "delivered", "expired", "canceled", "other_final", "rejected", "error", "pending", "no_status"
)  # fmt: skip
OUTCOME = """CASE
    WHEN {code} IS NULL THEN 'no_status'
    WHEN {code} = 201 THEN 'delivered'
    WHEN {code} = 202 THEN 'expired'
    WHEN {code} = 203 THEN 'canceled'
    WHEN {code} // 100 = 2 THEN 'other_final'
    WHEN {code} // 100 = 4 THEN 'rejected'
    WHEN {code} // 100 = 5 THEN 'error'
    ELSE 'pending' END"""

# The relations an engine offers (engines/base.py): derived_messages (one row per message, the
# staged columns), derived_latest (owner, id, code, duration, status_created, final_created)
# and staged_statuses (every staged status row).
# `{days}` restricts the messages to some UTC days: the tables are written a few days at a time
# (see `_chunks`), so that every join and the distinct statuses hold only those days' rows. The
# latest statuses are first narrowed to those days' messages, so that the join's build side is
# small whichever side DuckDB builds on.
_MESSAGES = f"""
SELECT m.id, m.batch_id, m.owner, m.sender, m.recipient, m.body, m.direction, m.segments,
    m.type, m.datacoding, m.priority, m.price, m.currency, timezone('UTC', m.created) AS created,
    timezone('UTC', m.modified) AS modified, m.reference, m.mcc, m.mnc,
    l.code AS status_code, timezone('UTC', l.status_created) AS status_created,
    l.duration AS status_duration, {OUTCOME.format(code="l.code")} AS outcome,
    timezone('UTC', l.final_created) AS final_created, m.created::DATE AS {DAY}
FROM (SELECT * FROM derived_messages {{days}}) AS m LEFT JOIN (
    SELECT * FROM derived_latest
    SEMI JOIN (SELECT owner, id FROM derived_messages {{days}}) USING (owner, id)
) AS l USING (owner, id)
"""
_STATUSES = f"""
WITH m AS (SELECT owner, id, created FROM derived_messages {{days}})
SELECT DISTINCT m.owner, s.message_id, s.code, timezone('UTC', s.created) AS created,
    s.duration, s.created < m.created AS before_message, m.created::DATE AS {DAY}
FROM m JOIN staged_statuses AS s ON {status_of("s", "m")}
"""
RUNS_SCHEMA = pa.schema(
    [
        ("run_number", pa.int64()),  # 1, 2, ... in the order the runs were published
        ("run_id", pa.string()),
        ("mode", pa.string()),
        ("rebuild_reason", pa.string()),
        ("engine", pa.string()),
        ("convsum_version", pa.string()),
        ("started", pa.timestamp("us", "UTC")),
        ("finished", pa.timestamp("us", "UTC")),
        ("messages_read", pa.int64()),
        ("statuses_read", pa.int64()),
        ("nested_statuses_read", pa.int64()),
        ("files_read", pa.int64()),
        ("files_written", pa.int64()),
        ("files_unchanged", pa.int64()),
        ("files_removed", pa.int64()),
        ("messages", pa.int64()),
        ("duplicate_messages", pa.int64()),
        ("messages_without_status", pa.int64()),
        ("orphan_statuses", pa.int64()),
        ("duplicate_statuses", pa.int64()),
        ("unknown_code_rows", pa.int64()),
        ("unknown_codes", pa.string()),
        ("owners", pa.int64()),
        ("participants", pa.int64()),
    ]
)


@dataclass(frozen=True)
class RunRecord:
    """A published run as the `runs` table holds it: its report, and how it ran."""

    report: RunReport
    engine: str
    convsum_version: str
    started: datetime


@dataclass(frozen=True)
class Snapshot:
    """The files of each table as of one run, relative to the tables directory."""

    run_id: str
    files: Mapping[str, tuple[str, ...]]

    @classmethod
    def read(cls, tree: Path) -> Snapshot | None:
        """Return the tree's snapshot; None when the tree has no tables it can read.

        A snapshot of another format, or one not written by convsum, counts as none: a full run
        then starts the run history afresh, and a query says that the tree has no tables.
        """
        try:
            raw = orjson.loads((tree / TABLES / SNAPSHOT).read_bytes())
            if raw["format"] != FORMAT:
                return None
            return cls(raw["run_id"], {name: tuple(raw["tables"][name]) for name in NAMES})
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def paths(self, tree: Path) -> dict[str, list[str]]:
        """Return each table's files as absolute paths."""
        base = (tree / TABLES).resolve()
        return {name: [str(base / f) for f in files] for name, files in self.files.items()}


@dataclass
class Written:
    """The table files a run has written so far, and the days they replace."""

    files: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in NAMES})
    days: frozenset[date] | None = None  # None: every day (a full run)


def write_tables(
    con: duckdb.DuckDBPyConnection,
    tree: Path,
    work: Path,
    run_id: str,
    days: Iterable[date] | None,
    conversations: Callable[[Path], None],
    budget: int,
) -> Written:
    """Write the messages, statuses and conversations tables' new files into `tree`.

    `con` holds the engine's relations. With `days`, only the messages (and their statuses)
    created on those UTC days are written: the days an incremental run touches.
    `conversations` writes that table's file (from the tallies, incremental/tallies.py).
    `budget` is the engines' memory limit in bytes, which sizes the chunks of days written at
    once.
    """
    written = Written(days=None if days is None else frozenset(days))
    directory = tree / TABLES
    directory.mkdir(exist_ok=True)
    (tree / READERS).touch()
    chunks = _chunks(con, written.days, budget)
    for name, sql in (("messages", _MESSAGES), ("statuses", _STATUSES)):
        if written.days is None:
            empty = f"SELECT * EXCLUDE ({DAY}) FROM ({sql.format(days='')}) LIMIT 0"
            _copy(con, empty, directory / name / EMPTY)
            written.files[name].append(f"{name}/{EMPTY}")
        for k, chunk in enumerate(chunks):
            staging = work / "tables" / name / str(k)
            staging.parent.mkdir(parents=True, exist_ok=True)
            con.execute(
                f"COPY ({sql.format(days=_ON_DAYS)}) TO {literal(str(staging))} "
                f"(FORMAT parquet, PARTITION_BY ({DAY}), FILENAME_PATTERN '{run_id}-{{i}}')",
                {"days": chunk},
            )
            written.files[name] += _move_days(staging, directory, name)
    relative = f"conversations/{run_id}.parquet"
    conversations(directory / relative)
    written.files["conversations"].append(relative)
    return written


def _move_days(staging: Path, directory: Path, name: str) -> list[str]:
    """Move the day directories' files of one COPY into table `name`; return their paths
    relative to the tables directory."""
    moved = []
    for part in sorted(staging.iterdir()) if staging.exists() else []:
        (directory / name / part.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(part.iterdir()):
            relative = f"{name}/{part.name}/{file.name}"
            file.rename(directory / relative)
            moved.append(relative)
    return moved


_ON_DAYS = "WHERE created::DATE IN (SELECT unnest($days::DATE[]))"
# The working set of writing one message and its statuses (the joins' hash tables, the distinct
# statuses), about; a chunk of days may take half the memory budget.
_BYTES_PER_MESSAGE = 400


def _chunks(
    con: duckdb.DuckDBPyConnection, days: frozenset[date] | None, budget: int
) -> list[list[date]]:
    """Split the days to write (every day with a message when None), in order, into chunks of
    at most as many messages as half the budget allows (a larger day is a chunk alone)."""
    where = "" if days is None else _ON_DAYS
    params = {} if days is None else {"days": sorted(days)}
    counts = con.execute(
        f"SELECT created::DATE, count(*) FROM derived_messages {where} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall()
    most = max(1, budget // 2 // _BYTES_PER_MESSAGE)
    chunks: list[list[date]] = []
    rows = most
    for day, n in counts:
        if rows + n > most:
            chunks.append([])
            rows = 0
        chunks[-1].append(day)
        rows += n
    return chunks


def unchanged_tables(tree: Path) -> Written:
    """Return what a run that changes no row writes: nothing; the tree's files all stay."""
    snapshot = Snapshot.read(tree)
    kept = list(snapshot.files["conversations"]) if snapshot else []
    return Written(files={"messages": [], "statuses": [], "conversations": kept}, days=frozenset())


def _copy(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO {literal(str(target))} (FORMAT parquet)")


def publish_tables(tree: Path, written: Written, previous: Path | None, run: RunRecord) -> None:
    """Add this run to the run history and make the written files the tree's tables.

    `previous` is the tree the run history so far is read from (the served tree before a full
    run; the same tree for an incremental one). Then the files the new snapshot no longer lists
    are removed, unless a reader holds the tree.
    """
    directory = tree / TABLES
    before = Snapshot.read(previous) if previous else None
    history = [] if before is None else _runs(previous, before)  # type: ignore[arg-type]
    run_id = run.report.run_id
    relative = f"runs/{run_id}.parquet"
    (directory / "runs").mkdir(exist_ok=True)
    # Numbered by their place in the history, never by the clock that named them.
    ordered = [{**row, "run_number": n} for n, row in enumerate([*history, _run_row(run)], 1)]
    rows = pa.Table.from_pylist(ordered, schema=RUNS_SCHEMA)
    pq.write_table(rows, directory / relative)
    files = dict(written.files)
    files["runs"] = [relative]
    if written.days is not None and before is not None:  # an incremental run keeps the rest
        for name in BY_DAY:
            kept = [f for f in before.files[name] if _day(f) not in written.days]
            files[name] = sorted({*kept, *files[name]})
    snapshot = {"format": FORMAT, "run_id": run_id, "tables": files}
    if written.days is not None:  # in the served tree: its files on disk before the snapshot
        durable.sync_filesystem(directory)
    write_json(directory / SNAPSHOT, snapshot)
    durable.sync_directory(directory)
    _remove_unlisted(tree, files)


def _remove_unlisted(tree: Path, files: Mapping[str, list[str]]) -> None:
    """Remove the table files that `files` (the new snapshot's) do not list, unless a reader
    holds the tree."""
    directory = tree / TABLES
    listed = {directory / f for names in files.values() for f in names}
    with unread(tree) as free:
        if not free:
            return
        for name in NAMES:
            for path in sorted((directory / name).rglob("*.parquet"), reverse=True):
                if path not in listed:
                    path.unlink()
            for part in (directory / name).glob(f"{DAY}=*"):
                if not any(part.iterdir()):
                    part.rmdir()


def _day(relative: str) -> date | None:
    parts = relative.split("/")
    if len(parts) == 3 and parts[1].startswith(f"{DAY}="):
        return date.fromisoformat(parts[1].removeprefix(f"{DAY}="))
    return None


def _runs(tree: Path, snapshot: Snapshot) -> list[dict[str, Any]]:
    paths = snapshot.paths(tree)["runs"]  # a history written before `run_number` lacks it
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def _run_row(run: RunRecord) -> dict[str, Any]:
    """Return the `runs` row of a run: its report's fields, flattened, and how it ran."""
    report = run.report
    fields = as_dict(run)  # the report's, then the engine, the version and the start
    row = {name: fields.get(name) for name in RUNS_SCHEMA.names}
    unknown = report.data.unknown_codes
    row.update(
        finished=datetime.now(UTC),
        messages_read=report.rows_read["messages"],
        statuses_read=report.rows_read["statuses"],
        nested_statuses_read=report.rows_read["nested_statuses"],
        files_read=sum(report.files_read.values()),
        unknown_code_rows=sum(unknown.values()),
        unknown_codes=orjson.dumps(unknown, option=orjson.OPT_SORT_KEYS).decode(),
    )
    return row
