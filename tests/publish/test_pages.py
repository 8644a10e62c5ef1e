"""Cutting the sorted conversation stream into pages, whatever the batch boundaries."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from convsum.engines.base import CONVERSATION_SCHEMA
from convsum.publish.pages import Page, conversation_pages

Row = tuple[str, str, str]  # owner, participant, direction


def _stream(rows: list[Row], batch_rows: int) -> list[pa.RecordBatch]:
    """Build a CONVERSATION_SCHEMA stream of `rows` (already in list order)."""
    pos_all: dict[tuple[str, str], int] = {}
    pos_dir: dict[tuple[str, str, str], int] = {}
    columns: dict[str, list[object]] = {name: [] for name in CONVERSATION_SCHEMA.names}
    for i, (owner, participant, direction) in enumerate(rows):
        a = pos_all.setdefault((owner, participant), 0)
        d = pos_dir.setdefault((owner, participant, direction), 0)
        pos_all[(owner, participant)] += 1
        pos_dir[(owner, participant, direction)] += 1
        for name, value in zip(
            CONVERSATION_SCHEMA.names,
            (
                owner,
                participant,
                direction,
                a,
                d,
                "," + json.dumps({"n": i}, separators=(",", ":")),
            ),
            strict=True,
        ):
            columns[name].append(value)
    table = pa.Table.from_pydict(columns, schema=CONVERSATION_SCHEMA)
    return table.to_batches(max_chunksize=batch_rows)


def _expected(rows: list[Row], page_size: int) -> set[Page]:
    lists: dict[tuple[str, str, str], list[int]] = {}
    for i, (owner, participant, direction) in enumerate(rows):
        lists.setdefault((owner, participant, "all"), []).append(i)
        lists.setdefault((owner, participant, direction), []).append(i)
    pages = set()
    for (owner, participant, name), ids in lists.items():
        for start in range(0, len(ids), page_size):
            body = json.dumps(
                [{"n": i} for i in ids[start : start + page_size]], separators=(",", ":")
            )
            pages.add(Page(owner, participant, name, start, body.encode()))
    return pages


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["o1", "o2"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.sampled_from(["mt", "mo"]),
    ),
    max_size=60,
).map(sorted)


@settings(max_examples=200)
@given(rows=rows_strategy, page_size=st.sampled_from([1, 2, 5, 10]), batch_rows=st.integers(1, 70))
def test_pages_match_reference_for_any_batch_split(
    rows: list[Row], page_size: int, batch_rows: int
) -> None:
    pages = list(conversation_pages(_stream(rows, batch_rows), page_size))
    assert set(pages) == _expected(rows, page_size)
    assert len(pages) == len(set(pages))


def test_pages_are_bare_json_arrays() -> None:
    rows = [("o", "p", "mt")] * 3
    pages = list(conversation_pages(_stream(rows, 2), page_size=2))
    assert [(p.list_name, p.start, json.loads(p.body)) for p in pages] == [
        ("all", 0, [{"n": 0}, {"n": 1}]),
        ("mt", 0, [{"n": 0}, {"n": 1}]),
        ("all", 2, [{"n": 2}]),
        ("mt", 2, [{"n": 2}]),
    ]
