"""The engine interface: staged inputs in, derived tables out as sorted Arrow record batches.

An engine does all per-message work (deduplication, latest status, grouping, ordering and the
JSON text of every message); the publisher only cuts the sorted stream into pages and moves bytes
to files. A conversation's numbers are tallied from the engine's relations and its summary is
rendered from the tally, once for every engine (`tally`, `summaries`), so that an incremental run
can add a night's tallies to the tree's. Engines know no publisher: the publisher reads their
streams (`Derivation.rows`), or hands an engine with workers of its own a `Sink` that those
workers feed with the parts of a stream (`Derivation.fan_out`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import duckdb
import pyarrow as pa

from convsum.config import default_memory_limit, memory_bytes
from convsum.inputs import StagedInputs
from convsum.results import Facts
from convsum.sql import literal

# The message object of SPEC section 1, in key order: (JSON key, staged column, kind). Kinds:
# text, int, double, time; `statuses` is the latest-status list, which splits the object into
# the `head` before it and the `tail` after it.
MESSAGE_OBJECT: tuple[tuple[str, str, str], ...] = (
    ("id", "id", "text"),
    ("batchId", "batch_id", "text"),
    ("owner", "owner", "text"),
    ("sender", "sender", "text"),
    ("recipient", "recipient", "text"),
    ("body", "body", "text"),
    ("direction", "direction", "text"),
    ("segments", "segments", "int"),
    ("type", "type", "text"),
    ("datacoding", "datacoding", "text"),
    ("priority", "priority", "int"),
    ("price", "price", "double"),
    ("currency", "currency", "text"),
    ("statuses", "", "statuses"),
    ("modified", "modified", "time"),
    ("reference", "reference", "text"),
    ("mcc", "mcc", "text"),
    ("mnc", "mnc", "text"),
    ("created", "created", "time"),
)


def message_object_parts() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Return the message object's fields before and after `statuses`, each with its prefix.

    The prefix is the literal text before the value: `{"id":` for the first, `,"key":` after.
    """
    keys = [key for key, _, _ in MESSAGE_OBJECT]
    split = keys.index("statuses")
    parts = [
        (("{" if i == 0 else ",") + f'"{key}":', column, kind)
        for i, (key, column, kind) in enumerate(MESSAGE_OBJECT)
    ]
    return parts[:split], parts[split + 1 :]


# Sorted by (owner, participant); `json` is the summary object's text.
SUMMARY_SCHEMA = pa.schema(
    [("owner", pa.string()), ("participant", pa.string()), ("json", pa.string())]
)
# One row per (message, participant), sorted by (owner, participant, created, id), ascending or
# descending. `pos_all` is the row's index in the participant's whole list and `pos_dir` in the
# list of its direction, both counted in the stream's order. `json` is "," + the message object.
# In an incremental run's ascending stream a position is null where the row's page in that list
# cannot have changed (see EngineSettings.conversations); rows null in both are left out.
CONVERSATION_SCHEMA = pa.schema(
    [
        ("owner", pa.string()),
        ("participant", pa.string()),
        ("direction", pa.string()),
        ("pos_all", pa.int64()),
        ("pos_dir", pa.int64()),
        ("json", pa.string()),
    ]
)


@dataclass(frozen=True)
class StatusOrder:
    """The latest-status order (SPEC section 3) as one 128-bit integer, when the data allows.

    A status row is ranked by (created, final group, code, has a duration, duration). Offset from
    their least values, those fields fit one integer, most significant first, when their ranges
    need at most 127 bits together: its greatest value per message is then the latest status, and
    decodes back into it. The duration is stored plus one, so 0 means none. Every engine builds
    that integer from this layout; ranges too wide for it (codes and durations near the 64-bit
    limits) take the engine's general path, a sort or a tuple-keyed arg_max, which is slower.
    """

    created_from: int  # microseconds since the epoch
    code_from: int
    code_shift: int  # the bits of the duration, below the code
    final_shift: int  # the bits of the code and the duration, below the final flag

    @property
    def created_shift(self) -> int:
        return self.final_shift + 1


