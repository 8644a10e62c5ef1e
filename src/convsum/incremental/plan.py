"""What a run does: full or incremental (`decide`), and for an incremental run what it derives
again, its update scope (`update_scope`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from convsum import __version__
from convsum.config import RunConfig
from convsum.errors import RebuildRefusedError
from convsum.incremental.catalog import EMPTY, Catalog
from convsum.inputs import Source, StagedFile, StagedInputs
from convsum.publish.paths import LAYOUT_VERSION
from convsum.reporting.tables import Snapshot
from convsum.rules import memberships, page_start, status_of
from convsum.sql import literal


def fingerprint(config: RunConfig) -> str:
    """Return what a state store must match to be added to: version, layout, output settings."""
    output = config.output_settings()
    settings = {"version": __version__, "layout": LAYOUT_VERSION, "output": output}
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What kind of run this is and which input files it reads."""

    full: bool
    reason: str
    sources: list[Source]  # every input file listed
    new: list[Source]  # those to read
    skipped: dict[str, int]


def decide(
    config: RunConfig, catalog: Catalog | None, sources: list[Source], full: bool, unreadable: bool
) -> Plan:
    """Decide between a full and an incremental run; refuse a rebuild under `rebuild = false`."""
    by_role = {"messages": 0, "statuses": 0}
    if catalog is None and not unreadable:
        return Plan(True, "no state store yet", sources, sources, by_role)
    if full:
        return Plan(True, "--full", sources, sources, by_role)
    reason = ""
    known = catalog.known() if catalog else {}
    if catalog is None:
        reason = f"the state store in {config.out} cannot be read"
    elif catalog.meta("fingerprint") != fingerprint(config):
        reason = "the output settings or the convsum version changed"
    elif Snapshot.read(catalog.directory.parent) is None:
        reason = f"the queryable tables in {config.out} cannot be read"
    else:
        listed = {source.key: source for source in sources}
        for key, was in sorted(known.items()):
            now = listed.get(key)
            if now is None:
                reason = f"{was.role} {key}: removed since it was read"
            elif (now.bytes, now.mtime_ns) != (was.bytes, was.mtime_ns):
                reason = (
                    f"{was.role} {key}: changed since it was read (size {was.bytes} -> "
                    f"{now.bytes}, mtime_ns {was.mtime_ns} -> {now.mtime_ns})"
                )
            if reason:
                break
    if reason and not config.rebuild:
        msg = f"{reason}; a full rebuild is needed and rebuild is off (run with --full)"
        raise RebuildRefusedError(msg)
    if reason:
        return Plan(True, reason, sources, sources, by_role)
    new = [source for source in sources if source.key not in known]
    for source in sources:
        if source.key in known:
            by_role[source.role] += 1
    return Plan(False, "", sources, new, by_role)


# An incremental run's update scope, written by `update_scope` for the engines
# (engines/base.py: EngineSettings.conversations): one row per conversation it recomputes.
UPDATE_SCOPE = pa.schema(
    [
        ("owner", pa.string()),
        ("participant", pa.string()),
        # The least (created, id) of its touched rows: the list before it is unchanged (null:
        # everything may have changed).
        ("since_created", pa.timestamp("us")),
        ("since_id", pa.string()),
        # The first row derived again (null: every row).
        ("cut_created", pa.timestamp("us")),
        ("cut_id", pa.string()),
        # How many rows of each list (all, mt, mo) come before the cut.
        ("base_all", pa.int64()),
        ("base_mt", pa.int64()),
        ("base_mo", pa.int64()),
    ]
)


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


@dataclass(frozen=True)
class Touched:
    """What an incremental run derives again (`update_scope`)."""

    conversations: int  # how many the update recomputes
    days: list[date]  # the UTC days of every row of the touched messages
    after: StagedInputs  # every row, old and new, of the ids that have a new row
    before: StagedInputs  # their rows as the served tree was built from them
    rows: StagedInputs | None  # the rows the tables (and lists) come from; None: every row


def update_scope(
    catalog: Catalog,
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
    new_files = {role: [catalog.directory / role / EMPTY] for role in ("messages", "statuses")}
    for f in new:
        new_files[f.source.role].append(catalog.directory / f.source.role / f.staged)
        if f.nested:
            new_files["statuses"].append(catalog.statuses / f.nested)
    new_paths = {role: [str(p) for p in files] for role, files in new_files.items()}
    catalog.con.execute(
        _TOUCHED,
        {
            "messages": str(catalog.messages / "*.parquet"),
            "new_messages": new_paths["messages"],
            "new_statuses": new_paths["statuses"],
        },
    )
    catalog.con.execute(_AFFECTED)
    days = [day for (day,) in catalog.con.execute(_DAYS).fetchall()]
    catalog.con.execute("DROP TABLE touched")
    catalog.con.execute(
        _IDS, {"new_messages": new_paths["messages"], "new_statuses": new_paths["statuses"]}
    )
    old = {role: sorted(str(p) for p in catalog.staged_files() if p.parent.name == role)
           for role in ("messages", "statuses")}  # fmt: skip
    table = _messages_table(catalog) if tuple(orders) == ("asc",) else None
    source, rows, written = old, None, "affected"
    if "desc" not in orders and (table is not None or not orders):
        context = ""
        if table is not None:
            files = ", ".join(literal(path) for path in table)
            catalog.con.execute(_OLD_ROWS.format(table=f"[{files}]"))
            catalog.con.execute(_CUTS, {"size": page_size})
            context, written = _CONTEXT_IDS, "cut"
        catalog.con.execute(
            _ROW_IDS.format(context=context), {"messages": old["messages"], "days": days}
        )
        rows = _rows_of(catalog.con, old, "row_ids", work / "rows", new_files)
        source = {role: [str(work / "rows" / role / "old.parquet")] for role in old}
    # Cast to its declared schema: a column out of place fails here, not in an engine.
    scope = catalog.con.sql(f"SELECT * FROM {written}").to_arrow_table()
    pq.write_table(scope.cast(UPDATE_SCOPE), target)
    before = _rows_of(catalog.con, source, "ids", work / "before", {})
    # Now: the same rows (linked, not copied again) with the new files.
    was = {role: [work / "before" / role / "old.parquet", *new_files[role]] for role in old}
    after = _rows_of(catalog.con, {}, "ids", work / "after", was)
    count = scope.num_rows
    return Touched(count, days, after, before, rows)


def _messages_table(catalog: Catalog) -> list[str] | None:
    """Return the files of the tree's `messages` table if it is the one the catalog
    describes (a run killed between publishing its tables and its commit leaves newer
    tables); None otherwise."""
    snapshot = Snapshot.read(catalog.directory.parent)
    if snapshot is None or snapshot.run_id != catalog.meta("run"):
        return None
    return snapshot.paths(catalog.directory.parent)["messages"]


def _rows_of(
    con: duckdb.DuckDBPyConnection,
    files: dict[str, list[str]],
    ids: str,
    root: Path,
    new: dict[str, list[Path]],
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
            (copied,) = con.execute(sql, {"files": files[role]}).fetchone() or (0,)
            rows[role] = int(copied)
        for path in new.get(role, ()):
            if path.name != EMPTY:
                os.link(path, directory / path.name)
                rows[role] += pq.ParquetFile(path).metadata.num_rows
    return StagedInputs(root / "messages", root / "statuses", rows, {})
