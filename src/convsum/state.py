"""The state store: what a published tree was built from, so that the next run can add to it.

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

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.engines.base import UPDATE_SCOPE
from convsum.inputs import MESSAGES_SCHEMA, STATUSES_SCHEMA, StagedFile, StagedInputs
from convsum.reporting.tables import Snapshot
from convsum.results import Facts
from convsum.rules import memberships, page_start, status_of
from convsum.sql import literal

STATE = "state"
CATALOG = "catalog.duckdb"
FORMAT = "2"
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
CREATE TABLE conversations (
    owner VARCHAR NOT NULL, participant VARCHAR NOT NULL, direction VARCHAR NOT NULL,
    status_code BIGINT, messages BIGINT NOT NULL, sms BIGINT NOT NULL
);
"""

# The messages an update touches: every row (old or new) of each message that has a new row or a
# new matching status. The conversations it touches: those of these rows, with the pending ones
# of an unfinished update. `since` is the least (created, id) of those rows in the conversation:
# everything before it in the list is unchanged. It is null (everything may have changed) for a
# pending conversation.
_TOUCHED = f"""
CREATE OR REPLACE TEMP TABLE touched AS
WITH rows AS (SELECT owner, id, sender, recipient, created FROM read_parquet($messages)),
new_statuses AS (SELECT message_id, owner FROM read_parquet($new_statuses)),
keys AS (
    SELECT owner, id FROM read_parquet($new_messages)
    UNION
    SELECT m.owner, m.id FROM rows AS m JOIN new_statuses AS s ON {status_of("s", "m")}
)
SELECT * FROM rows SEMI JOIN keys USING (owner, id)
"""
_AFFECTED = f"""
CREATE OR REPLACE TEMP TABLE affected AS
WITH sides AS (
    {memberships("touched", "{'created': created, 'id': id} AS since")}
    UNION ALL SELECT owner, participant, NULL FROM pending
),
least AS (
    SELECT owner, participant,
        CASE WHEN bool_or(since IS NULL) THEN NULL ELSE min(since) END AS since
    FROM sides GROUP BY owner, participant
)
SELECT owner, participant, since.created AS since_created, since.id AS since_id,
    NULL::TIMESTAMP AS cut_created, NULL::VARCHAR AS cut_id,
    0::BIGINT AS base_all, 0::BIGINT AS base_mt, 0::BIGINT AS base_mo
FROM least
"""
# An update that writes ascending lists alone needs, of each touched conversation, only the rows
# from the page that holds its last row before `since` (or, with none after, its last page). The
# rows as the tree has them come from its `messages` table (one row per message, as the last run
# derived it). Per list (all, mt, mo): the rows before `since`, how many, and the last page of
# them. `cut` is the first row the update derives again, the least over the lists of the row
# that starts that page (null: every row); `base_*` count each list's rows before it.
_OLD_ROWS = f"""
CREATE OR REPLACE TEMP VIEW old_rows AS
WITH m AS (
    SELECT owner, id, sender, recipient, direction, timezone('UTC', created) AS created
    FROM read_parquet({{table}})
), sides AS ({memberships("m", "direction, created, id")})
SELECT s.owner, s.participant, s.direction, s.id, {{{{'created': s.created, 'id': s.id}}}} AS key,
    a.since_created IS NOT NULL AND (s.created, s.id) < (a.since_created, a.since_id) AS before
FROM sides AS s JOIN affected AS a USING (owner, participant)
"""
_CUTS = f"""
CREATE OR REPLACE TEMP TABLE cut AS
WITH lists AS (
    SELECT owner, participant, count(*) AS n, max(key, $size) AS last FROM (
        SELECT owner, participant, 'all' AS list, key FROM old_rows WHERE before
        UNION ALL SELECT owner, participant, direction, key FROM old_rows WHERE before
    ) GROUP BY owner, participant, list
), cuts AS (
    SELECT owner, participant, min(last[n - {page_start("n - 1")}]) AS cut
    FROM lists GROUP BY owner, participant
)
SELECT a.owner, a.participant, a.since_created, a.since_id,
    c.cut.created AS cut_created, c.cut.id AS cut_id,
    count(o.key) FILTER (o.key < c.cut) AS base_all,
    count(o.key) FILTER (o.key < c.cut AND o.direction = 'mt') AS base_mt,
    count(o.key) FILTER (o.key < c.cut AND o.direction = 'mo') AS base_mo
FROM affected AS a LEFT JOIN cuts AS c USING (owner, participant)
LEFT JOIN old_rows AS o USING (owner, participant)
GROUP BY ALL
"""
_CONTEXT_IDS = """
UNION SELECT o.id FROM old_rows AS o JOIN cut AS c USING (owner, participant)
WHERE c.cut_created IS NULL OR o.key >= {'created': c.cut_created, 'id': c.cut_id}
"""
# The UTC days of every row (old or new) of the touched messages: the days whose messages (and
# their statuses) may have changed in the queryable tables (see reporting/tables.py).
_DAYS = "SELECT DISTINCT created::DATE FROM touched ORDER BY 1"

