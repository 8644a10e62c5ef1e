"""The named reports: each is its SQL over the tables (reporting/tables.py) and its parameters.

Every report over messages reads them through one scope: the messages of the chosen owners and
direction whose `created`, as a local date in the time zone `$tz`, is in the half-open range
[`$from`, `$to`) (either end open when null). `day` is that local date.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from convsum.codes import GROUPS, KNOWN_CODES
from convsum.errors import QueryError
from convsum.reporting import REPORT_NAMES
from convsum.reporting.human import Unit
from convsum.reporting.tables import OUTCOMES
from convsum.sql import literal

if TYPE_CHECKING:
    from convsum.reporting.query import Tables

# The options (Click's parameter names) every report over messages takes, for the scope below.
SCOPE_OPTIONS = frozenset({"tz", "from_", "to", "owners", "direction"})

# The day is computed without a time zone lookup in UTC (DuckDB folds the parameters into the
# plan). The bounds on `created` have a day of slack, so that they hold in any zone: they let the
# scan skip the files and row groups outside the range; the bounds on `day` are the exact ones.
_SCOPE = """WITH m AS (
    SELECT * FROM (
        SELECT *, CASE WHEN $tz = 'UTC' THEN make_timestamp(epoch_us(created))::DATE
            ELSE timezone($tz, created)::DATE END AS day
        FROM messages
        WHERE (len($owners) = 0 OR list_contains($owners, owner))
            AND ($direction IS NULL OR direction = $direction)
            AND ($from IS NULL
                OR created >= timezone($tz, $from::DATE::TIMESTAMP) - INTERVAL 1 DAY)
            AND ($to IS NULL OR created < timezone($tz, $to::DATE::TIMESTAMP) + INTERVAL 1 DAY)
    )
    WHERE ($from IS NULL OR day >= $from::DATE) AND ($to IS NULL OR day < $to::DATE)
)
"""

# The measures more than one report shares, each written once: "finalised" is a latest outcome
# that is final; "failed" one of the failures'; latency, seconds from created to the first final
# status, as Python's timedelta.total_seconds(): the exact microseconds over 10^6, one rounding.
_FINALISED = "count(*) FILTER (outcome NOT IN ('pending', 'no_status'))"
_DELIVERED = "count(*) FILTER (outcome = 'delivered')"
FAILED = ("expired", "canceled", "rejected", "error")
_FAILED = "outcome IN (" + ", ".join(f"'{o}'" for o in FAILED) + ")"
_LATENCY_SECONDS = "(epoch_us(final_created) - epoch_us(created)) / 1000000"
_PERCENTILES = "quantile_cont(latency, [0.5, 0.95, 0.99])"
# A status code's name (SPEC section 3), or its group's for a code the gateway does not list.
_CODE_NAME = "CASE status_code {} ELSE CASE status_code // 100 {} END END".format(
    " ".join(f"WHEN {code} THEN '{name}'" for code, name in KNOWN_CODES.items()),
    " ".join(f"WHEN {group} THEN '{name} ({group}xx)'" for group, name in GROUPS.items()),
)

# Each report's columns come in the order a reader wants them, the most telling first: the
# terminal's table shows the first columns that fit.
_PER_OUTCOME = ",\n    ".join(f"count(*) FILTER (outcome = '{o}') AS {o}" for o in OUTCOMES)
_OUTCOMES = f"""
SELECT day, owner, direction, count(*) AS messages, {_FINALISED} AS finalised,
    {_DELIVERED} / nullif(finalised, 0) AS delivery_rate,
    {_DELIVERED} / nullif(messages, 0) AS delivered_share,
    {_PER_OUTCOME}
FROM m
GROUP BY day, owner, direction
ORDER BY day, owner, direction
"""

_FAILURES = f"""
SELECT status_code, {_CODE_NAME} AS name, any_value(outcome) AS outcome, count(*) AS messages,
    messages / sum(messages) OVER () AS share,
    list_sort(list(DISTINCT owner)) AS owners,
    list_sort(list(DISTINCT coalesce(mcc, '') || '/' || coalesce(mnc, ''))) AS operators,
    min(status_created) AS first_seen, max(status_created) AS last_seen
FROM m
WHERE {_FAILED}
GROUP BY status_code
QUALIFY row_number() OVER (ORDER BY messages DESC, status_code) <= $top
ORDER BY messages DESC, status_code
"""

_OPERATORS = f"""
SELECT mcc, mnc, count(*) AS messages, {_FINALISED} AS finalised, {_DELIVERED} AS delivered,
    delivered / nullif(finalised, 0) AS delivery_rate
FROM m
WHERE direction = 'mt'
GROUP BY mcc, mnc
HAVING count(*) >= $min_volume
ORDER BY delivery_rate ASC NULLS LAST, messages DESC, mcc NULLS LAST, mnc NULLS LAST
"""

_LATENCY = f"""
SELECT {{by}}, messages, finalised, q[1] AS p50, q[2] AS p95, q[3] AS p99,
    within_5s, within_10s, within_60s
