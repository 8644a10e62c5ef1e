"""The Polars engine: SPEC section 3's per-message rules as lazy Polars queries over the staged
Parquet files, an independent second computation of the numbers.

Polars deduplicates the messages, finds each message's latest status, makes the conversation
memberships (from which every engine's tallies and summaries are rendered) and counts the run's
facts. The message lists (positions, the incremental cut, the message object's text) come from
those results through the DuckDB engine's shared steps (`lists`, `conversation_rows`): the page
rules and the renderer are written once.

Every query runs on Polars' streaming engine and ends in a Parquet file in the work directory, so
no derived table is held in this process's Python memory. Polars has no memory cap: the passes
local to a message run in parts sized to the memory limit (see `_parts`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from convsum.codes import FINAL_GROUPS, KNOWN_CODES
from convsum.engines.base import (
    EngineSettings,
    ReadHere,
    StatusOrder,
    deduplicated_messages,
    define_relations,
    memory_budget,
    status_order,
)
from convsum.engines.duckdb import CONTENT, connect, conversation_rows, lists
from convsum.inputs import StagedInputs
from convsum.results import Facts
from convsum.sql import literal

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class PolarsEngine:
    """Compute the derived tables with Polars."""

    name = "polars"

    @contextmanager
    def derive(self, staged: StagedInputs, settings: EngineSettings) -> Iterator[_PolarsDerivation]:
        work = settings.work_dir / "polars"
        work.mkdir(exist_ok=True)
        derivation = _PolarsDerivation(staged, work, settings)
        try:
            yield derivation
        finally:
            derivation.close()


class _PolarsDerivation(ReadHere):
    """Deduplication, latest status and conversation membership (the counts and tallies) in
    Polars; the message lists are positioned, cut and rendered from those results by the shared
    steps of engines/duckdb.py (`lists`, `conversation_rows`), as for every engine."""

    def __init__(self, staged: StagedInputs, work: Path, settings: EngineSettings) -> None:
        self.staged, self.work, self.settings = staged, work, settings
        self.con = connect(settings)
        self.statuses = pl.scan_parquet(staged.statuses / "*.parquet")
        self.staged_messages = pl.scan_parquet(staged.messages / "*.parquet")
        self.parts = _parts(staged, settings)
        self.multi = self._by_part("multi", lambda k: _multi(self._messages_of(k)))
        ids = self.multi.collect(engine="streaming").get_column("id")
        self.multi_rows = self.staged_messages.filter(pl.col("id").is_in(ids.implode()))
        self.winners = pl.scan_parquet(self._sink(_winners(self._with_content()), "winners"))
        # Every other row is read where it lies, only the columns a query asks for.
        self.msg = pl.concat(
            [self.staged_messages.join(self.multi, on="id", how="anti"), self.winners]
        )
        order = status_order(staged.statuses)
        self.latest = self._by_part(
            "latest",
            lambda k: _latest(
                self.msg.filter(_in_part("id", k, self.parts)), self._statuses_of(k), order
            ),
        )
        self.conv = self._by_part(
            "conv",
            lambda k: _conversation_rows(
                self.msg.filter(_in_part("id", k, self.parts)), self._part_file("latest", k)
            ),
        )
        self._define_lists()

    def _with_content(self) -> pl.LazyFrame:
        """The rows of the ids seen more than once, each with its `content` (the deduplication's
        tie-break), rendered by the one renderer of the message object (engines/duckdb.py)."""
        rows = self._sink(self.multi_rows, "multi_rows")
        target = self.work / "multi_content.parquet"
        self.con.execute(
            f"COPY (SELECT *, {CONTENT} AS content FROM read_parquet({literal(str(rows))})) "
            f"TO {literal(str(target))} (FORMAT parquet)"
        )
        return pl.scan_parquet(target)

    def _define_lists(self) -> None:
        """Create `msg` and `latest` in the connection from this engine's files, as `resolve`
        would, then the rows of the lists (`lists`)."""
        self.con.execute(
            f"""
            CREATE TEMP VIEW msg AS SELECT * FROM {self._msg};
            CREATE TEMP VIEW latest AS SELECT owner, id, pairs,
                {{'code': code, 'duration': duration, 'created': status_created}} AS status,
                final_created
            FROM {self._files("latest-*")};
            """
        )
        lists(self.con, self.settings.conversations)

    @property
    def _msg(self) -> str:
        """The SQL relation of the messages after this engine's deduplication."""
        return deduplicated_messages(
            self.staged.messages, self._files("multi-*"), self._files("winners")
        )

    def _files(self, name: str) -> str:
        return f"read_parquet({literal(str(self.work / f'{name}.parquet'))})"

    def _messages_of(self, k: int) -> pl.LazyFrame:
        """The staged message rows of part `k` (see `_parts`)."""
        return self.staged_messages.filter(_in_part("id", k, self.parts))

    def _statuses_of(self, k: int) -> pl.LazyFrame:
        """The staged status rows of part `k`: those of its message ids."""
        return self.statuses.filter(_in_part("message_id", k, self.parts))

    def _part_file(self, name: str, k: int) -> pl.LazyFrame:
        return pl.scan_parquet(self.work / f"{name}-{k:03d}.parquet")

    def _by_part(self, name: str, build: Callable[[int], pl.LazyFrame]) -> pl.LazyFrame:
        """Sink `build(k)` for each part `k`; return the scan of all parts."""
        for k in range(self.parts):
            self._sink(build(k), f"{name}-{k:03d}")
        return pl.scan_parquet(self.work / f"{name}-*.parquet")

    def _sink(self, frame: pl.LazyFrame, name: str) -> Path:
        path = self.work / f"{name}.parquet"
        try:
            frame.sink_parquet(path, engine="streaming")
        except pl.exceptions.PolarsError as exc:
            # Polars wraps the operating system's error (disk full, no inode) in its own: give
            # it back as the OSError that the run reports as an output it cannot write.
            found = _OS_ERROR.search(str(exc))
            if found is None:
                raise
            errno = int(found.group(1))
            raise OSError(errno, os.strerror(errno), str(path)) from exc
        return path

    def relations(self) -> duckdb.DuckDBPyConnection:
        latest, conv = self._files("latest-*"), self._files("conv-*")
        return define_relations(self.con, self._msg, latest, conv, self.staged.statuses)

    def close(self) -> None:
        self.con.close()

    def counts(self) -> Facts:
        latest = self.latest.select(pl.len(), pl.col("pairs").sum())
        shared = self.winners.group_by("id").len().filter(pl.col("len") > 1)
        ambiguous = self.statuses.filter(pl.col("owner").is_null()).join(
            shared, left_on="message_id", right_on="id"
        )
        values = pl.collect_all(
            [
                self.staged_messages.select(pl.len()),
                self.multi_rows.select(pl.len()),
                self.winners.select(pl.len()),
                latest,
                ambiguous.select((pl.col("len") - 1).sum()),
                pl.concat(
                    [self._statuses_of(k).unique().select(pl.len()) for k in range(self.parts)]
                ).sum(),
            ],
            engine="streaming",
        )
        rows, multi_rows, winners = (int(frame.item()) for frame in values[:3])
        with_status, pairs = values[3].row(0)
        extra, distinct = (int(frame.item()) for frame in values[4:])
        messages = rows - multi_rows + winners
        unknown = (
            self.statuses.filter(~pl.col("code").is_in(list(KNOWN_CODES)))
            .group_by("code")
            .len()
            .sort("code")
            .collect(engine="streaming")
        )
        return Facts(
            messages=messages,
            messages_without_status=messages - with_status,
            matched_statuses=(pairs or 0) - extra,
            distinct_statuses=distinct,
            unknown_codes={str(c): n for c, n in unknown.iter_rows()},
        )

    def conversation_rows(self, descending: bool) -> Iterator[pa.RecordBatch]:
        return conversation_rows(self.con, self.settings, descending)