def status_order(statuses: Path) -> StatusOrder | None:
    """Return the layout of the latest-status integer for these staged statuses, if it fits."""
    with duckdb.connect() as con:
        row = con.execute(
            "SELECT min(epoch_us(created)), max(epoch_us(created)), min(code), max(code), "
            "max(duration) FROM read_parquet($files)",
            {"files": str(statuses / "*.parquet")},
        ).fetchone()
    t0, t1, c0, c1, longest = row or (None,) * 5
    if t0 is None or t1 is None or c0 is None or c1 is None:
        return StatusOrder(0, 0, 0, 0)
    code_shift = 0 if longest is None else (longest + 1).bit_length()
    final_shift = code_shift + (c1 - c0).bit_length()
    if (t1 - t0).bit_length() + final_shift + 1 > 127:
        return None
    return StatusOrder(t0, c0, code_shift, final_shift)


@dataclass(frozen=True)
class EngineSettings:
    """How an engine may use the machine."""

    work_dir: Path
    threads: int | None = None
    memory_limit: str | None = None
    batch_rows: int = 65_536
    # An incremental run: a Parquet file of its update scope (incremental/plan.py: UPDATE_SCOPE).
    # Only its conversations' rows are produced, from their row (cut_created, cut_id) on (every row
    # when that is null): the staged inputs hold every row from there, and a row's position is its
    # list's base plus its index from the cut. In ascending order only the rows of pages that may
    # have changed: the pages from the one holding the first row at or after (since_created,
    # since_id) (all of them when that is null), and always the last page of each list, so that the
    # publisher knows where each list ends.
    conversations: Path | None = None
    page_size: int = 50


@dataclass(frozen=True)
class Pages:
    """The stream of the conversation rows (CONVERSATION_SCHEMA) of one order."""

    order: Literal["asc", "desc"]

    @property
    def name(self) -> str:
        return self.order


@dataclass(frozen=True)
class Summaries:
    """The stream of the summaries (SUMMARY_SCHEMA) of the conversations of a tally file."""

    tallies: Path
    name: ClassVar[str] = "summaries"


# One stream of derived rows, as the publisher asks for it.
Stream = Pages | Summaries


@dataclass(frozen=True)
class Part:
    """What a sink wrote of one part of a stream: `files` files, `bytes` bytes."""

    name: str
    files: int
    bytes: int


class Sink(Protocol):
    """Where another process (a Spark executor) writes one part of a stream: called there with
    a name unique to the part and its rows; returns how many files and bytes it wrote. It is
    pickled to get there."""

    def __call__(self, part: str, rows: Iterable[pa.RecordBatch]) -> tuple[int, int]: ...


class Derivation(Protocol):
    """The derived tables of one run, read as streams."""

    def counts(self) -> Facts:
        """Return what only the engine can count (all but the owners and participants)."""
        ...

    def rows(self, stream: Stream) -> Iterator[pa.RecordBatch]:
        """Yield the stream's batches: each conversation's rows together, in list order (or its
        exact reverse); summaries in (owner, participant) order."""
        ...

    def fan_out(self, stream: Stream, sink: Sink) -> list[Part] | None:
        """Have the engine's own workers feed every part of the stream to `sink`; return the
        parts written, or None when the engine has no workers of its own (read `rows`)."""
        ...

    def relations(self) -> duckdb.DuckDBPyConnection:
        """Return a DuckDB connection holding the derivation's relations (`define_relations`).

        The queryable tables are written from them (reporting/tables.py), in one SQL for every
        engine. The connection is the derivation's: valid until its context ends.
        """
        ...


