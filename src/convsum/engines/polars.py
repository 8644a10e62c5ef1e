"""The Polars engine: SPEC section 3 as lazy Polars queries over the staged Parquet files.

Every query runs on Polars' streaming engine and ends in a Parquet file in the work directory,
read back batch by batch, so no derived table is held in this process's Python memory. Polars
has no memory cap: the passes local to a message run in parts sized to the memory limit (see
`_parts`). What Polars may still hold whole inside a query: the window positions (`over`) and the
sorts of the ordered lists; the DuckDB engine spills those to disk under its memory limit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.codes import FINAL_GROUPS, KNOWN_CODES
from convsum.engines.base import (
    CONVERSATION_SCHEMA,
    EngineSettings,
    StatusOrder,
    WrittenHere,
    deduplicated_messages,
    define_relations,
    memory_budget,
    message_object_parts,
    status_order,
)
from convsum.engines.duckdb import connect
from convsum.inputs import StagedInputs
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


class _PolarsDerivation(WrittenHere):
    def __init__(self, staged: StagedInputs, work: Path, settings: EngineSettings) -> None:
        self.staged, self.work, self.batch_rows = staged, work, settings.batch_rows
        self.settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self.statuses = pl.scan_parquet(staged.statuses / "*.parquet")
        self.staged_messages = pl.scan_parquet(staged.messages / "*.parquet")
        self.parts = _parts(staged, settings)
        self.multi = self._by_part("multi", lambda k: _multi(self._messages_of(k)))
        ids = self.multi.collect(engine="streaming").get_column("id")
        self.multi_rows = self.staged_messages.filter(pl.col("id").is_in(ids.implode()))
        self.winners = pl.scan_parquet(self._sink(_winners(self.multi_rows), "winners"))
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
        self.conv_out = self.conv
        self.only: pl.LazyFrame | None = None
        self.page_size = settings.page_size
        if settings.conversations is not None:
            self.only = pl.scan_parquet(settings.conversations)
            cut = self.only.select("owner", "participant", "cut_created", "cut_id")
            # The flag is a column, not a filter on the join: fused into it, Polars reorders the
            # joins into one on the owner alone (measured at 1M: 8 s and 8.6 GB, not 0.4 s).
            self.conv_out = (
                self.conv.join(cut, on=["owner", "participant"])
                .with_columns(kept=_at_or_after("cut_created", "cut_id"))
                .filter("kept")
                .drop("cut_created", "cut_id", "kept")
            )

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
        if self._con is None:
            multi, winners, latest, conv = (
                f"read_parquet({literal(str(self.work / name))})"
                for name in (
                    "multi-*.parquet",
                    "winners.parquet",
                    "latest-*.parquet",
                    "conv-*.parquet",
                )
            )
            msg = deduplicated_messages(self.staged.messages, multi, winners)
            con = connect(self.settings)
            self._con = define_relations(con, msg, latest, conv, self.staged.statuses)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def counts(self) -> dict[str, Any]:
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
        return {
            "messages": messages,
            "messages_without_status": messages - with_status,
            "matched_statuses": (pairs or 0) - extra,
            "distinct_statuses": distinct,
            "unknown_codes": {str(c): n for c, n in unknown.iter_rows()},
        }

    def conversation_rows(self, descending: bool) -> Iterator[pa.RecordBatch]:
        rendered = _rendered(self.msg, self.latest)
        frame = _ordered_rows(self.conv_out, rendered, descending)
        if self.only is not None and not descending:
            frame = _changed_pages(frame, self.only, self.page_size)
        frame = frame.select(
            "owner", "participant", "direction", "pos_all", "pos_dir", json="," + pl.col("json")
        )
        path = self._sink(frame, "rows_desc" if descending else "rows_asc")
        yield from _read(path, CONVERSATION_SCHEMA, self.batch_rows)


def _read(path: Path, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield pa.RecordBatch.from_arrays(
            [column.cast(field.type) for column, field in zip(batch.columns, schema, strict=True)],
            schema=schema,
        )


def _json_text(column: str) -> pl.Expr:
    """The column's JSON text, `null` for null: what orjson writes for the value."""
    encoded = pl.struct(pl.col(column)).struct.json_encode()
    return encoded.str.strip_prefix(f'{{"{column}":').str.strip_suffix("}")


def _json_int(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).fill_null("null")


def _json_time(column: str) -> pl.Expr:
    iso = _iso_time(pl.col(column))
    return pl.when(pl.col(column).is_null()).then(pl.lit("null")).otherwise('"' + iso + '"')