FROM (
    SELECT {{by}}, count(*) AS messages, count(latency) AS finalised, {_PERCENTILES} AS q,
        count(*) FILTER (latency <= 5) / count(*) AS within_5s,
        count(*) FILTER (latency <= 10) / count(*) AS within_10s,
        count(*) FILTER (latency <= 60) / count(*) AS within_60s
    FROM (SELECT *, {_LATENCY_SECONDS} AS latency FROM m)
    GROUP BY {{by}}
)
ORDER BY {{by_order}}
"""

# The headline numbers: all the owners of the scope (owner NULL), then each owner.
_OVERVIEW = f"""
SELECT owner, messages, finalised, delivered, delivered / nullif(finalised, 0) AS delivery_rate,
    failed, failed / nullif(messages, 0) AS failed_share, q[1] AS p50, q[2] AS p95, q[3] AS p99
FROM (
    SELECT owner, count(*) AS messages, {_FINALISED} AS finalised, {_DELIVERED} AS delivered,
        count(*) FILTER ({_FAILED}) AS failed, {_PERCENTILES} AS q
    FROM (SELECT *, {_LATENCY_SECONDS} AS latency FROM m)
    GROUP BY ROLLUP (owner)
)
ORDER BY owner NULLS FIRST
"""

_STUCK = """
SELECT owner, id, created, epoch($as_of::TIMESTAMPTZ - created) / 3600 AS age_hours,
    status_code, status_created, sender, recipient
FROM m
WHERE direction = 'mt' AND final_created IS NULL
    AND created < $as_of::TIMESTAMPTZ - to_seconds($older_than_s)
ORDER BY created, owner, id
"""

_VOLUME = """
SELECT day, owner, direction, currency, count(*) AS messages,
    sum(segments)::BIGINT AS segments, sum(price::DECIMAL(38, 10)) AS cost
FROM m
GROUP BY day, owner, direction, currency
ORDER BY day, owner, direction, currency NULLS LAST
"""

# From the conversations table, the numbers behind the summaries: over all the published data.
_TOP = """
SELECT owner, participant, sum(messages)::BIGINT AS messages,
    coalesce(sum(messages) FILTER (direction = 'mt'), 0)::BIGINT AS mt,
    coalesce(sum(messages) FILTER (direction = 'mo'), 0)::BIGINT AS mo,
    row_number() OVER (PARTITION BY owner ORDER BY sum(messages) DESC, participant) AS rank
FROM conversations
WHERE len($owners) = 0 OR list_contains($owners, owner)
GROUP BY owner, participant
QUALIFY rank <= $top
ORDER BY owner, rank
"""

# The last run's reconciliation counts, and the statuses created before their message.
_QUALITY = """
WITH last AS (SELECT * FROM runs ORDER BY run_number DESC LIMIT 1),
early AS (SELECT count(*) FILTER (before_message) AS n FROM statuses)
SELECT unnest([
        'messages', 'duplicate_messages', 'messages_without_status', 'orphan_statuses',
        'duplicate_statuses', 'unknown_code_rows', 'statuses_before_their_message'
    ]) AS check,
    unnest([
        messages, duplicate_messages, messages_without_status, orphan_statuses,
        duplicate_statuses, unknown_code_rows, early.n
    ]) AS count
