"""The state store and its catalog: what a published tree was built from, so that the next run
can add to it.

A tree's state lives beside its API files, in `trees/<id>/state/`:

    catalog.duckdb       the catalog (an embedded DuckDB database): every input file read, with
                         its size, modification time and row counts; the staging files that hold
                         its normalised rows; the conversations and files of an unfinished update;
                         the tree's counts: the report's facts, and per conversation, direction
                         and latest status code the messages and SMS (the summaries' numbers)
    messages/*.parquet   the normalised rows of every message file read (staging files, kept)
    statuses/*.parquet   the normalised rows of every status file read, and nested statuses

Rows are kept, not only results: a late duplicate of a message, or a late status, can change
which row wins, so an incremental run recomputes the messages it touches from all their rows.
Every count is kept too, and an incremental run adds what changed: the counts of the touched
messages' rows as they are now, less the same counts over their rows as they were. Every count of
the report but the owners and participants is a sum over message ids, and so is each
conversation's tally, so the night costs what it adds, not what the history holds.
The catalog changes only inside transactions, and a staging file counts only once the catalog
lists it: a run killed at any moment leaves a catalog that describes the served tree, plus the
conversations it had started to rewrite (`pending`), which the next run rewrites again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.errors import PublishError, first_line
from convsum.inputs import MESSAGES_SCHEMA, STATUSES_SCHEMA, StagedFile
from convsum.results import Facts

if TYPE_CHECKING:
    from convsum.incremental.tallies import Tally

STATE = "state"
CATALOG = "catalog.duckdb"
FORMAT = "2"
EMPTY = "empty.parquet"
# DuckDB's words when another process has the catalog open (its file lock), and how long a run
# waits for a reader (`convsum status`, which holds it for a moment) to let go.
_LOCKED = "Could not set lock on file"
_LOCK_WAIT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE inputs (
    path VARCHAR NOT NULL, role VARCHAR NOT NULL, bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL, rows BIGINT NOT NULL, nested_rows BIGINT NOT NULL,
    staged VARCHAR NOT NULL, nested VARCHAR, run_id VARCHAR NOT NULL
);
CREATE TABLE pending (owner VARCHAR NOT NULL, participant VARCHAR NOT NULL);
CREATE TABLE unreported (path VARCHAR NOT NULL, op VARCHAR NOT NULL);
CREATE TABLE conversations (
    owner VARCHAR NOT NULL, participant VARCHAR NOT NULL, direction VARCHAR NOT NULL,
    status_code BIGINT, messages BIGINT NOT NULL, sms BIGINT NOT NULL
);
"""


@dataclass(frozen=True)
class Known:
    """An input file as the catalog remembers it."""

    role: str
    bytes: int
    mtime_ns: int