# Polars has no memory cap of its own. The passes local to a message (ids seen twice, latest
# status, conversation rows, distinct statuses) are split into parts by a hash of the message id,
# each sized to fit the memory limit: the working set of a pass is about this many bytes for each
# staged message and status row (measured at ten million messages), and a part may take half
# the limit.
_BYTES_PER_ROW = 100


def _parts(staged: StagedInputs, settings: EngineSettings) -> int:
    """Return into how many parts the passes local to a message are split."""
    rows = sum(staged.rows_read.values())
    budget = memory_budget(settings.memory_limit) // 2
    return max(1, -(-rows * _BYTES_PER_ROW // budget))


def _in_part(column: str, k: int, parts: int) -> pl.Expr:
    """Whether a row's message id (in `column`) falls in part `k` of `parts`."""
    if parts == 1:
        return pl.lit(True)
    return pl.col(column).hash(seed=0) % parts == k


def _multi(messages: pl.LazyFrame) -> pl.LazyFrame:
    """The ids seen more than once (a duplicate, or an id that two owners share)."""
    return messages.group_by("id").len().filter(pl.col("len") > 1).drop("len")


def _winners(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Each (owner, id) of `rows` once: greatest `modified`, then the greater `content`.

    `rows` are those of the ids seen more than once (few), each with its content.
    """
    return (
        rows.sort(
            ["owner", "id", "modified", "content"],
            descending=[False, False, True, True],
            nulls_last=True,
        )
        .unique(subset=["owner", "id"], keep="first", maintain_order=True)
        .drop("content")
    )


def _matched_statuses(keys: pl.LazyFrame, statuses: pl.LazyFrame) -> pl.LazyFrame:
    """Status rows joined to their messages: by id alone, or by id and owner when known."""
    any_owner = statuses.filter(pl.col("owner").is_null()).drop("owner")
    own = statuses.filter(pl.col("owner").is_not_null())
    return pl.concat(
        [
            keys.join(any_owner, left_on="id", right_on="message_id"),
            keys.join(own, left_on=["owner", "id"], right_on=["owner", "message_id"]),
        ]
    )


def _latest(
    messages: pl.LazyFrame, statuses: pl.LazyFrame, order: StatusOrder | None
) -> pl.LazyFrame:
    """Latest status per message, with the same tie-breaks as the DuckDB engine: the greatest
    packed integer where the data allows it (StatusOrder), else a sort. As there, also the
    (status, message) pairs and `final_created`: the earliest `created` of a final code."""
    matched = _matched_statuses(messages.select("owner", "id"), statuses).with_columns(
        final=(pl.col("code") // 100).is_in(list(FINAL_GROUPS))
    )
    if order is None:
        per_message = matched.group_by("owner", "id").agg(
            pairs=pl.len(), final_created=pl.col("created").filter("final").min()
        )
        latest = (
            matched.with_columns(
                has_duration=pl.col("duration").is_not_null(),
                rank_duration=pl.col("duration").fill_null(0),
            )
            .sort(
                ["owner", "id", "created", "final", "code", "has_duration", "rank_duration"],
                descending=[False, False, True, True, True, True, True],
            )
            .unique(subset=["owner", "id"], keep="first", maintain_order=True)
            .select("owner", "id", "code", "duration", status_created="created")
        )
        return latest.join(per_message, on=["owner", "id"])

    def wide(value: pl.Expr) -> pl.Expr:
        return value.cast(pl.Int128)

    def unit(shift: int) -> pl.Expr:
        return pl.lit(1 << shift, pl.Int128)

    micros = pl.col("created").dt.epoch("us")
    rank = (
        (wide(micros) - order.created_from) * unit(order.created_shift)
        + wide(pl.col("final")) * unit(order.final_shift)
        + (wide(pl.col("code")) - order.code_from) * unit(order.code_shift)
        + (wide(pl.col("duration")) + 1).fill_null(0)
    )
    rank_col = pl.col("rank")
    duration = rank_col % unit(order.code_shift)
    code_range = unit(order.final_shift - order.code_shift)
    return (
        matched.group_by("owner", "id")
        .agg(rank=rank.max(), pairs=pl.len(), final_created=pl.col("created").filter("final").min())
        .select(
            "owner",
            "id",
            code=(order.code_from + rank_col // unit(order.code_shift) % code_range).cast(pl.Int64),
            duration=pl.when(duration > 0).then(duration - 1).cast(pl.Int64),
            status_created=pl.from_epoch(
                (order.created_from + rank_col // unit(order.created_shift)).cast(pl.Int64),
                time_unit="us",
            ),
            pairs="pairs",
            final_created="final_created",
        )
    )


def _conversation_rows(messages: pl.LazyFrame, latest: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (message, participant); the sender's and the recipient's, once if equal."""
    coded = messages.join(latest.select("owner", "id", "code"), on=["owner", "id"], how="left")
    columns = ["owner", "participant", "direction", "created", "id", "segments", "code"]
    by_sender = coded.rename({"sender": "participant"}).select(columns)
    by_recipient = (
        coded.filter(pl.col("recipient") != pl.col("sender"))
        .rename({"recipient": "participant"})
        .select(columns)
    )
    return pl.concat([by_sender, by_recipient])
