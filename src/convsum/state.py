"""The state store: what a published tree was built from, so that the next run can add to it.

A tree's state lives beside its API files, in `trees/<id>/state/`:

    catalog.duckdb       the catalog (an embedded DuckDB database): every input file read, with
                         its size, modification time and row counts; the staging files that hold
                         its normalised rows; the conversations and files of an unfinished update
    messages/*.parquet   the normalised rows of every message file read (staging files, kept)
    statuses/*.parquet   the normalised rows of every status file read, and nested statuses

Rows are kept, not only results: a late duplicate of a message, or a late status, can change
which row wins, so an incremental run recomputes the conversations it touches from their rows.
The catalog changes only inside transactions, and a staging file counts only once the catalog
lists it: a run killed at any moment leaves a catalog that describes the served tree, plus the
conversations it had started to rewrite (`pending`), which the next run rewrites again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.inputs import MESSAGES_SCHEMA, STATUSES_SCHEMA, StagedFile
from convsum.sql import literal

STATE = "state"
CATALOG = "catalog.duckdb"
FORMAT = "1"
EMPTY = "empty.parquet"

_SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE inputs (
    path VARCHAR NOT NULL, role VARCHAR NOT NULL, bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL, rows BIGINT NOT NULL, nested_rows BIGINT NOT NULL,
    staged VARCHAR NOT NULL, nested VARCHAR, run_id VARCHAR NOT NULL
);
CREATE TABLE pending (owner VARCHAR NOT NULL, participant VARCHAR NOT NULL);
CREATE TABLE unreported (path VARCHAR NOT NULL, op VARCHAR NOT NULL);
"""

# The messages an update touches: every row (old or new) of each message that has a new row or a
# new matching status. The conversations it touches: those of these rows, with the pending ones
# of an unfinished update. `since` is
# the least (created, id) of those rows in the conversation: everything before it in the list is
# unchanged. It is null (everything may have changed) for a pending conversation.
_TOUCHED = """
CREATE OR REPLACE TEMP TABLE touched AS
WITH rows AS (SELECT owner, id, sender, recipient, created FROM read_parquet($messages)),
new_statuses AS (SELECT message_id, owner FROM read_parquet($new_statuses)),
keys AS (
    SELECT owner, id FROM read_parquet($new_messages)
    UNION
    SELECT m.owner, m.id FROM rows AS m JOIN new_statuses AS s
        ON s.message_id = m.id AND (s.owner IS NULL OR s.owner = m.owner)
)
SELECT * FROM rows SEMI JOIN keys USING (owner, id)
"""
_AFFECTED = """
COPY (
    WITH sides AS (
        SELECT owner, sender AS participant, {{'created': created, 'id': id}} AS since
        FROM touched
        UNION ALL SELECT owner, recipient, {{'created': created, 'id': id}} FROM touched
        UNION ALL SELECT owner, participant, NULL FROM pending
    ),
    least AS (
        SELECT owner, participant,
            CASE WHEN bool_or(since IS NULL) THEN NULL ELSE min(since) END AS since
        FROM sides GROUP BY owner, participant
    )
    SELECT owner, participant, since.created AS since_created, since.id AS since_id FROM least
) TO {target} (FORMAT parquet)
"""
# The UTC days of every row (old or new) of the touched messages: the days whose messages (and
# their statuses) may have changed in the queryable tables (see reporting/tables.py).
_DAYS = "SELECT DISTINCT created::DATE FROM touched ORDER BY 1"


@dataclass(frozen=True)
class Known:
    """An input file as the catalog remembers it."""

    role: str
    bytes: int
    mtime_ns: int


class State:
    """An open state store (its catalog connection and row directories)."""

    def __init__(self, directory: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.directory = directory
        self.messages = directory / "messages"
        self.statuses = directory / "statuses"
        self.con = con

    @classmethod
    def create(cls, directory: Path, fingerprint: str, tree: str) -> State:
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
    def open(cls, directory: Path) -> State | None:
        """Open the state store in `directory`; None if unreadable or of another format."""
        try:
            state = cls(directory, duckdb.connect(str(directory / CATALOG)))
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
    def exists(directory: Path) -> bool:
        return (directory / CATALOG).is_file()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> State:
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

    def affected(self, new: Sequence[StagedFile], target: Path) -> tuple[int, list[date]]:
        """Write the conversations that `new` files touch (and pending ones) to `target`.

        Call after `adopt`: the store's message rows then include the new ones. Returns how many,
        and the UTC days of the touched messages' rows.
        """
        new_messages = [self.messages / EMPTY] + [
            self.messages / f.staged for f in new if f.source.role == "messages"
        ]
        new_statuses = [self.statuses / EMPTY]
        for f in new:
            if f.source.role == "statuses":
                new_statuses.append(self.statuses / f.staged)
            if f.nested:
                new_statuses.append(self.statuses / f.nested)
        self.con.execute(
            _TOUCHED,
            {
                "messages": str(self.messages / "*.parquet"),
                "new_messages": [str(p) for p in new_messages],
                "new_statuses": [str(p) for p in new_statuses],
            },
        )
        self.con.execute(_AFFECTED.format(target=literal(str(target))))
        days = [day for (day,) in self.con.execute(_DAYS).fetchall()]
        self.con.execute("DROP TABLE touched")
        return int(pq.ParquetFile(target).metadata.num_rows), days

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

    def record(self, run_id: str, staged: Sequence[StagedFile]) -> None:
        """Commit the new input files and end the update: the tree now matches the catalog."""
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
        self.con.execute("CHECKPOINT")


def discard(directory: Path) -> None:
    """Remove a state store that will not be used."""
    shutil.rmtree(directory, ignore_errors=True)
