"""SPEC section 3, one focused case each, through the whole job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from convsum.engines.base import StatusOrder, status_order
from convsum.publish.paths import conversation_file, conversation_path, page_file
from tests.conftest import RunTree, Tree, at, message, status


@pytest.fixture(params=["packed", "general"])
def ranked_tree(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, run_tree: RunTree
) -> RunTree:
    """`run_tree`, with each engine's latest status taken in one of its two forms: the packed
    integer (what this data allows), or the general sort or tuple-keyed arg_max (what data too
    wide for the integer takes)."""
    orders: list[StatusOrder | None] = []
    chosen: Callable[[Path], StatusOrder | None] = (
        status_order if request.param == "packed" else lambda _statuses: None
    )

    def order(statuses: Path) -> StatusOrder | None:
        orders.append(chosen(statuses))
        return orders[-1]

    for engine in ("duckdb", "polars"):
        monkeypatch.setattr(f"convsum.engines.{engine}.status_order", order)

    def run(*args: Any, **config: Any) -> Tree:
        tree = run_tree(*args, **config)
        assert orders, "the engine took no latest-status order"
        assert all((o is None) == (request.param == "general") for o in orders)
        orders.clear()
        return tree

    return run


def _summary(
    participant: str, mt: dict[str, object], mo: dict[str, object], total: int, sms: int
) -> dict[str, object]:
    return {
        "participant": participant,
        "totalMessageCount": total,
        "totalSmsCount": sms,
        "mobileTerminatedMessages": mt,
        "mobileOriginatedMessages": mo,
    }


def test_semantics_direction_buckets_follow_the_message_not_the_side(run_tree: RunTree) -> None:
    tree = run_tree(
        [
            message("m1", sender="Acme", recipient="4670", direction="mt", segments=2),
            message("m2", sender="4670", recipient="Acme", direction="mo", segments=1),
        ],
        [status("m1", 201), status("m2", 201)],
    )
    one = {"201": {"messages": 1, "sms": 2}}
    assert tree.summary("4670") == _summary("4670", one, {"201": {"messages": 1, "sms": 1}}, 2, 3)
    assert tree.summary("Acme") == _summary("Acme", one, {"201": {"messages": 1, "sms": 1}}, 2, 3)
    assert tree.ids("4670", "mt") == ["m1"]
    assert tree.ids("4670", "mo") == ["m2"]


def test_semantics_sender_equal_to_recipient_counts_once(run_tree: RunTree) -> None:
    tree = run_tree(
        [message("m1", sender="4670", recipient="4670", segments=3)], [status("m1", 201)]
    )
    assert tree.summary("4670") == _summary("4670", {"201": {"messages": 1, "sms": 3}}, {}, 1, 3)
    assert tree.ids("4670") == ["m1"]


def test_semantics_tie_final_beats_info(ranked_tree: RunTree) -> None:
    tree = ranked_tree([message("m1")], [status("m1", 201, at(5)), status("m1", 111, at(5))])
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {"201": {"messages": 1, "sms": 1}}


def test_semantics_tie_between_finals_takes_higher_code(ranked_tree: RunTree) -> None:
    tree = ranked_tree(
        [message("m1")],
        [status("m1", 402, at(5)), status("m1", 201, at(5)), status("m1", 203, at(5))],
    )
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {"402": {"messages": 1, "sms": 1}}


def test_semantics_tie_between_infos_takes_higher_code(ranked_tree: RunTree) -> None:
    tree = ranked_tree([message("m1")], [status("m1", 111, at(5)), status("m1", 114, at(5))])
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {"114": {"messages": 1, "sms": 1}}


def test_semantics_identical_duplicate_statuses_count_once(run_tree: RunTree) -> None:
    tree = run_tree([message("m1")], [status("m1", 201, at(5))] * 3)
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {"201": {"messages": 1, "sms": 1}}
    assert tree.report.data.duplicate_statuses == 2


def test_semantics_later_info_after_final_wins(ranked_tree: RunTree) -> None:
    tree = ranked_tree([message("m1")], [status("m1", 201, at(5)), status("m1", 111, at(9))])
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {"111": {"messages": 1, "sms": 1}}
    assert tree.messages("Acme")[0]["statuses"] == [
        {"code": 111, "duration": 0, "created": "2024-01-01T12:00:09Z"}
    ]


def test_semantics_latest_status_is_rendered_with_milliseconds(run_tree: RunTree) -> None:
    tree = run_tree([message("m1")], [status("m1", 201, at(1.25), duration=7)])
    assert tree.messages("Acme")[0]["statuses"] == [
        {"code": 201, "duration": 7, "created": "2024-01-01T12:00:01.250Z"}
    ]


def test_semantics_message_without_status_counts_only_in_totals(run_tree: RunTree) -> None:
    tree = run_tree([message("m1", segments=2), message("m2")], [status("m2", 201)])
    assert tree.summary("Acme") == _summary("Acme", {"201": {"messages": 1, "sms": 1}}, {}, 2, 3)
    assert tree.messages("Acme")[0]["statuses"] == []
    assert tree.report.data.messages_without_status == 1


def test_semantics_orphan_statuses_change_nothing_but_the_report(run_tree: RunTree) -> None:
    plain = run_tree([message("m1")], [status("m1", 201)])
    with_orphans = run_tree(
        [message("m1")], [status("m1", 201), status("ghost", 402), status("ghost", 101)]
    )
    assert with_orphans.summary("Acme") == plain.summary("Acme")
    assert with_orphans.messages("Acme") == plain.messages("Acme")
    assert with_orphans.report.data.orphan_statuses == 2
    assert plain.report.data.orphan_statuses == 0


def test_semantics_duplicate_message_ids_keep_greatest_modified(run_tree: RunTree) -> None:
    rows = [
        message("m1", body="old", modified=at(10), segments=1),
        message("m1", body="new", modified=at(20), segments=4),
        message("m1", body="older", modified=None, segments=2),
    ]
    tree = run_tree(rows, [status("m1", 201)])
    assert [m["body"] for m in tree.messages("Acme")] == ["new"]
    assert tree.summary("Acme")["totalSmsCount"] == 4
    assert tree.report.data.duplicate_messages == 2


def test_semantics_duplicate_message_tie_is_independent_of_row_order(run_tree: RunTree) -> None:
    a = message("m1", body="a", modified=at(10))
    b = message("m1", body="b", modified=at(10))
    first = run_tree([a, b], [status("m1", 201)])
    second = run_tree([b, a], [status("m1", 201)])
    assert first.messages("Acme") == second.messages("Acme")
    assert len(first.messages("Acme")) == 1


def test_semantics_unknown_codes_are_kept_and_counted(run_tree: RunTree) -> None:
    tree = run_tree(
        [message("m1"), message("m2", created=at(1))], [status("m1", 599), status("m2", 150)]
    )
    assert tree.summary("Acme")["mobileTerminatedMessages"] == {
        "150": {"messages": 1, "sms": 1},
        "599": {"messages": 1, "sms": 1},
    }
    assert tree.report.data.unknown_codes == {"150": 1, "599": 1}


def test_semantics_map_keys_sort_numerically(run_tree: RunTree) -> None:
    rows = [message(f"m{c}", created=at(c)) for c in (1000, 99, 201)]
    tree = run_tree(rows, [status("m1000", 1000), status("m99", 99), status("m201", 201)])
    assert list(tree.summary("Acme")["mobileTerminatedMessages"]) == ["99", "201", "1000"]


def test_semantics_owners_are_kept_apart(run_tree: RunTree) -> None:
    rows = [
        message("a1", owner="acme", recipient="4670", segments=1),
        message("b1", owner="bank", recipient="4670", segments=5, body="secret"),
    ]
    tree = run_tree(rows, [status("a1", 201), status("b1", 402)])
    assert tree.summary("4670", owner="acme") == _summary(
        "4670", {"201": {"messages": 1, "sms": 1}}, {}, 1, 1
    )
    assert tree.summary("4670", owner="bank") == _summary(
        "4670", {"402": {"messages": 1, "sms": 5}}, {}, 1, 5
    )
    assert tree.ids("4670", owner="acme") == ["a1"]
    assert tree.ids("4670", owner="bank") == ["b1"]


def test_semantics_same_id_under_two_owners_are_two_messages(run_tree: RunTree) -> None:
    rows = [message("x", owner="acme", body="mine"), message("x", owner="bank", body="theirs")]
    tree = run_tree(rows, [status("x", 201)])
    assert [m["body"] for m in tree.messages("Acme", owner="acme")] == ["mine"]
    assert [m["body"] for m in tree.messages("Acme", owner="bank")] == ["theirs"]
    assert tree.report.data.duplicate_messages == 0


def test_semantics_lists_are_sorted_by_created_then_id(run_tree: RunTree) -> None:
    rows = [
        message("b", created=at(5)),
        message("a", created=at(5)),
        message("c", created=at(1)),
        message("d", created=at(9), direction="mo", sender="4670", recipient="Acme"),
    ]
    tree = run_tree(rows, [])
    assert tree.ids("Acme") == ["c", "a", "b", "d"]
    assert tree.ids("Acme", "mt") == ["c", "a", "b"]
    assert tree.ids("Acme", "mo") == ["d"]


def test_semantics_pages_split_at_page_size(run_tree: RunTree) -> None:
    rows = [message(f"m{i:03d}", created=at(i)) for i in range(23)]
    tree = run_tree(rows, [], page_size=10, desc_pages=True)
    assert [len(p) for p in tree.pages("Acme")] == [10, 10, 3]
    assert tree.ids("Acme") == [f"m{i:03d}" for i in range(23)]
    desc = [m["id"] for page in tree.pages("Acme", order="desc") for m in page]
    assert desc == [f"m{i:03d}" for i in reversed(range(23))]
    assert [len(p) for p in tree.pages("Acme", order="desc")] == [10, 10, 3]


def test_semantics_message_object_shape_and_bytes(run_tree: RunTree) -> None:
    row = message(
        "m1",
        batchId="b7",
        sender="Shop1",
        recipient="46734487112",
        body='Hej "där" \\ ☃\n\x1f',
        segments=2,
        priority=None,
        price=0.0725,
        created=at(1.5),
        modified=at(2),
        reference="ref-1",
    )
    tree = run_tree(
        [row], [status("m1", 111, at(3), duration=None), status("m1", 201, at(4), duration=12)]
    )
    expected = {
        "id": "m1",
        "batchId": "b7",
        "owner": "acme",
        "sender": "Shop1",
        "recipient": "46734487112",
        "body": 'Hej "där" \\ ☃\n\x1f',
        "direction": "mt",
        "segments": 2,
        "type": "SMS",
        "datacoding": "gsm",
        "priority": None,
        "price": 0.0725,
        "currency": "SEK",
        "statuses": [{"code": 201, "duration": 12, "created": "2024-01-01T12:00:04Z"}],
        "modified": "2024-01-01T12:00:02Z",
        "reference": "ref-1",
        "mcc": "240",
        "mnc": "07",
        "created": "2024-01-01T12:00:01.500Z",
    }
    conversation = conversation_path("acme", "Shop1")
    page = tree.api / conversation_file(conversation, page_file(50, "all", "asc", 0))
    assert page.read_bytes() == orjson.dumps([expected])


def test_semantics_tie_final_beats_higher_non_final_code(ranked_tree: RunTree) -> None:
    rows = [message("m1"), message("m2", created=at(1)), message("m3", created=at(2))]
    statuses = [
        *(status("m1", code, at(5)) for code in (301, 201, 610)),
        *(status("m2", code, at(5)) for code in (999, 402)),
        *(status("m3", code, at(5)) for code in (510, 610)),
    ]
    tree = ranked_tree(rows, statuses)
    one = {"messages": 1, "sms": 1}
    assert tree.summary("Acme") == _summary("Acme", {"201": one, "402": one, "510": one}, {}, 3, 3)


def test_semantics_tie_on_code_takes_longer_duration(ranked_tree: RunTree) -> None:
    tree = ranked_tree(
        [message("m1")],
        [status("m1", 201, at(5), duration=7), status("m1", 201, at(5), duration=30)],
    )
    assert [m["statuses"] for m in tree.messages("Acme")] == [
        [{"code": 201, "duration": 30, "created": "2024-01-01T12:00:05Z"}]
    ]


def test_semantics_tie_on_code_null_duration_loses(ranked_tree: RunTree) -> None:
    tree = ranked_tree(
        [message("m1")],
        [status("m1", 201, at(5), duration=None), status("m1", 201, at(5), duration=0)],
    )
    assert [m["statuses"] for m in tree.messages("Acme")] == [
        [{"code": 201, "duration": 0, "created": "2024-01-01T12:00:05Z"}]
    ]


def test_semantics_duplicate_message_tie_takes_greater_content(run_tree: RunTree) -> None:
    rows = [
        message("m1", body="a", modified=at(10)),
        message("m1", body="c", modified=at(10)),
        message("m1", body="b", modified=at(10)),
    ]
    tree = run_tree(rows, [])
    assert [m["body"] for m in tree.messages("Acme")] == ["c"]


def test_semantics_duplicate_message_without_modified_takes_greater_content(
    run_tree: RunTree,
) -> None:
    rows = [
        message("m1", body="b", modified=None),
        message("m1", body="c", modified=None),
        message("m1", body="a", modified=None),
    ]
    tree = run_tree(rows, [])
    assert [m["body"] for m in tree.messages("Acme")] == ["c"]


def test_semantics_descending_lists_reverse_equal_created(run_tree: RunTree) -> None:
    rows = [
        message("b", created=at(5)),
        message("c", created=at(5), direction="mo", sender="4670", recipient="Acme"),
        message("a", created=at(5)),
        message("d", created=at(1), direction="mo", sender="4670", recipient="Acme"),
    ]
    tree = run_tree(rows, [], desc_pages=True)
    descending = {
        name: [m["id"] for page in tree.pages("Acme", name, order="desc") for m in page]
        for name in ("all", "mt", "mo")
    }
    assert descending == {"all": ["c", "b", "a", "d"], "mt": ["b", "a"], "mo": ["c", "d"]}


def test_semantics_status_log_applies_to_every_owner_of_the_id(run_tree: RunTree) -> None:
    rows = [message("x", owner="acme"), message("x", owner="bank")]
    tree = run_tree(rows, [status("x", 402, at(5))])
    expected = [[{"code": 402, "duration": 0, "created": "2024-01-01T12:00:05Z"}]]
    assert [m["statuses"] for m in tree.messages("Acme", owner="acme")] == expected
    assert [m["statuses"] for m in tree.messages("Acme", owner="bank")] == expected


def test_semantics_nested_statuses_belong_to_their_owner_only(run_tree: RunTree) -> None:
    rows = [
        message("x", owner="acme", statuses=[{"code": 201, "duration": 4, "created": at(5)}]),
        message("x", owner="bank", statuses=[]),
    ]
    tree = run_tree(rows, None)
    assert [m["statuses"] for m in tree.messages("Acme", owner="acme")] == [
        [{"code": 201, "duration": 4, "created": "2024-01-01T12:00:05Z"}]
    ]
    assert [m["statuses"] for m in tree.messages("Acme", owner="bank")] == [[]]
    assert tree.report.data.orphan_statuses == 0