FROM last, early
"""

# What the terminal's table and markdown show the reports' fractions and durations as.
UNITS: Mapping[str, Unit] = MappingProxyType(
    {
        "delivery_rate": "share",
        "delivered_share": "share",
        "share": "share",
        "failed_share": "share",
        "within_5s": "share",
        "within_10s": "share",
        "within_60s": "share",
        "p50": "seconds",
        "p95": "seconds",
        "p99": "seconds",
        "age_hours": "hours",
    }
)

LATENCY_BY = MappingProxyType({"day": "day", "owner": "owner", "operator": "mcc, mnc"})


def _known_time_zone(name: str) -> bool:
    """Whether DuckDB knows the IANA time zone `name` (its own ICU data computes the days)."""
    query = "SELECT count(*) FROM pg_timezone_names() WHERE name = $n"
    return duckdb.execute(query, {"n": name}).fetchall() != [(0,)]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class Parameters:
    """The values of the reports' parameters, by the option that sets each (Report.options), with
    the default of every option not given."""

    tz: str = "UTC"
    from_: date | None = None
    to: date | None = None
    owners: tuple[str, ...] = ()
    direction: str | None = None
    top: int = 10
    min_volume: int = 100
    older_than: int = 48 * 3600  # seconds
    as_of: datetime = field(default_factory=_now)  # UTC, naive

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is not None:  # given with an offset: the same instant in UTC
            object.__setattr__(self, "as_of", self.as_of.astimezone(UTC).replace(tzinfo=None))
        if self.from_ and self.to and self.from_ >= self.to:
            raise QueryError("--from must be before --to")
        if self.tz != "UTC" and not _known_time_zone(self.tz):
            msg = f"unknown time zone {self.tz!r}: use an IANA name such as UTC or Europe/Stockholm"
            raise QueryError(msg)

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Parameters:
        """Return the parameters that `options` (a command's, by option name) set; dates may be
        given as datetimes."""
        given: dict[str, Any] = {
            name: value.date() if name in ("from_", "to") and isinstance(value, datetime) else value
            for name, value in options.items()
            if name in _PARAMETER_NAMES and value not in (None, ())
        }
        given["owners"] = tuple(given.get("owners", ()))
        return cls(**given)

    def sql_values(self) -> dict[str, Any]:
        """Return the values of the SQL's named parameters ($tz, $from, ...)."""
        return {
            "tz": self.tz,
            "from": self.from_,
            "to": self.to,
            "owners": list(self.owners),
            "direction": self.direction,
            "top": self.top,
            "min_volume": self.min_volume,
            "older_than_s": self.older_than,
            "as_of": self.as_of.isoformat() + "Z",
        }


_PARAMETER_NAMES = frozenset(f.name for f in fields(Parameters))


@dataclass(frozen=True)
class Report:
    """A named report: its SQL, what it says, and which options it takes."""

    name: str
    summary: str
    body: str
    options: frozenset[str] = SCOPE_OPTIONS
    by: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def scoped(self) -> bool:
        return "FROM m" in self.body

    def sql(self, by: str | None = None) -> str:
        """Return the report's whole SQL (with `--by` chosen, when it has one)."""
        body = self.body
        if self.by:
            columns = self.by[by or next(iter(self.by))]
            order = ", ".join(f"{c} NULLS LAST" for c in columns.split(", "))
            body = body.format(by=columns, by_order=order)
        return (_SCOPE if self.scoped else "") + body.strip() + "\n"

    def parameters(self, sql: str, parameters: Parameters) -> dict[str, Any]:
        """Return the values of the named parameters that `sql` uses."""
        used = set(_PARAMETER.findall(sql))
        return {name: value for name, value in parameters.sql_values().items() if name in used}

    def runnable_sql(self, parameters: Parameters, by: str | None = None) -> str:
        """Return the report's SQL with the parameters' values written in: what `convsum query`
        runs as it is, to give the report's rows."""
        sql = self.sql(by)
        values = self.parameters(sql, parameters)
        return _PARAMETER.sub(lambda found: _sql_value(values[found.group(1)]), sql)


_PARAMETER = re.compile(r"\$([a-z_]+)")


def _sql_value(value: Any) -> str:
    """Return a parameter's value as SQL: NULL, a number, a DATE, a string or a list of them."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, list):
        return "[" + ", ".join(literal(item) for item in value) + "]::VARCHAR[]"
    return literal(str(value))


REPORTS: Mapping[str, Report] = MappingProxyType(
    {
        report.name: report
        for report in (
            Report(
                "overview",
                "Messages, delivery rate, failures, p50/p95/p99 latency: all owners, then each.",
                _OVERVIEW,
            ),
            Report(
                "outcomes",
                "Messages per local day, owner and direction by outcome, with delivery rates.",
                _OUTCOMES,
            ),
            Report(
                "failures",
                "The top failure codes (latest 202, 203, 4xx, 5xx): share, owners, operators.",
                _FAILURES,
                SCOPE_OPTIONS | {"top"},
            ),
            Report(
                "operators",
                "Delivery of mt messages per operator (mcc/mnc), a minimum volume, worst first.",
                _OPERATORS,
                SCOPE_OPTIONS | {"min_volume"},
            ),
            Report(
                "latency",
                "Seconds from created to the first final status: p50/p95/p99, within 5/10/60 s.",
                _LATENCY,
                SCOPE_OPTIONS | {"by"},
                LATENCY_BY,
            ),
            Report(
                "stuck",
                "mt messages without a final status, older than --older-than (default 48h).",
                _STUCK,
                SCOPE_OPTIONS | {"older_than", "as_of"},
            ),
            Report(
                "volume",
                "Messages, segments and cost per local day, owner, direction and currency.",
                _VOLUME,
            ),
            Report(
                "top",
                "The top participants per owner by messages, with mt and mo counts (all data).",
                _TOP,
                frozenset({"owners", "top"}),
            ),
            Report(
                "quality",
                "Reconciliation counts: no status, orphans, duplicates, unknown codes, early.",
                _QUALITY,
                frozenset(),
            ),
        )
    }
)


if tuple(REPORTS) != REPORT_NAMES:  # completion offers REPORT_NAMES: they must be the reports
    raise AssertionError(f"reporting.REPORT_NAMES must be {tuple(REPORTS)}")


def run_report(
    tables: Tables, report: Report, parameters: Parameters, by: str | None = None
) -> pa.Table:
    """Run `report` over `tables` with the `parameters` (and `--by`, if it has one)."""
    sql = report.sql(by)
    return tables.run(sql, report.parameters(sql, parameters))


def unknown_owners(tables: Tables, parameters: Parameters) -> list[str]:
    """Return the owners the parameters name that no message of the tables has."""
    if not parameters.owners:
        return []
    sql = "SELECT list(DISTINCT owner) AS known FROM messages WHERE list_contains($owners, owner)"
    known = set(
        tables.run(sql, {"owners": list(parameters.owners)}).column("known")[0].as_py() or ()
    )
    return [owner for owner in parameters.owners if owner not in known]
