"""Every named report against a pure-Python computation on random logs.

The logs cluster around daylight-saving changes (Europe's and North America's, spring and
autumn) and UTC midnights, so that local days differ from UTC days and some days have 23 or 25
hours; the ranges are half-open local dates.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsum.cli import cli
from convsum.codes import GROUPS, KNOWN_CODES
from convsum.config import RunConfig
from convsum.reporting.reports import REPORTS
from convsum.run import run_job
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, write_parquet
from tests.support.reference import FINAL_GROUPS, deduplicate, latest_status, outcome

CHANGES = [
    datetime(2024, 3, 10, 7, 0, tzinfo=UTC),  # New York springs forward
    datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # Europe springs forward
    datetime(2024, 10, 27, 1, 0, tzinfo=UTC),  # Europe falls back
    datetime(2024, 11, 3, 23, 30, tzinfo=UTC),
]
ZONES = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
FAILURES = {"expired", "canceled", "rejected", "error"}
AS_OF = datetime(2024, 11, 5, tzinfo=UTC)

_created = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(CHANGES),
    st.integers(-26 * 60, 26 * 60),
)
_messages = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from([f"m{i}" for i in range(12)]),
            "owner": st.sampled_from(["acme", "bank"]),
            "sender": st.sampled_from(["Acme", "4670", "4671"]),
            "recipient": st.sampled_from(["4670", "4671", "4672"]),
            "direction": st.sampled_from(["mt", "mo"]),
            "segments": st.integers(1, 3),
            "created": _created,
            "modified": st.none() | _created,
            "price": st.none() | st.sampled_from([0.05, 0.0725, 1.0]),
            "currency": st.none() | st.sampled_from(["SEK", "EUR"]),
            "mcc": st.none() | st.sampled_from(["240", "242"]),
            "mnc": st.sampled_from(["01", "07"]),
        }
    ),
    max_size=24,
)


def _statuses(messages: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    ids = sorted({(m["id"], m["created"]) for m in messages}) or [("ghost", CHANGES[0])]
    one = st.builds(
        lambda pair, code, seconds, duration: {
            "messageId": pair[0],
            "code": code,
            "created": pair[1] + timedelta(seconds=seconds),
            "duration": duration,
        },
        st.sampled_from(ids),
        st.sampled_from([101, 111, 201, 202, 203, 299, 402, 403, 510, 610]),
        st.sampled_from([-30, 0, 3, 5, 7, 10, 11, 45, 60, 61, 4000]),
        st.none() | st.integers(0, 5),
    )
    return st.lists(one, max_size=30)


_logs = _messages.flatmap(lambda ms: st.tuples(st.just(ms), _statuses(ms)))
_dates = st.none() | st.builds(
    lambda base, days: (base + timedelta(days=days)).date(),
    st.sampled_from(CHANGES),
    st.integers(-2, 2),
)


def _rows(messages: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each message after deduplication with its latest status, outcome and final time."""
    rows = []
    for row in deduplicate(messages):
        mine = [s for s in statuses if s["messageId"] == row["id"]]
        latest = latest_status(row, statuses)
        finals = [s["created"] for s in mine if s["code"] // 100 in FINAL_GROUPS]
        code = None if latest is None else latest["code"]
        rows.append(
            {
                **row,
                "status_code": code,
                "status_created": None if latest is None else latest["created"],
                "outcome": outcome(code),
                "final_created": min(finals, default=None),
                "statuses": mine,
            }
        )
    return rows


def _scope(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a report's scope, each with its local `day`."""
    zone = ZoneInfo(p["tz"])
    out = []
    for row in rows:
        day = row["created"].astimezone(zone).date()
        if p["from"] is not None and day < p["from"]:
            continue
        if p["to"] is not None and day >= p["to"]:
            continue
        if p["owners"] and row["owner"] not in p["owners"]:
            continue
        out.append({**row, "day": day})
    return out


def _groups(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _finalised(rows: list[dict[str, Any]]) -> int:
    return sum(r["outcome"] not in ("pending", "no_status") for r in rows)


def _delivered(rows: list[dict[str, Any]]) -> int:
    return sum(r["outcome"] == "delivered" for r in rows)


def _nulls_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)


def outcomes(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    names = ["delivered", "expired", "canceled", "other_final", "rejected", "error", "pending"]
    out = []
    for (day, owner, direction), group in sorted(
        _groups(rows, "day", "owner", "direction").items()
    ):
        counts = {name: sum(r["outcome"] == name for r in group) for name in [*names, "no_status"]}
        finalised = _finalised(group)
        out.append(
            {
                "day": day, "owner": owner, "direction": direction, "messages": len(group),
                "finalised": finalised, "delivery_rate": _ratio(counts["delivered"], finalised),
                "delivered_share": _ratio(counts["delivered"], len(group)), **counts,
            }
        )  # fmt: skip
    return out


def failures(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    failed = [r for r in rows if r["outcome"] in FAILURES]
    out = [
        {
            "status_code": code,
            "name": KNOWN_CODES.get(code, f"{GROUPS[code // 100]} ({code // 100}xx)"),
            "outcome": outcome(code),
            "messages": len(group),
            "share": len(group) / len(failed),
            "owners": sorted({r["owner"] for r in group}),
            "operators": sorted({f"{r['mcc'] or ''}/{r['mnc'] or ''}" for r in group}),
            "first_seen": min(r["status_created"] for r in group),
            "last_seen": max(r["status_created"] for r in group),
        }
        for (code,), group in _groups(failed, "status_code").items()
    ]
    out.sort(key=lambda r: (-r["messages"], r["status_code"]))
    return out[: p["top"]]


def operators(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for (mcc, mnc), group in _groups(
        [r for r in rows if r["direction"] == "mt"], "mcc", "mnc"
    ).items():
        if len(group) >= p["min_volume"]:
            finalised, delivered = _finalised(group), _delivered(group)
            out.append(
                {
                    "mcc": mcc, "mnc": mnc, "messages": len(group), "finalised": finalised,
                    "delivered": delivered, "delivery_rate": _ratio(delivered, finalised),
                }
            )  # fmt: skip
    out.sort(
        key=lambda r: (
            _nulls_last(r["delivery_rate"]),
            -r["messages"],
            _nulls_last(r["mcc"]),
            r["mnc"],
        )
    )
    return out


def _quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks."""
    if not values:
        return None
    values = sorted(values)
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (position - low) * (values[high] - values[low])


def _latencies(rows: list[dict[str, Any]]) -> list[float]:
    return [
        (r["final_created"] - r["created"]).total_seconds()
        for r in rows
        if r["final_created"] is not None
    ]


def overview(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    owners = [(None, rows)] + [(o, g) for (o,), g in sorted(_groups(rows, "owner").items())]
    out = []
    for owner, group in owners:
        finalised, delivered = _finalised(group), _delivered(group)
        failed = sum(r["outcome"] in FAILURES for r in group)
        seconds = _latencies(group)
        out.append(
            {
                "owner": owner, "messages": len(group), "finalised": finalised,
                "delivered": delivered, "delivery_rate": _ratio(delivered, finalised),
                "failed": failed, "failed_share": _ratio(failed, len(group)),
                **{f"p{q}": _quantile(seconds, q / 100) for q in (50, 95, 99)},
            }
        )  # fmt: skip
    return out


def latency(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    keys = {"day": ("day",), "owner": ("owner",), "operator": ("mcc", "mnc")}[p["by"]]
    out = []
    groups = _groups(rows, *keys)
    for key in sorted(groups, key=lambda k: tuple(map(_nulls_last, k))):
        group = groups[key]
        seconds = _latencies(group)
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "messages": len(group), "finalised": len(seconds),
                "p50": _quantile(seconds, 0.5), "p95": _quantile(seconds, 0.95),
                "p99": _quantile(seconds, 0.99),
                **{f"within_{n}s": sum(s <= n for s in seconds) / len(group) for n in (5, 10, 60)},
            }
        )  # fmt: skip
    return out


def stuck(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    limit = AS_OF - timedelta(seconds=p["older_than"])
    found = [
        r
        for r in rows
        if r["direction"] == "mt" and r["final_created"] is None and r["created"] < limit
    ]
    found.sort(key=lambda r: (r["created"], r["owner"], r["id"]))
    return [
        {
            "owner": r["owner"], "id": r["id"], "created": r["created"],
            "age_hours": (AS_OF - r["created"]).total_seconds() / 3600,
            "status_code": r["status_code"], "status_created": r["status_created"],
            "sender": r["sender"], "recipient": r["recipient"],
        }
        for r in found
    ]  # fmt: skip


def volume(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    groups = _groups(rows, "day", "owner", "direction", "currency")
    out = []
    for key in sorted(groups, key=lambda k: (*k[:3], _nulls_last(k[3]))):
        group = groups[key]
        prices = [
            Decimal(r["price"]).quantize(Decimal("1e-10")) for r in group if r["price"] is not None
        ]
        out.append(
            {
                **dict(zip(("day", "owner", "direction", "currency"), key, strict=True)),
                "messages": len(group), "segments": sum(r["segments"] for r in group),
                "cost": sum(prices) if prices else None,
            }
        )  # fmt: skip
    return out


def top(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"mt": 0, "mo": 0})
    for r in rows:
        if p["owners"] and r["owner"] not in p["owners"]:
            continue
        for participant in {r["sender"], r["recipient"]}:
            counts[(r["owner"], participant)][r["direction"]] += 1
    out = []
    for owner in sorted({owner for owner, _ in counts}):
        mine = [(part, c) for (o, part), c in counts.items() if o == owner]
        mine.sort(key=lambda pc: (-(pc[1]["mt"] + pc[1]["mo"]), pc[0]))
        for rank, (participant, c) in enumerate(mine[: p["top"]], start=1):
            out.append(
                {
                    "owner": owner, "participant": participant, "messages": c["mt"] + c["mo"],
                    "mt": c["mt"], "mo": c["mo"], "rank": rank,
                }
            )  # fmt: skip
    return out


EXPECTED: dict[str, Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]] = {
    "overview": overview,
    "outcomes": outcomes,
    "failures": failures,
    "operators": operators,
    "latency": latency,
    "stuck": stuck,
    "volume": volume,
    "top": top,
}


def _report(out: Path, name: str, args: list[str], target: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        cli, ["report", name, str(out), *args, "-F", "parquet", "-o", str(target)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return pq.read_table(target).to_pylist()


def _same(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [list(r) for r in actual[:1]] == [list(r) for r in expected[:1]]
    assert len(actual) == len(expected), (actual, expected)
    for got, want in zip(actual, expected, strict=True):
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-12), (key, got, want)
            else:
                assert got[key] == value, (key, got, want)


@settings(
    max_examples=max(10, settings.default.max_examples // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    logs=_logs,
    tz=st.sampled_from(ZONES),
    start=_dates,
    end=_dates,
    owners=st.sampled_from([[], ["acme"], ["acme", "bank"]]),
    by=st.sampled_from(["day", "owner", "operator"]),
    top_n=st.integers(1, 3),
    min_volume=st.integers(1, 3),
    hours=st.sampled_from([1, 24, 48, 400 * 24]),
)
def test_reports_match_a_python_computation(
    logs: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    tz: str,
    start: date | None,
    end: date | None,
    owners: list[str],
    by: str,
    top_n: int,
    min_volume: int,
    hours: int,
) -> None:
    messages, statuses = logs
    rows = _rows(
        [{**m, "type": "SMS", "datacoding": "gsm", "body": None} for m in messages], statuses
    )
    if start and end and start >= end:
        start, end = end, None
    p = {"tz": tz, "from": start, "to": end, "owners": owners, "by": by, "top": top_n,
         "min_volume": min_volume, "older_than": hours * 3600}  # fmt: skip
    scope_args = ["--tz", tz, *(f"--owner={o}" for o in owners)]
    scope_args += [f"--from={start}"] if start else []
    scope_args += [f"--to={end}"] if end else []
    extra = {
        "failures": ["--top", str(top_n)], "operators": ["--min-volume", str(min_volume)],
        "latency": ["--by", by], "stuck": ["--older-than", f"{hours}h", "--as-of",
        AS_OF.strftime("%Y-%m-%dT%H:%M:%S")],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_parquet(base / "messages.parquet", [
            {**m, "type": "SMS", "datacoding": "gsm", "body": None} for m in messages
        ], MESSAGE_TYPES)  # fmt: skip
        write_parquet(base / "statuses.parquet", statuses, STATUS_TYPES)
        out = base / "out"
        run = run_job(RunConfig(messages=str(base / "messages.parquet"),
                                statuses=str(base / "statuses.parquet"), out=str(out)))  # fmt: skip
        for name, compute in EXPECTED.items():
            if name == "top":
                args = [*(f"--owner={o}" for o in owners), "--top", str(top_n)]
                expected = compute(rows, p)
            else:
                args = scope_args + extra.get(name, [])
                expected = compute(_scope(rows, p), p)
            _same(_report(out, name, args, base / f"{name}.parquet"), expected)
        early = {
            (r["owner"], s["messageId"], s["code"], s["created"], s["duration"])
            for r in rows
            for s in r["statuses"]
            if s["created"] < r["created"]
        }
        quality = {r["check"]: r["count"] for r in _report(out, "quality", [], base / "q.parquet")}
        assert quality == {
            "messages": run.data.messages,
            "duplicate_messages": run.data.duplicate_messages,
            "messages_without_status": run.data.messages_without_status,
            "orphan_statuses": run.data.orphan_statuses,
            "duplicate_statuses": run.data.duplicate_statuses,
            "unknown_code_rows": sum(run.data.unknown_codes.values()),
            "statuses_before_their_message": len(early),
        }  # fmt: skip


def test_reports_list_names_every_report_once() -> None:
    result = CliRunner().invoke(cli, ["report", "--list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == list(REPORTS) and set(EXPECTED) | {"quality"} == set(REPORTS)