# The ids whose rows changed: of every new message row and every new status row. Every row of
# these ids, old and new, is read again: their counts now, less their counts before.
_IDS = """
CREATE OR REPLACE TEMP TABLE ids AS
SELECT id FROM read_parquet($new_messages) UNION SELECT message_id FROM read_parquet($new_statuses)
"""
# With the ids of the messages created on the touched days, whose tables are rewritten, and
# those of the rows kept of each conversation (`_CONTEXT_IDS`), whose pages are.
_ROW_IDS = """
CREATE OR REPLACE TEMP TABLE row_ids AS
SELECT id FROM ids UNION
SELECT id FROM read_parquet($messages) WHERE created::DATE IN (SELECT unnest($days::DATE[]))
{context}
"""
_ROWS_OF = """
COPY (SELECT * FROM read_parquet($files) WHERE {column} IN (SELECT id FROM {ids}))
TO {target} (FORMAT parquet)
"""
# The conversations a run recomputes: those it touched and those whose tallies it has.
_UPDATED = """
COPY (SELECT owner, participant FROM {sources}) TO {target} (FORMAT parquet)
"""
# Their tallies: as the catalog has them, plus the touched messages' now, less theirs before.
_TALLY = """
COPY (
    WITH parts AS (
        SELECT * FROM conversations SEMI JOIN read_parquet($updated) USING (owner, participant)
        UNION ALL SELECT * FROM read_parquet($after)
        UNION ALL SELECT owner, participant, direction, status_code, -messages, -sms
            FROM {before}
    )
    SELECT owner, participant, direction, status_code, sum(messages)::BIGINT AS messages,
        sum(sms)::BIGINT AS sms
    FROM parts GROUP BY ALL HAVING sum(messages) <> 0 ORDER BY ALL
) TO {target} (FORMAT parquet)
"""
_MERGED = """(
    SELECT * FROM conversations ANTI JOIN read_parquet({updated}) USING (owner, participant)
    UNION ALL SELECT * FROM read_parquet({counts})
)"""


@dataclass(frozen=True)
class Touched:
    """What an incremental run derives again (see `State.affected`)."""

    conversations: int  # how many the update recomputes
    days: list[date]  # the UTC days of every row of the touched messages
    after: StagedInputs  # every row, old and new, of the ids that have a new row
    before: StagedInputs  # their rows as the served tree was built from them
    rows: StagedInputs | None  # the rows the tables (and lists) come from; None: every row


