"""The typed results of a run and of a sync.

Their fields are the one list of the reports' keys: `report.json` and `--report` (`as_dict`),
the manifest's counts, the `runs` table's row and the benchmark all read them from here, so a
new counter is one field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

import orjson

Mode = Literal["full", "incremental"]
# (role -> count): "messages", "statuses" and, for rows read, "nested_statuses"
PerRole = Mapping[str, int]


_SUMMED = ("messages", "messages_without_status", "matched_statuses", "distinct_statuses")


@dataclass(frozen=True)
class Facts:
    """What only an engine can count about a tree's data, each a sum over message ids (so that an
    update adds a night's facts and takes away those of the rows it replaces; see incremental/), and
    the tree's owners and participants, which its tallies count."""

    messages: int = 0  # after deduplication
    messages_without_status: int = 0
    matched_statuses: int = 0  # status rows that belong to a message
    distinct_statuses: int = 0
    unknown_codes: Mapping[str, int] = field(default_factory=dict)  # {code: rows}, by code
    owners: int = 0
    participants: int = 0

    def plus(self, after: Facts, before: Facts | None = None) -> Facts:
        """Return these facts plus an engine's `after` less its `before` (owners and
        participants are the tallies', not summed)."""
        before = before or Facts()
        codes = dict(self.unknown_codes)
        for code, rows in after.unknown_codes.items():
            codes[code] = codes.get(code, 0) + rows
        for code, rows in before.unknown_codes.items():
            codes[code] -= rows
        by_code = sorted((int(code), rows) for code, rows in codes.items() if rows)
        sums = {
            name: getattr(self, name) + getattr(after, name) - getattr(before, name)
            for name in _SUMMED
        }
        return replace(self, **sums, unknown_codes={str(code): n for code, n in by_code})

    def to_json(self) -> str:
        return orjson.dumps(as_dict(self)).decode()

    @classmethod
    def from_json(cls, raw: str) -> Facts:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class DataCounts:
    """What a run report says of the tree's data."""

    messages: int
    duplicate_messages: int
    messages_without_status: int
    orphan_statuses: int
    duplicate_statuses: int
    unknown_codes: Mapping[str, int]
    owners: int
    participants: int

    @classmethod
    def of(cls, facts: Facts, rows_read: PerRole) -> DataCounts:
        """Return the counts of a tree with these facts, from these rows staged."""
        status_rows = rows_read["statuses"] + rows_read["nested_statuses"]
        return cls(
            messages=facts.messages,
            duplicate_messages=rows_read["messages"] - facts.messages,
            messages_without_status=facts.messages_without_status,
            orphan_statuses=status_rows - facts.matched_statuses,
            duplicate_statuses=status_rows - facts.distinct_statuses,
            unknown_codes=facts.unknown_codes,
            owners=facts.owners,
            participants=facts.participants,
        )


@dataclass(frozen=True)
class FileCounts:
    """What a run did to the tree's files."""

    conversations_changed: int
    files_written: int
    files_unchanged: int
    files_removed: int
    bytes_written: int


@dataclass(frozen=True)
class RunReport:
    """The run report. As JSON (`as_dict`) its counts are flat: the keys of `data` and `files`
    sit beside `run_id`, in this order."""

    run_id: str
    mode: Mode
    rebuild_reason: str | None
    rows_read: PerRole
    files_read: PerRole
    files_skipped: PerRole
    # The latest `created` of any row the tree's runs read, messages and statuses (ISO 8601, UTC,
    # to the microsecond): how fresh the served data is. None: no rows.
    newest_input: str | None
    data: DataCounts
    files: FileCounts
    stages: Mapping[str, float]  # seconds by stage, in the order they ran


@dataclass(frozen=True)
class SyncReport:
    """What a sync sent to a bucket."""

    run_id: str
    destination: str
    listed: int = 0
    sent: int = 0
    bytes: int = 0
    unchanged: int = 0
    deleted: int = 0


def as_dict(result: Any) -> dict[str, Any]:
    """Return a result as its JSON object: its fields in order, a nested result's spliced in."""
    values: dict[str, Any] = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if is_dataclass(value):
            values.update(as_dict(value))
        elif isinstance(value, Mapping):
            values[f.name] = dict(value)
        else:
            values[f.name] = value
    return values
