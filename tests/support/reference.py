"""A small, obviously correct pure-Python reading of SPEC section 3, to check the engines against.

Input rows are in the API's column names with aware UTC datetimes (as `tests.conftest.message`
and `status` build them). Output: each conversation's summary object and its lists, as parsed
JSON would give them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson

FINAL_GROUPS = (2, 4, 5)
Key = tuple[str, str]  # (owner, participant)


def iso(value: datetime | None) -> str | None:
    """Format a time as the API does: whole seconds, milliseconds only when not zero."""
    if value is None:
        return None
    millis = value.microsecond // 1000
    # strftime's %Y does not pad years before 1000 (year 1 would be "1").
    text = f"{value.year:04d}-{value.strftime('%m-%dT%H:%M:%S')}"
    return text + (f".{millis:03d}" if millis else "") + "Z"


def _message_object(row: dict[str, Any], statuses: list[dict[str, Any]]) -> dict[str, Any]:
    price = row.get("price")
    return {
        "id": row["id"],
        "batchId": row.get("batchId"),
        "owner": row["owner"],
        "sender": row["sender"],
        "recipient": row["recipient"],
        "body": row.get("body"),
        "direction": row["direction"],
        "segments": row["segments"],
        "type": row.get("type"),
        "datacoding": row.get("datacoding"),
        "priority": row.get("priority"),
        "price": price if price is not None and math.isfinite(price) else None,
        "currency": row.get("currency"),
        "statuses": statuses,
        "modified": iso(row.get("modified")),
        "reference": row.get("reference"),
        "mcc": row.get("mcc"),
        "mnc": row.get("mnc"),
        "created": iso(row["created"]),
    }


def _content(row: dict[str, Any]) -> str:
    """The message's rendered text without its statuses value: the last tie-break."""
    return (
        orjson.dumps(_message_object(row, [])).decode().replace('"statuses":[]', '"statuses":', 1)
    )


def deduplicate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (owner, id): greatest `modified` (none loses), then the greatest content."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in messages:
        key = (row["owner"], row["id"])
        rank = (row.get("modified") is not None, row.get("modified") or datetime.min, _content(row))
        if key not in best or rank > best[key]["_rank"]:
            best[key] = {**row, "_rank": rank}
    return [{k: v for k, v in row.items() if k != "_rank"} for row in best.values()]


def latest_status(row: dict[str, Any], statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The message's latest status row, or None."""
    mine = [
        s
        for s in statuses
        if s["messageId"] == row["id"] and s.get("owner") in (None, row["owner"])
    ]
    if not mine:
        return None

    def rank(s: dict[str, Any]) -> tuple[Any, ...]:
        has_duration = s["duration"] is not None
        duration = s["duration"] if has_duration else 0
        return (s["created"], s["code"] // 100 in FINAL_GROUPS, s["code"], has_duration, duration)

    return max(mine, key=rank)


def conversations(
    messages: list[dict[str, Any]], statuses: list[dict[str, Any]]
) -> tuple[dict[Key, dict[str, Any]], dict[tuple[str, str, str], list[dict[str, Any]]]]:
    """Return every conversation's summary and its all/mt/mo lists (ascending)."""
    members: dict[Key, list[tuple[dict[str, Any], dict[str, Any] | None]]] = defaultdict(list)
    for row in deduplicate(messages):
        latest = latest_status(row, statuses)
        for participant in {row["sender"], row["recipient"]}:
            members[(row["owner"], participant)].append((row, latest))
    summaries, lists = {}, {}
    for (owner, participant), rows in members.items():
        rows.sort(key=lambda pair: (pair[0]["created"], pair[0]["id"]))
        maps: dict[str, dict[int, dict[str, int]]] = {"mt": {}, "mo": {}}
        for row, latest in rows:
            if latest is not None:
                cell = maps[row["direction"]].setdefault(latest["code"], {"messages": 0, "sms": 0})
                cell["messages"] += 1
                cell["sms"] += row["segments"]
        summaries[(owner, participant)] = {
            "participant": participant,
            "totalMessageCount": len(rows),
            "totalSmsCount": sum(row["segments"] for row, _ in rows),
            "mobileTerminatedMessages": {str(c): maps["mt"][c] for c in sorted(maps["mt"])},
            "mobileOriginatedMessages": {str(c): maps["mo"][c] for c in sorted(maps["mo"])},
        }
        rendered = [
            (
                row["direction"],
                _message_object(
                    row,
                    []
                    if latest is None
                    else [
                        {
                            "code": latest["code"],
                            "duration": latest["duration"],
                            "created": iso(latest["created"]),
                        }
                    ],
                ),
            )
            for row, latest in rows
        ]
        lists[(owner, participant, "all")] = [m for _, m in rendered]
        for direction in ("mt", "mo"):
            lists[(owner, participant, direction)] = [m for d, m in rendered if d == direction]
    return summaries, lists


OUTCOMES = {201: "delivered", 202: "expired", 203: "canceled"}
FINAL_OUTCOMES = {2: "other_final", 4: "rejected", 5: "error"}


def outcome(code: int | None) -> str:
    """The outcome of a latest status code (the `messages` table's `outcome`)."""
    if code is None:
        return "no_status"
    return OUTCOMES.get(code) or FINAL_OUTCOMES.get(code // 100, "pending")


def tables(
    messages: list[dict[str, Any]], statuses: list[dict[str, Any]]
) -> dict[str, list[tuple[Any, ...]]]:
    """Return the rows the queryable tables hold, each table's rows sorted.

    messages: (owner, id, sender, recipient, direction, segments, created, status_code,
    status_created, status_duration, outcome, final_created); statuses: (owner, message_id,
    code, created, duration); conversations: (owner, participant, direction, status_code,
    messages, sms).
    """
    message_rows, status_rows = [], set()
    counts: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for row in deduplicate(messages):
        mine = [
            s
            for s in statuses
            if s["messageId"] == row["id"] and s.get("owner") in (None, row["owner"])
        ]
        latest = latest_status(row, statuses)
        finals = [s["created"] for s in mine if s["code"] // 100 in FINAL_GROUPS]
        code = None if latest is None else latest["code"]
        message_rows.append(
            (
                row["owner"], row["id"], row["sender"], row["recipient"], row["direction"],
                row["segments"], row["created"], code,
                None if latest is None else latest["created"],
                None if latest is None else latest["duration"],
                outcome(code), min(finals, default=None),
            )
        )  # fmt: skip
        status_rows.update(
            (row["owner"], s["messageId"], s["code"], s["created"], s["duration"]) for s in mine
        )
        for participant in {row["sender"], row["recipient"]}:
            cell = counts[(row["owner"], participant, row["direction"], code)]
            cell[0] += 1
            cell[1] += row["segments"]
    return {
        "messages": sorted(message_rows, key=repr),
        "statuses": sorted(status_rows, key=repr),
        "conversations": sorted(((*k, n, sms) for k, (n, sms) in counts.items()), key=repr),
    }