def _iso_time(value: pl.Expr) -> pl.Expr:
    millis = value.dt.millisecond()
    fraction = pl.when(millis != 0).then(value.dt.strftime(".%3f")).otherwise(pl.lit(""))
    return value.dt.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _json_double(column: str) -> pl.Expr:
    value = pl.col(column)
    finite = value.is_finite().fill_null(False)
    return pl.when(finite).then(_json_text(column)).otherwise(pl.lit("null"))


def _object_parts(parts: list[tuple[str, str, str]]) -> list[pl.Expr]:
    """Return expressions concatenating message fields as JSON, each behind its key."""
    render = {"text": _json_text, "int": _json_int, "double": _json_double, "time": _json_time}
    return [
        expr for prefix, column, kind in parts for expr in (pl.lit(prefix), render[kind](column))
    ]


def _message_json(statuses: pl.Expr) -> pl.Expr:
    """The message object's text around a `statuses` value."""
    head_parts, tail_parts = message_object_parts()
    head, tail = _object_parts(head_parts), _object_parts(tail_parts)
    return pl.concat_str([*head, pl.lit(',"statuses":'), statuses, *tail, pl.lit("}")])


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
    """Each (owner, id) of `rows` once: greatest `modified`, then the greater content (as DuckDB).

    `rows` are those of the ids seen more than once (few): only they are sorted and rendered.
    """
    return (
        rows.with_columns(content=_message_json(pl.lit("")))
        .sort(
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


def _rendered(messages: pl.LazyFrame, latest: pl.LazyFrame) -> pl.LazyFrame:
    """Each message's object text, with its latest status; rendered only when pages are asked."""
    status = pl.concat_str(
        [
            pl.lit('[{"code":'), pl.col("code").cast(pl.String),
            pl.lit(',"duration":'), _json_int("duration"),
            pl.lit(',"created":'), _json_time("status_created"),
            pl.lit("}]"),
        ]
    )  # fmt: skip
    statuses = pl.when(pl.col("code").is_null()).then(pl.lit("[]")).otherwise(status)
    return messages.join(latest, on=["owner", "id"], how="left").select(
        "owner", "id", json=_message_json(statuses)
    )


def _ordered_rows(conv: pl.LazyFrame, rendered: pl.LazyFrame, descending: bool) -> pl.LazyFrame:
    order = [False, False, descending, descending]
    return (
        conv.join(rendered, on=["owner", "id"])
        .sort(["owner", "participant", "created", "id"], descending=order)
        .with_columns(
            pos_all=pl.int_range(pl.len(), dtype=pl.Int64).over("owner", "participant"),
            pos_dir=pl.int_range(pl.len(), dtype=pl.Int64).over(
                "owner", "participant", "direction"
            ),
        )
    )


def _at_or_after(created: str, id_: str) -> pl.Expr:
    """Whether a row's (created, id) is at or after those columns' (true when they are null)."""
    return (
        pl.col(created).is_null()
        | (pl.col("created") > pl.col(created))
        | ((pl.col("created") == pl.col(created)) & (pl.col("id") >= pl.col(id_)))
    )


def _changed_pages(rows: pl.LazyFrame, only: pl.LazyFrame, page_size: int) -> pl.LazyFrame:
    """Keep the rows of the pages that may have changed (see EngineSettings.conversations)."""
    since = only.select(
        "owner", "participant", "since_created", "since_id", "base_all", "base_mt", "base_mo"
    )
    rows = rows.join(since, on=["owner", "participant"], how="left", maintain_order="left")
    changed = _at_or_after("since_created", "since_id")
    base_dir = pl.when(pl.col("direction") == "mt").then("base_mt").otherwise("base_mo")
    rows = rows.with_columns(
        pos_all=pl.col("pos_all") + pl.col("base_all"), pos_dir=pl.col("pos_dir") + base_dir
    )

    def cut(position: str, base: pl.Expr, *key: str) -> pl.Expr:
        first = pl.when(changed).then(pl.col(position)).min().over(*key)
        length = base + pl.len().over(*key).cast(pl.Int64)
        start = pl.min_horizontal(first.fill_null(length), length - 1) // page_size * page_size
        return pl.when(pl.col(position) >= start).then(pl.col(position))

    return rows.with_columns(
        pos_all=cut("pos_all", pl.col("base_all"), "owner", "participant"),
        pos_dir=cut("pos_dir", base_dir, "owner", "participant", "direction"),
    ).filter(pl.col("pos_all").is_not_null() | pl.col("pos_dir").is_not_null())
