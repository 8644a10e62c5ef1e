"""How the queryable tables are cut into chunks of days (reporting/tables.py)."""

from __future__ import annotations

from datetime import date, datetime, time
from unittest.mock import patch

import duckdb

from convsum.reporting import tables

# Messages per day: 3 on the 1st, 1 on the 2nd, 5 on the 4th (a day larger than a chunk), 1 on
# the 5th and 2 on the 6th.
DAYS = {date(2024, 1, 1): 3, date(2024, 1, 2): 1, date(2024, 1, 4): 5, date(2024, 1, 5): 1,
        date(2024, 1, 6): 2}  # fmt: skip


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE m (created TIMESTAMP)")
    con.executemany(
        "INSERT INTO m VALUES (?)",
        [[datetime.combine(day, time(hour))] for day, n in DAYS.items() for hour in range(n)],
    )
    con.execute("CREATE VIEW derived_messages AS SELECT * FROM m")
    return con


def test_chunks_take_days_in_order_up_to_the_budget_and_a_larger_day_alone() -> None:
    # A budget of 4 messages a chunk: 2 * 400 bytes * 4.
    with patch.object(tables, "_BYTES_PER_MESSAGE", 400):
        chunks = tables._chunks(_con(), None, 2 * 400 * 4)
    d = sorted(DAYS)
    assert chunks == [[d[0], d[1]], [d[2]], [d[3], d[4]]]


def test_chunks_of_an_update_hold_only_its_days_and_a_big_budget_takes_them_at_once() -> None:
    d = sorted(DAYS)
    assert tables._chunks(_con(), frozenset({d[4], d[0]}), 2**40) == [[d[0], d[4]]]
    assert tables._chunks(_con(), frozenset(), 2**40) == []
    assert tables._chunks(_con(), None, 1) == [[day] for day in d]
