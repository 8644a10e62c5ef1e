"""SPEC section 3's rules that more than one SQL statement applies, each written once.

The DuckDB engine (and so the Spark engine's tasks), the state store's update planner and the
queryable tables build their SQL from these fragments. The Polars engine writes the same rules as
its own expressions: the independent second computation that the parity tests hold, with
DuckDB's, to the pure-Python reference.
"""

from __future__ import annotations

from convsum.codes import FINAL_GROUPS


def status_of(status: str, message: str) -> str:
    """Whether the status row `status` belongs to the message row `message` (SQL aliases): by
    its message id and owner, or, when it names no owner, to every message of its id."""
    return (
        f"{status}.message_id = {message}.id "
        f"AND ({status}.owner IS NULL OR {status}.owner = {message}.owner)"
    )


def is_final(code: str) -> str:
    """Whether the status code `code` ends a message's life (its group is 2xx, 4xx or 5xx): on
    equal timestamps a final code is the latest status."""
    return f"({code} // 100 IN {FINAL_GROUPS})"


def memberships(rows: str, columns: str) -> str:
    """Each row of the relation `rows` (with owner, sender, recipient) once for each conversation
    it belongs to, as (owner, participant, `columns`): its sender's and its recipient's, once
    when they are the same."""
    return (
        f"SELECT owner, sender AS participant, {columns} FROM {rows} "
        f"UNION ALL SELECT owner, recipient, {columns} FROM {rows} WHERE recipient <> sender"
    )


def page_start(position: str, size: str = "$size") -> str:
    """The position of the first row of the page that holds the row at `position` (from 0)."""
    return f"({position}) // {size} * {size}"
