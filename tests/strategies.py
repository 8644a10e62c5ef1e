"""Hypothesis strategies for random message and status logs, biased towards the hard cases.

Few ids, owners, participants and times, so that duplicates, equal timestamps, shared
participants, sender = recipient and odd names are common; statuses include orphans ("ghost")
and identical duplicate rows.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import strategies as st

from tests.conftest import T0

OWNERS = ["acme", "bank", "../x"]
PARTICIPANTS = ["4670", "4671", "Shop1", "a/b", "日本", "..", "summary", "mt"]
IDS = [f"m{i}" for i in range(10)]
TIMES = [T0 + timedelta(seconds=s) for s in (0, 0.25, 1, 2)]

messages_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(IDS),
            "owner": st.sampled_from(OWNERS),
            "sender": st.sampled_from(PARTICIPANTS),
            "recipient": st.sampled_from(PARTICIPANTS),
            "direction": st.sampled_from(["mt", "mo"]),
            "segments": st.integers(1, 3),
            "created": st.sampled_from(TIMES),
            "modified": st.none() | st.sampled_from(TIMES),
            "body": st.none() | st.text(max_size=4),
            "price": st.none() | st.sampled_from([0.05, 0.0725, 1e-7, 2.5e17]),
        }
    ),
    max_size=30,
)
statuses_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "messageId": st.sampled_from([*IDS, "ghost"]),
            "code": st.sampled_from([101, 102, 111, 201, 202, 402, 403, 510, 999]),
            "created": st.sampled_from(TIMES),
            "duration": st.none() | st.sampled_from([0, 3]),
        }
    ),
    max_size=40,
).flatmap(lambda rows: st.just(rows + rows[: len(rows) // 4]))  # some identical duplicates
