"""The conversation tallies: per conversation, direction and latest status code, the messages and
SMS that its summary shows. The catalog keeps the tree's; a run adds what changed: the touched
messages' tallies now, less theirs before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convsum.incremental.catalog import Catalog
from convsum.sql import literal

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
class Tally:
    """The new conversation tallies of a run (`merge`)."""

    counts: Path  # (owner, participant, direction, status_code, messages, sms) of `updated`
    updated: Path  # (owner, participant) of every conversation recomputed
    owners: int  # in the whole tree after this run
    participants: int


def merge(
    catalog: Catalog, after: Path, before: Path | None, touched: Path | None, work: Path
) -> Tally:
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
    catalog.con.execute(_UPDATED.format(sources=f"({union})", target=literal(str(updated))))
    nothing = f"(SELECT * FROM read_parquet({literal(str(after))}) LIMIT 0)"
    was = f"read_parquet({literal(str(before))})" if before else nothing
    catalog.con.execute(
        _TALLY.format(before=was, target=literal(str(counts))),
        {"updated": str(updated), "after": str(after)},
    )
    row = catalog.con.execute(
        "SELECT count(DISTINCT owner), count(*) FROM "
        f"(SELECT DISTINCT owner, participant FROM {_merged(updated, counts)})"
    ).fetchone()
    owners, participants = row or (0, 0)
    return Tally(counts, updated, int(owners), int(participants))


def _merged(updated: Path, counts: Path) -> str:
    """The catalog's tallies with the `counts` of the conversations `updated` in place of
    theirs, as a relation."""
    return _MERGED.format(updated=literal(str(updated)), counts=literal(str(counts)))


def write_conversations(catalog: Catalog, tally: Tally, target: Path) -> None:
    """Write the `conversations` table as it is after this run (reporting/tables.py)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    catalog.con.execute(
        f"COPY (SELECT * FROM {_merged(tally.updated, tally.counts)} ORDER BY ALL) "
        f"TO {literal(str(target))} (FORMAT parquet)"
    )


def files_to_write(catalog: Catalog, tally: Tally, page_size: int) -> tuple[int, int]:
    """Return how many summaries a run writes for `tally` (one per conversation it recomputes
    that still has messages), and how many pages of one order a full run writes (a page per
    `page_size` messages of each list: the whole conversation, mt and mo; none for an empty
    list). The live line's totals."""
    row = catalog.con.execute(
        f"""
        SELECT count(*), coalesce(sum(ceil(every / $size) + ceil(mt / $size)
            + ceil(mo / $size)), 0)::BIGINT
        FROM (
            SELECT sum(messages) AS every,
                coalesce(sum(messages) FILTER (direction = 'mt'), 0) AS mt,
                coalesce(sum(messages) FILTER (direction = 'mo'), 0) AS mo
            FROM read_parquet({literal(str(tally.counts))}) GROUP BY owner, participant
        )
        """,
        {"size": page_size},
    ).fetchone()
    summaries, pages = row or (0, 0)
    return int(summaries), int(pages)
