"""Hypothesis strategies for random message and status logs, biased towards the hard cases.

Few ids, owners, participants and times, so that duplicates, equal timestamps, shared
participants, sender = recipient and odd names are common; duplicate messages often share
`modified` (or have none), so that their content decides. Statuses come in groups of one message
and one `created`, so that latest-status ties are the rule: final codes against higher codes of
other groups (201 against 301, 610 or 999), and equal codes with different durations (none,
zero, positive). They include orphans ("ghost") and identical duplicate rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.conftest import T0

OWNERS = ["acme", "bank", "../x"]
PARTICIPANTS = ["4670", "4671", "Shop1", "a/b", "日本", "..", "summary", "mt"]
IDS = [f"m{i}" for i in range(10)]
# The last is the next UTC day: the tables are written by day (and in chunks of days).
TIMES = [T0 + timedelta(seconds=s) for s in (0, 0.25, 1, 2, 86_400)]
# Known codes of every group, unknown ones in final groups (510) and in others above 200, and the
# widest a code and a duration can be: with them, the latest-status order no longer fits one
# 128-bit integer (engines/base.py: StatusOrder), so both of the engines' paths are exercised.
WIDEST = 2**63 - 1
CODES = [101, 102, 111, 201, 202, 203, 301, 402, 403, 510, 610, 999, WIDEST, -WIDEST - 1]
HIGH_NON_FINAL = [301, 610, 999]
DURATIONS = [None, 0, 1, 3, WIDEST]  # the reader refuses negative durations

_message_rows = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(IDS),
            "owner": st.sampled_from(OWNERS),
            "sender": st.sampled_from(PARTICIPANTS),
            "recipient": st.sampled_from(PARTICIPANTS),
            "direction": st.sampled_from(["mt", "mo"]),
            "segments": st.integers(1, 3),
            "created": st.sampled_from(TIMES),
            "modified": st.none() | st.sampled_from(TIMES[:2]),
            "body": st.none() | st.text(max_size=4),
            "price": st.none() | st.sampled_from([0.05, 0.0725, 1e-7, 2.5e17]),
        }
    ),
    max_size=26,
)


def _with_revisions(rows: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Add a few other versions of some rows: same owner and id, often the same `modified`."""
    if not rows:
        return st.just(rows)
    revision = st.builds(
        lambda row, changes: {**row, **changes},
        st.sampled_from(rows),
        st.fixed_dictionaries(
            {
                "modified": st.none() | st.sampled_from(TIMES[:2]),
                "body": st.none() | st.text(max_size=4),
                "segments": st.integers(1, 3),
            }
        ),
    )
    return st.lists(revision, max_size=4).map(lambda extra: rows + extra)


messages_strategy = _message_rows.flatmap(_with_revisions)


def _status_group(
    message_id: str,
    created: datetime,
    first: tuple[int, int | None],
    more: list[tuple[int | None, int | None]],
) -> list[dict[str, Any]]:
    """Status rows of one message at one `created`: a tie to break.

    The first row is (code, duration); each further row has another code, or (None) the first's
    code with a duration of its own.
    """
    code = first[0]
    return [
        {"messageId": message_id, "code": c, "created": created, "duration": duration}
        for c, duration in [first, *((code if c is None else c, d) for c, d in more)]
    ]


def statuses_of(ids: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Status logs of the messages `ids`, in groups of equal `created`, with some duplicates."""
    durations = st.sampled_from(DURATIONS)
    other_code = st.none() | st.sampled_from(CODES) | st.sampled_from(HIGH_NON_FINAL)
    groups = st.builds(
        _status_group,
        st.sampled_from(ids),
        st.sampled_from(TIMES),
        st.tuples(st.sampled_from(CODES), durations),
        st.lists(st.tuples(other_code, durations), max_size=2),
    )
    return (
        st.lists(groups, max_size=12)
        .map(lambda groups: [row for group in groups for row in group])
        .flatmap(lambda rows: st.just(rows + rows[: len(rows) // 4]))  # some identical duplicates
    )


statuses_strategy = statuses_of([*IDS, "ghost"])
# A message log and a status log about its messages (and orphans): every tie is a real one.
logs_strategy = messages_strategy.flatmap(
    lambda messages: st.tuples(
        st.just(messages), statuses_of([*sorted({m["id"] for m in messages}), "ghost"])
    )
)
