"""Regenerate sample_data/api_example and sample_data/demo deterministically.

Run from the repository root: `python sample_data/make_samples.py` (or `make samples`).
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
EPOCH = datetime(2018, 10, 1, 8, 0, tzinfo=UTC)


def _message(
    rng: random.Random,
    owner: str,
    sender: str,
    recipient: str,
    direction: str,
    created: datetime,
    segments: int,
    number: int,
) -> dict[str, object]:
    return {
        "id": f"{owner}-{number:06d}",
        "batchId": f"b{number // 25:05d}" if direction == "mt" else None,
        "owner": owner,
        "sender": sender,
        "recipient": recipient,
        "body": f"Message {number}: " + "x" * (150 * segments - 20),
        "direction": direction,
        "segments": segments,
        "type": "SMS",
        "datacoding": "gsm",
        "priority": 1 if direction == "mt" else None,
        "price": 0.0725 * segments if direction == "mt" else 0.0,
        "currency": "SEK",
        "created": created,
        "modified": created + timedelta(seconds=rng.randint(1, 600)),
        "reference": f"ref{number}" if rng.random() < 0.3 else None,
        "mcc": "240",
        "mnc": "07",
    }


def _status(
    message_id: str, code: int, created: datetime, duration: int | None = 0
) -> dict[str, object]:
    return {"messageId": message_id, "code": code, "created": created, "duration": duration}


def _chain(rng: random.Random, message: dict[str, object], final: int) -> list[dict[str, object]]:
    created = message["created"]
    assert isinstance(created, datetime)
    steps = {101: [101], 102: [101, 102]}.get(final, [101, 102, 111, final])
    rows, at = [], created
    for code in steps:
        at = at + timedelta(seconds=rng.randint(1, 90), milliseconds=rng.choice([0, 0, 250, 7]))
        rows.append(_status(str(message["id"]), code, at, rng.randint(0, 5) if code >= 200 else 0))
    return rows


def _write(rows: list[dict[str, object]], path: Path, schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


MESSAGE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("batchId", pa.string()),
        ("owner", pa.string()),
        ("sender", pa.string()),
        ("recipient", pa.string()),
        ("body", pa.string()),
        ("direction", pa.string()),
        ("segments", pa.int32()),
        ("type", pa.string()),
        ("datacoding", pa.string()),
        ("priority", pa.int32()),
        ("price", pa.float64()),
        ("currency", pa.string()),
        ("created", pa.timestamp("ms", "UTC")),
        ("modified", pa.timestamp("ms", "UTC")),
        ("reference", pa.string()),
        ("mcc", pa.string()),
        ("mnc", pa.string()),
    ]
)
STATUS_SCHEMA = pa.schema(
    [
        ("messageId", pa.string()),
        ("code", pa.int32()),
        ("created", pa.timestamp("ms", "UTC")),
        ("duration", pa.int32()),
    ]
)


def api_example() -> None:
    """The conversation of SPEC section 1: 46734487112 under owner ip1-100, plus neighbours."""
    rng = random.Random(20181023)
    owner, me, shop = "ip1-100", "46734487112", "46700000100"
    plan = [("mt", 101)] * 43 + [("mt", 102)] * 3 + [("mt", 201)] * 142 + [("mo", 201)] * 199
    plan += [("mt_other", 201)] * 60 + [("mo_other", 201)] * 40
    rng.shuffle(plan)
    messages, statuses = [], []
    for number, (kind, final) in enumerate(plan):
        created = EPOCH + timedelta(minutes=17 * number, seconds=rng.randint(0, 59))
        other = f"4673{rng.randint(1000000, 9999999)}"
        direction = kind[:2]
        participant = me if kind in ("mt", "mo") else other
        sender, recipient = (shop, participant) if direction == "mt" else (participant, shop)
        msg = _message(rng, owner, sender, recipient, direction, created, 2, number)
        messages.append(msg)
        if direction == "mo":
            statuses.append(_status(str(msg["id"]), 201, created, 0))
        else:
            statuses.extend(_chain(rng, msg, final))
    rng.shuffle(statuses)
    out = HERE / "api_example"
    shutil.rmtree(out, ignore_errors=True)
    _write(messages, out / "messages.parquet", MESSAGE_SCHEMA)
    _write(statuses, out / "statuses.parquet", STATUS_SCHEMA)


def demo() -> None:
    """A small realistic set: three owners, hot senders, late statuses, orphans, duplicates."""
    rng = random.Random(7)
    owners = {
        "acme": ["Acme", "46700000001"],
        "shop1": ["Shop1", "46700000002"],
        "bank-nord": ["NordBank", "46700000003", "Security"],
    }
    customers = [f"467{rng.randint(10000000, 99999999)}" for _ in range(400)]
    shared = customers[:30]  # the same MSISDNs appear under several owners
    messages: dict[str, list[dict[str, object]]] = {}
    statuses: dict[str, list[dict[str, object]]] = {}
    number = 0
    for day in range(3):
        date = (EPOCH + timedelta(days=day)).date().isoformat()
        for _ in range(1000):
            owner = rng.choice(list(owners))
            customer = (
                rng.choice(shared)
                if rng.random() < 0.2
                else customers[min(int(rng.paretovariate(1.2)) - 1, len(customers) - 1)]
            )
            sender_id = rng.choice(owners[owner])
            direction = "mt" if rng.random() < 0.7 else "mo"
            if direction == "mo" and not sender_id.isdigit():
                sender_id = owners[owner][1]
            created = EPOCH + timedelta(
                days=day, seconds=rng.randint(0, 86399), milliseconds=rng.choice([0, 0, 0, 120])
            )
            sender, recipient = (
                (sender_id, customer) if direction == "mt" else (customer, sender_id)
            )
            msg = _message(
                rng,
                owner,
                sender,
                recipient,
                direction,
                created,
                rng.choice([1, 1, 1, 2, 3, 6]),
                number,
            )
            number += 1
            messages.setdefault(date, []).append(msg)
            if rng.random() < 0.01:
                continue  # no status at all
            if direction == "mo":
                rows = [_status(str(msg["id"]), 201, created)]
            else:
                final = rng.choice([101, 102, 201, 201, 201, 201, 202, 203, 402, 403, 510])
                rows = _chain(rng, msg, final)
            for row in rows:  # some statuses arrive days later, logged on the later day
                late = rng.random() < 0.05
                log_day = min(day + (rng.randint(1, 2) if late else 0), 2)
                statuses.setdefault(
                    (EPOCH + timedelta(days=log_day)).date().isoformat(), []
                ).append(row)
            if rng.random() < 0.02:  # a duplicate row of the message, modified later
                dup = dict(msg, modified=msg["modified"] + timedelta(hours=1), body="edited")
                messages[date].append(dup)
    for day in ("2018-10-01", "2018-10-02"):
        for k in range(5):  # orphans: statuses for messages that never arrived
            statuses[day].append(_status(f"ghost-{day}-{k}", 201, EPOCH, 0))
        statuses[day].append(dict(statuses[day][0]))  # an identical duplicate status row
    out = HERE / "demo"
    shutil.rmtree(out, ignore_errors=True)
    for date, rows in sorted(messages.items()):
        _write(rows, out / "messages" / f"date={date}" / "part-0.parquet", MESSAGE_SCHEMA)
    for date, rows in sorted(statuses.items()):
        rng.shuffle(rows)
        _write(rows, out / "statuses" / f"date={date}" / "part-0.parquet", STATUS_SCHEMA)


if __name__ == "__main__":
    api_example()
    demo()