class ReadHere:
    """A derivation whose streams are read by this process (the DuckDB and Polars engines),
    from its `conversation_rows` and `relations`."""

    def conversation_rows(self, descending: bool) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def relations(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError

    def rows(self, stream: Stream) -> Iterator[pa.RecordBatch]:
        if isinstance(stream, Pages):
            return self.conversation_rows(descending=stream.order == "desc")
        return summaries(self.relations(), stream.tallies, EngineSettings.batch_rows)

    def fan_out(self, stream: Stream, sink: Sink) -> list[Part] | None:
        return None


class Engine(Protocol):
    """A way of computing a Derivation from staged inputs."""

    name: str

    def derive(
        self, staged: StagedInputs, settings: EngineSettings
    ) -> AbstractContextManager[Derivation]:
        """Compute the derived tables; release their resources when the context ends."""
        ...


def memory_budget(limit: str | None) -> int:
    """Return the bytes the engines may use: `limit` (as `--memory-limit` takes it), or the
    default."""
    return int(memory_bytes(limit or default_memory_limit()))


def deduplicated_messages(staged: Path, multi: str, winners: str) -> str:
    """Return the SQL relation of the messages after deduplication (SPEC section 3).

    `multi` is a relation of the ids seen more than once, `winners` one of the rows that won
    among theirs: every staged row of another id is taken where it lies.
    """
    files = literal(str(staged / "*.parquet"))
    return (
        f"(SELECT * FROM read_parquet({files}) AS staged ANTI JOIN {multi} AS multi USING (id) "
        f"UNION ALL SELECT * FROM {winners})"
    )


def define_relations(
    con: duckdb.DuckDBPyConnection, messages: str, latest: str, conversations: str, statuses: Path
) -> duckdb.DuckDBPyConnection:
    """Create in `con` the views of a derivation that the queryable tables are written from.

    derived_messages: one row per message after deduplication (the staged message columns);
    derived_latest: (owner, id, code, duration, status_created, final_created), the latest
    status of each message that has one, and the earliest `created` of its statuses with a
    final code; derived_conversations: one row per message and participant (owner,
    participant, direction, created, id, segments, code); staged_statuses: every staged status.
    The arguments are SQL relations of `con` holding those rows.
    """
    glob = literal(str(statuses / "*.parquet"))
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW derived_messages AS SELECT * FROM {messages};
        CREATE OR REPLACE TEMP VIEW derived_latest AS
            SELECT owner, id, code, duration, status_created, final_created FROM {latest};
        CREATE OR REPLACE TEMP VIEW derived_conversations AS SELECT * FROM {conversations};
        CREATE OR REPLACE TEMP VIEW staged_statuses AS SELECT * FROM read_parquet({glob});
        """
    )
    return con


# Each conversation's messages and SMS per direction and latest status code, from the
# derivation's relations: the numbers of its summary, and the `conversations` table.
_TALLY = """
COPY (
    SELECT owner, participant, direction, code AS status_code, count(*) AS messages,
        sum(segments)::BIGINT AS sms
    FROM derived_conversations GROUP BY ALL
) TO {target} (FORMAT parquet)
"""

# The summary object (SPEC section 1) of each conversation of a tally file.
_SUMMARIES = """
WITH per_conv AS (
    SELECT owner, participant, sum(messages) AS total, sum(sms) AS total_sms,
        coalesce(string_agg('"' || status_code || '":{"messages":' || messages || ',"sms":'
            || sms || '}', ',' ORDER BY status_code)
            FILTER (WHERE direction = 'mt' AND status_code IS NOT NULL), '') AS mt,
        coalesce(string_agg('"' || status_code || '":{"messages":' || messages || ',"sms":'
            || sms || '}', ',' ORDER BY status_code)
            FILTER (WHERE direction = 'mo' AND status_code IS NOT NULL), '') AS mo
    FROM read_parquet($tallies) {where} GROUP BY owner, participant
)
SELECT owner, participant,
    '{"participant":' || json_text(participant) || ',"totalMessageCount":' || total
    || ',"totalSmsCount":' || total_sms || ',"mobileTerminatedMessages":{' || mt
    || '},"mobileOriginatedMessages":{' || mo || '}}' AS json
FROM per_conv
ORDER BY owner, participant
"""


def tally(derived: Derivation, target: Path) -> Facts:
    """Write the derivation's conversation tallies to `target`; return its facts (`counts`)."""
    derived.relations().execute(_TALLY.format(target=literal(str(target))))
    return derived.counts()


def summaries(
    con: duckdb.DuckDBPyConnection,
    tallies: Path,
    batch_rows: int,
    bucket: tuple[int, int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the summaries of the conversations of a tally file as SUMMARY_SCHEMA batches, in
    (owner, participant) order; with `bucket` (k, of n), only the conversations of bucket k
    (engines/spark.py).

    `con` is a derivation's `relations()`, or any connection of engines/duckdb.py's `connect`,
    which renders text with the engines' JSON macros: every engine's summaries come from this
    one rule.
    """
    where = ""
    if bucket is not None:
        where = "WHERE conversation_bucket(owner, participant, {1:d}) = {0:d}".format(*bucket)
    sql = _SUMMARIES.replace("{where}", where)  # (its JSON braces are not a format string)
    reader = con.sql(sql, params={"tallies": str(tallies)}).to_arrow_reader(batch_rows)
    for batch in reader:
        yield pa.RecordBatch.from_arrays(batch.columns, schema=SUMMARY_SCHEMA)