class Catalog:
    """An open state store: its catalog connection and row directories."""

    def __init__(self, directory: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.directory = directory
        self.messages = directory / "messages"
        self.statuses = directory / "statuses"
        self.con = con

    @classmethod
    def create(cls, directory: Path, fingerprint: str, tree: str) -> Catalog:
        """Create an empty state store in `directory` (which must not exist yet)."""
        directory.mkdir()
        state = cls(directory, duckdb.connect(str(directory / CATALOG)))
        state.messages.mkdir()
        state.statuses.mkdir()
        pq.write_table(MESSAGES_SCHEMA.empty_table(), state.messages / EMPTY)
        pq.write_table(STATUSES_SCHEMA.empty_table(), state.statuses / EMPTY)
        with state.transaction() as con:
            con.execute(_SCHEMA)
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("format", FORMAT), ("fingerprint", fingerprint), ("tree", tree)],
            )
        return state

    @classmethod
    def open(cls, directory: Path) -> Catalog | None:
        """Open the state store in `directory`; None if unreadable or of another format.

        A reader that has it open (`pending_in`) is waited for, up to ten seconds.
        """
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            try:
                state = cls(directory, duckdb.connect(str(directory / CATALOG)))
                break
            except duckdb.IOException as exc:
                if _LOCKED not in str(exc) or time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
            except duckdb.Error:
                return None
        try:
            if state.meta("format") == FORMAT:
                return state
        except duckdb.Error:
            pass
        state.close()
        return None

    @staticmethod
    def pending_in(directory: Path) -> int | None:
        """Return how many conversations an unfinished update of the store in `directory` left
        to rewrite (0 without a store), reading it read-only for a moment; None while a run has
        it open (a run is under way)."""
        if not Catalog.exists(directory):
            return 0
        try:
            con = duckdb.connect(str(directory / CATALOG), read_only=True)
        except duckdb.IOException as exc:
            if _LOCKED in str(exc):
                return None
            msg = f"{directory / CATALOG}: cannot read the state store ({first_line(exc)})"
            raise PublishError(msg) from exc
        with closing(con):
            try:
                return Catalog(directory, con).pending()
            except duckdb.Error:  # a store of another format: the next run replaces it
                return 0

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / CATALOG).is_file()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction: all of it is committed, or none of it."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def known(self) -> dict[str, Known]:
        """Return every input file read so far, by path."""
        rows = self.con.execute("SELECT path, role, bytes, mtime_ns FROM inputs").fetchall()
        return {path: Known(role, size, mtime) for path, role, size, mtime in rows}

    def rows_read(self) -> dict[str, int]:
        """Return the rows of every input file read so far, per role (as the report counts)."""
        totals = {"messages": 0, "statuses": 0, "nested_statuses": 0}
        query = "SELECT role, sum(rows), sum(nested_rows) FROM inputs GROUP BY role"
        for role, rows, nested in self.con.execute(query).fetchall():
            totals[role] += int(rows)
            totals["nested_statuses"] += int(nested)
        return totals

    def nested_known(self) -> bool:
        row = self.con.execute("SELECT count(*) FROM inputs WHERE nested IS NOT NULL").fetchone()
        return bool(row and row[0])

    def staged_files(self) -> set[Path]:
        """Return the staging files the catalog lists (with the two empty ones)."""
        files = {self.messages / EMPTY, self.statuses / EMPTY}
        query = "SELECT role, staged, nested FROM inputs"
        for role, staged, nested in self.con.execute(query).fetchall():
            files.add((self.messages if role == "messages" else self.statuses) / staged)
            if nested:
                files.add(self.statuses / nested)
        return files

    def remove_unlisted(self) -> None:
        """Remove staging files that a killed run moved in but never recorded."""
        listed = self.staged_files()
        for directory in (self.messages, self.statuses):
            for path in directory.iterdir():
                if path not in listed:
                    path.unlink()

    def adopt(self, staged: Sequence[StagedFile], work_messages: Path, work_statuses: Path) -> None:
        """Move newly staged files into the store (not yet listed: see `record`)."""
        for item in staged:
            directory = self.messages if item.source.role == "messages" else self.statuses
            source = work_messages if item.source.role == "messages" else work_statuses
            (source / item.staged).rename(directory / item.staged)
            if item.nested:
                (work_statuses / item.nested).rename(self.statuses / item.nested)

    def facts(self) -> Facts | None:
        """Return the facts of the served tree's data; None before a run recorded them."""
        raw = self.meta("facts")
        return None if raw is None else Facts.from_json(raw)

    def pending(self) -> int:
        """Return how many conversations an unfinished update had started to rewrite."""
        row = self.con.execute("SELECT count(*) FROM pending").fetchone()
        return int(row[0]) if row else 0

    def begin_update(self, conversations: Path | None, changes: pa.Table) -> None:
        """Record, before the served tree changes, what this update is going to change."""
        with self.transaction() as con:
            con.execute("DELETE FROM pending")
            if conversations is not None:
                con.execute(
                    "INSERT INTO pending SELECT owner, participant FROM read_parquet($p)",
                    {"p": str(conversations)},
                )
            con.register("changes", changes)
            con.execute("INSERT INTO unreported SELECT path, op FROM changes")
            con.unregister("changes")

    def unreported(self) -> pa.Table:
        """Return the file changes of unfinished updates: (path, op) with op "+" or "-"."""
        return self.con.sql("SELECT DISTINCT path, op FROM unreported").to_arrow_table()

    def record(
        self,
        run_id: str,
        staged: Sequence[StagedFile],
        facts: Facts,
        tally: Tally | None,
    ) -> None:
        """Commit the new input files, the tree's facts and the new tallies (None: unchanged),
        and end the update: the tree now matches the catalog."""
        rows = [
            (
                f.source.key,
                f.source.role,
                f.source.bytes,
                f.source.mtime_ns,
                f.rows,
                f.nested_rows,
                f.staged,
                f.nested,
                run_id,
            )
            for f in staged
        ]
        with self.transaction() as con:
            if rows:
                con.executemany("INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.execute("DELETE FROM pending")
            con.execute("DELETE FROM unreported")
            con.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("facts", facts.to_json()), ("run", run_id)],
            )
            if tally is not None:
                con.execute(
                    "DELETE FROM conversations AS c USING read_parquet($updated) AS u "
                    "WHERE c.owner = u.owner AND c.participant = u.participant",
                    {"updated": str(tally.updated)},
                )
                con.execute(
                    "INSERT INTO conversations SELECT * FROM read_parquet($counts)",
                    {"counts": str(tally.counts)},
                )
        self.con.execute("CHECKPOINT")