@dataclass(frozen=True)
class Tally:
    """The new conversation tallies of a run (see `State.tally`)."""

    counts: Path  # (owner, participant, direction, status_code, messages, sms) of `updated`
    updated: Path  # (owner, participant) of every conversation recomputed
    owners: int  # in the whole tree after this run
    participants: int


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

    def affected(
        self,
        new: Sequence[StagedFile],
        work: Path,
        target: Path,
        orders: Sequence[str],
        page_size: int,
    ) -> Touched:
        """Find what the `new` files change; write the touched conversations (and pending ones)
        to `target`, and under `work` the rows to derive again.

        Call after `adopt`: the store then holds the new files, not yet listed. `orders`: the
        orders of the lists written. Descending lists count positions from the end, so their
        pages come from every row; ascending ones from the rows from the first page that may
        change (`_CUTS`, when the tree's tables are those the catalog describes).
        """
        new_files = {role: [self.directory / role / EMPTY] for role in ("messages", "statuses")}
        for f in new:
            new_files[f.source.role].append(self.directory / f.source.role / f.staged)
            if f.nested:
                new_files["statuses"].append(self.statuses / f.nested)
        new_paths = {role: [str(p) for p in files] for role, files in new_files.items()}
        self.con.execute(
            _TOUCHED,
            {
                "messages": str(self.messages / "*.parquet"),
                "new_messages": new_paths["messages"],
                "new_statuses": new_paths["statuses"],
            },
        )
        self.con.execute(_AFFECTED)
        days = [day for (day,) in self.con.execute(_DAYS).fetchall()]
        self.con.execute("DROP TABLE touched")
        self.con.execute(
            _IDS, {"new_messages": new_paths["messages"], "new_statuses": new_paths["statuses"]}
        )
        old = {role: sorted(str(p) for p in self.staged_files() if p.parent.name == role)
               for role in ("messages", "statuses")}  # fmt: skip
        table = self._messages_table() if tuple(orders) == ("asc",) else None
        source, rows, written = old, None, "affected"
        if "desc" not in orders and (table is not None or not orders):
            context = ""
            if table is not None:
                files = ", ".join(literal(path) for path in table)
                self.con.execute(_OLD_ROWS.format(table=f"[{files}]"))
                self.con.execute(_CUTS, {"size": page_size})
                context, written = _CONTEXT_IDS, "cut"
            self.con.execute(
                _ROW_IDS.format(context=context), {"messages": old["messages"], "days": days}
            )
            rows = self._rows_of(old, "row_ids", work / "rows", new_files)
            source = {role: [str(work / "rows" / role / "old.parquet")] for role in old}
        # Cast to its declared schema: a column out of place fails here, not in an engine.
        scope = self.con.sql(f"SELECT * FROM {written}").to_arrow_table()
        pq.write_table(scope.cast(UPDATE_SCOPE), target)
        before = self._rows_of(source, "ids", work / "before", {})
        # Now: the same rows (linked, not copied again) with the new files.
        was = {role: [work / "before" / role / "old.parquet", *new_files[role]] for role in old}
        after = self._rows_of({}, "ids", work / "after", was)
        count = scope.num_rows
        return Touched(count, days, after, before, rows)

    def _messages_table(self) -> list[str] | None:
        """Return the files of the tree's `messages` table if it is the one the catalog
        describes (a run killed between publishing its tables and its commit leaves newer
        tables); None otherwise."""
        snapshot = Snapshot.read(self.directory.parent)
        if snapshot is None or snapshot.run_id != self.meta("run"):
            return None
        return snapshot.paths(self.directory.parent)["messages"]

    def _rows_of(
        self, files: dict[str, list[str]], ids: str, root: Path, new: dict[str, list[Path]]
    ) -> StagedInputs:
        """Copy the rows of `files` (by role; none for a role not given) whose id is in the
        table `ids`, and link the `new` files, into a staging root (`messages/`, `statuses/`)
        under `root`."""
        rows = {}
        for role, column in (("messages", "id"), ("statuses", "message_id")):
            directory = root / role
            directory.mkdir(parents=True)
            rows[role] = 0
            if role in files:
                target = literal(str(directory / "old.parquet"))
                sql = _ROWS_OF.format(column=column, ids=ids, target=target)
                (copied,) = self.con.execute(sql, {"files": files[role]}).fetchone() or (0,)
                rows[role] = int(copied)
            for path in new.get(role, ()):
                if path.name != EMPTY:
                    os.link(path, directory / path.name)
                    rows[role] += pq.ParquetFile(path).metadata.num_rows
        return StagedInputs(root / "messages", root / "statuses", rows, {})

    def tally(self, after: Path, before: Path | None, touched: Path | None, work: Path) -> Tally:
        """Write the new tallies of the conversations a run recomputes; count the tree's owners
        and participants after it.

        `after` and `before` hold the tallies (as the `conversations` table) of the touched
        messages' rows now and before (none for a full run); `touched` the conversations an
        update recomputes. Nothing in the catalog changes until `record`.
        """
        sources = [f"read_parquet({literal(str(after))})"]
        sources += [f"read_parquet({literal(str(p))})" for p in (before, touched) if p]
        updated, counts = work / "updated.parquet", work / "tallies.parquet"
        union = " UNION ".join(f"SELECT owner, participant FROM {s}" for s in sources)
        self.con.execute(_UPDATED.format(sources=f"({union})", target=literal(str(updated))))
        nothing = f"(SELECT * FROM read_parquet({literal(str(after))}) LIMIT 0)"
        was = f"read_parquet({literal(str(before))})" if before else nothing
        self.con.execute(
            _TALLY.format(before=was, target=literal(str(counts))),
            {"updated": str(updated), "after": str(after)},
        )
        tally = Tally(counts, updated, 0, 0)
        row = self.con.execute(
            "SELECT count(DISTINCT owner), count(*) FROM "
            f"(SELECT DISTINCT owner, participant FROM {self._merged(tally)})"
        ).fetchone()
        owners, participants = row or (0, 0)
        return Tally(counts, updated, int(owners), int(participants))

    def _merged(self, tally: Tally) -> str:
        """The catalog's tallies with those of `tally` in place of theirs, as a relation."""
        return _MERGED.format(
            updated=literal(str(tally.updated)), counts=literal(str(tally.counts))
        )

    def write_conversations(self, tally: Tally, target: Path) -> None:
        """Write the `conversations` table as it is after this run (reporting/tables.py)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        self.con.execute(
            f"COPY (SELECT * FROM {self._merged(tally)} ORDER BY ALL) "
            f"TO {literal(str(target))} (FORMAT parquet)"
        )

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


def discard(directory: Path) -> None:
    """Remove a state store that will not be used."""
    shutil.rmtree(directory, ignore_errors=True)
