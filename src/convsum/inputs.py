"""Find, read and normalise the Parquet inputs (SPEC section 2) into canonical staging files.

Every input file is read batch by batch, checked and normalised on its own, so an error names the
exact file, column and row, and memory holds one batch at a time. The result is two Parquet files
with one fixed schema (`MESSAGES_SCHEMA`, `STATUSES_SCHEMA`) that every engine reads.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convsum.config import RunConfig
from convsum.errors import InputError, InputSchemaError, InputValueError

TIME = pa.timestamp("us")  # UTC, naive: the zone is implied everywhere downstream

MESSAGES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string()),
        pa.field("owner", pa.string(), nullable=False),
        pa.field("sender", pa.string(), nullable=False),
        pa.field("recipient", pa.string(), nullable=False),
        pa.field("body", pa.string()),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("segments", pa.int64(), nullable=False),
        pa.field("type", pa.string()),
        pa.field("datacoding", pa.string()),
        pa.field("priority", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("created", TIME, nullable=False),
        pa.field("modified", TIME),
        pa.field("reference", pa.string()),
        pa.field("mcc", pa.string()),
        pa.field("mnc", pa.string()),
    ]
)
# `owner` is set only for statuses taken from a message's nested list: such a status belongs to
# that owner's message alone. Rows of a separate status log leave it null.
STATUSES_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("owner", pa.string()),
        pa.field("code", pa.int64(), nullable=False),
        pa.field("created", TIME, nullable=False),
        pa.field("duration", pa.int64()),
    ]
)
MESSAGE_REQUIRED = ("id", "owner", "sender", "recipient", "direction", "segments", "created")
STATUS_REQUIRED = ("message_id", "code", "created")
NESTED_STATUSES = "statuses"
BATCH_ROWS = 131_072
_OFFSET = re.compile(r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")


@dataclass(frozen=True)
class StagedInputs:
    """Paths of the normalised staging files and what reading them counted."""

    messages: Path
    statuses: Path
    rows_read: Mapping[str, int]
    files_read: Mapping[str, list[Path]]


@dataclass
class _Source:
    """One input file and the hive partition values its path carries."""

    path: Path
    partitions: dict[str, str] = field(default_factory=dict)


def column_key(name: str) -> str:
    """Return the spelling-free key of a column name: `batch_id`, `batchId` -> `batchid`."""
    return name.replace("_", "").lower()


def find_sources(pattern: str, role: str) -> list[_Source]:
    """List the Parquet files behind a file, directory or glob, in a stable order."""
    if glob.has_magic(pattern):
        base = Path(pattern.split("*")[0].split("?")[0].split("[")[0]).parent
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    elif Path(pattern).is_dir():
        base = Path(pattern)
        paths = sorted(
            p
            for p in base.rglob("*.parquet")
            if p.is_file() and not any(part[0] in "._" for part in p.relative_to(base).parts)
        )
    elif Path(pattern).is_file():
        return [_Source(Path(pattern))]
    else:
        msg = f"{role} {pattern}: no such file or directory"
        raise InputError(msg)
    if not paths:
        msg = f"{role} {pattern}: no Parquet files found there (expected *.parquet)"
        raise InputError(msg)
    return [_Source(p, _hive_values(p, base)) for p in paths]


def _hive_values(path: Path, base: Path) -> dict[str, str]:
    try:
        parts = path.relative_to(base).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    return {k: unquote(v) for k, _, v in (p.partition("=") for p in parts if "=" in p) if k}


def stage_inputs(config: RunConfig, work: Path) -> StagedInputs:
    """Normalise both inputs into `work`; raise InputError on the first bad file or value."""
    messages_path, statuses_path = work / "messages.parquet", work / "statuses.parquet"
    rows = {"messages": 0, "statuses": 0, "nested_statuses": 0}
    files: dict[str, list[Path]] = {"messages": [], "statuses": []}
    message_sources = find_sources(config.messages, "messages")
    status_sources = find_sources(config.statuses, "statuses") if config.statuses else []
    with (
        pq.ParquetWriter(messages_path, MESSAGES_SCHEMA) as msg_out,
        pq.ParquetWriter(statuses_path, STATUSES_SCHEMA) as st_out,
    ):
        nested_seen = False
        for source in message_sources:
            files["messages"].append(source.path)
            reader = _FileReader(source, "messages", config, config.message_columns)
            nested_seen |= reader.has(NESTED_STATUSES)
            for batch in reader.batches():
                messages = reader.normalise(batch, _MESSAGE_COLUMNS, MESSAGES_SCHEMA)
                msg_out.write_batch(messages)
                rows["messages"] += messages.num_rows
                if reader.has(NESTED_STATUSES):
                    nested = _nested_statuses(reader, batch, messages)
                    st_out.write_batch(nested)
                    rows["nested_statuses"] += nested.num_rows
        if config.statuses is None and not nested_seen:
            msg = (
                f"messages {config.messages}: no column {NESTED_STATUSES!r} and no --statuses "
                "given; expected a status log or a nested statuses list"
            )
            raise InputSchemaError(msg)
        for source in status_sources:
            files["statuses"].append(source.path)
            reader = _FileReader(source, "statuses", config, config.status_columns)
            for batch in reader.batches():
                statuses = reader.normalise(batch, _STATUS_COLUMNS, STATUSES_SCHEMA)
                st_out.write_batch(statuses)
                rows["statuses"] += statuses.num_rows
    return StagedInputs(messages_path, statuses_path, rows, files)


Normaliser = Callable[["_Column"], pa.Array]


@dataclass
class _Column:
    """One source column of one batch, with what is needed to explain a bad value."""

    array: pa.Array
    file: Path
    name: str
    first_row: int
    config: RunConfig

    def fail(self, what: str, cls: type[InputError] = InputSchemaError) -> InputError:
        return cls(f"{self.file}: column {self.name!r}: {what}")

    def fail_at(self, index: int, what: str) -> InputError:
        row = self.first_row + index
        return self.fail(f"{what} (row index {row})", InputValueError)


class _FileReader:
    """Open one Parquet file, resolve its column names and yield normalised batches."""

    def __init__(
        self, source: _Source, role: str, config: RunConfig, explicit: Mapping[str, str]
    ) -> None:
        self.source, self.role, self.config = source, role, config
        try:
            self.file = pq.ParquetFile(source.path)
        except (pa.ArrowException, OSError) as exc:
            msg = f"{source.path}: not a readable Parquet file ({_first_line(exc)})"
            raise InputError(msg) from exc
        names = list(self.file.schema_arrow.names)
        self.by_key: dict[str, str] = {}
        for name in [*names, *(k for k in source.partitions if k not in names)]:
            key = column_key(name)
            if key in self.by_key:
                msg = f"{source.path}: columns {self.by_key[key]!r} and {name!r} both mean {key!r}"
                raise InputSchemaError(msg)
            self.by_key[key] = name
        for target, name in explicit.items():
            if name not in names and name not in source.partitions:
                msg = f"{source.path}: column {name!r} (mapped to {target!r}) not found"
                raise InputSchemaError(msg)
            self.by_key[column_key(target)] = name
        self.rows_done = 0

    def has(self, target: str) -> bool:
        return column_key(target) in self.by_key

    def batches(self) -> Iterator[pa.RecordBatch]:
        wanted = [n for n in self.by_key.values() if n in self.file.schema_arrow.names]
        try:
            for batch in self.file.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
                yield batch
                self.rows_done += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            msg = f"{self.source.path}: not a readable Parquet file ({_first_line(exc)})"
            raise InputError(msg) from exc

    def source_array(self, batch: pa.RecordBatch, target: str) -> pa.Array | None:
        name = self.by_key.get(column_key(target))
        if name is None:
            return None
        if name in batch.schema.names:
            return batch.column(name)
        return pa.array([self.source.partitions[name]] * batch.num_rows, pa.string())

    def normalise(
        self, batch: pa.RecordBatch, columns: Mapping[str, Normaliser], schema: pa.Schema
    ) -> pa.RecordBatch:
        arrays = []
        for target in schema.names:
            array = self.source_array(batch, target) if target in columns else None
            arrays.append(self._normalise_one(batch.num_rows, target, array, columns, schema))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _normalise_one(
        self,
        num_rows: int,
        target: str,
        array: pa.Array | None,
        columns: Mapping[str, Normaliser],
        schema: pa.Schema,
    ) -> pa.Array:
        required = not schema.field(target).nullable
        if array is None:
            if required:
                msg = f"{self.source.path}: missing required column {target!r} ({self.role})"
                raise InputSchemaError(msg)
            return pa.nulls(num_rows, schema.field(target).type)
        name = self.by_key[column_key(target)]
        column = _Column(_plain(array), self.source.path, name, self.rows_done, self.config)
        if pa.types.is_null(column.array.type):  # an all-null column, as pandas writes one
            result = pa.nulls(num_rows, schema.field(target).type)
        else:
            result = columns[target](column)
        if required and result.null_count:
            index = pc.index(result.is_null(), True).as_py()
            raise column.fail_at(index, "null value; expected a value in every row")
        return result


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type) or pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    return array


def as_string(col: _Column) -> pa.Array:
    """Strings as they are; integer ids and MSISDNs as their decimal text."""
    t = col.array.type
    if pa.types.is_string(t):
        return col.array
    if pa.types.is_integer(t):
        return col.array.cast(pa.string())
    raise col.fail(f"type {t}; expected a string or an integer")


def as_integer(col: _Column) -> pa.Array:
    """Integers of any width as int64."""
    t = col.array.type
    if pa.types.is_integer(t):
        try:
            return col.array.cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise col.fail("value does not fit a 64-bit integer", InputValueError) from exc
    raise col.fail(f"type {t}; expected an integer")


def as_price(col: _Column) -> pa.Array:
    """Floats, decimals and integers as float64."""
    t = col.array.type
    if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_integer(t):
        return col.array.cast(pa.float64())
    raise col.fail(f"type {t}; expected a number")


def as_time(col: _Column) -> pa.Array:
    """Timestamps of any unit (naive means UTC) or ISO-8601 strings as naive UTC microseconds."""
    t = col.array.type
    if pa.types.is_string(t):
        return _parse_iso(col)
    if not pa.types.is_timestamp(t):
        raise col.fail(f"type {t}; expected a timestamp or an ISO-8601 string")
    raw = col.array.view(pa.int64())  # epoch values in the column's unit, UTC for zoned types
    if t.unit in ("s", "ms"):
        try:
            micros = pc.multiply_checked(raw, 1_000_000 if t.unit == "s" else 1_000)
        except pa.ArrowInvalid as exc:
            raise col.fail("timestamp out of range", InputValueError) from exc
        return micros.view(TIME)
    return (_floor_divide(raw, 1_000) if t.unit == "ns" else raw).view(TIME)


def _floor_divide(values: pa.Array, divisor: int) -> pa.Array:
    """Integer division rounding towards minus infinity (Arrow's rounds towards zero)."""
    quotient = pc.divide(values, divisor)
    inexact_negative = pc.and_(
        pc.less(values, 0), pc.not_equal(pc.multiply(quotient, divisor), values)
    )
    return pc.subtract(quotient, inexact_negative.cast(pa.int64()))


def _parse_iso(col: _Column) -> pa.Array:
    zoned = pc.match_substring_regex(col.array, _OFFSET.pattern)
    zoned = pc.fill_null(zoned, False)
    out = pa.nulls(len(col.array), pa.int64())
    for mask, target in (
        (zoned, pa.timestamp("ns", "UTC")),
        (pc.invert(zoned), pa.timestamp("ns")),
    ):
        part = col.array.filter(mask)
        if not len(part):
            continue
        try:
            parsed = part.cast(target).view(pa.int64())
        except pa.ArrowInvalid as exc:
            found = re.search(r"'([^']*)'", str(exc))
            value = f", found {found.group(1)!r}" if found else ""
            raise col.fail(f"expected an ISO-8601 timestamp{value}", InputValueError) from exc
        out = pc.replace_with_mask(out, mask, parsed)
    return _floor_divide(out, 1_000).view(TIME)


def _coded(col: _Column, table: Mapping[int, str], what: str) -> pa.Array:
    """Map an integer enum through `table`; an unknown integer is an error."""
    ints = col.array.cast(pa.int64())
    known = pa.array(sorted(table), pa.int64())
    unknown = pc.and_(pc.invert(pc.is_in(ints, value_set=known)), ints.is_valid())
    if pc.any(unknown).as_py():
        index = pc.index(unknown, True).as_py()
        choices = ", ".join(f"{k} ({v})" for k, v in sorted(table.items()))
        raise col.fail_at(index, f"{what} {ints[index].as_py()} is not one of {choices}")
    values = pa.array([table[k] for k in sorted(table)], pa.string())
    return pc.take(values, pc.index_in(ints, value_set=known))


def as_direction(col: _Column) -> pa.Array:
    """`mt`/`mo` in any case, or an integer (or digit string) mapped by the direction codes."""
    t = col.array.type
    if pa.types.is_integer(t):
        return _coded(col, col.config.direction_codes, "direction")
    if not pa.types.is_string(t):
        raise col.fail(f"type {t}; expected 'mt'/'mo' or an integer")
    lowered = pc.utf8_lower(col.array)
    digits = pc.fill_null(pc.match_substring_regex(lowered, r"^[0-9]+$"), False)
    if pc.any(digits).as_py():
        as_int = pc.if_else(digits, lowered, None).cast(pa.int64())
        mapped = _coded(
            _Column(as_int, col.file, col.name, col.first_row, col.config),
            col.config.direction_codes,
            "direction",
        )
        lowered = pc.if_else(digits, mapped, lowered)
    bad = pc.invert(pc.fill_null(pc.is_in(lowered, value_set=pa.array(["mt", "mo"])), True))
    if pc.any(bad).as_py():
        index = pc.index(bad, True).as_py()
        found = col.array[index].as_py()
        raise col.fail_at(index, f"direction {found!r}; expected 'mt' or 'mo' (any case)")
    return lowered


def _enum(table_name: str, what: str) -> Normaliser:
    def normalise(col: _Column) -> pa.Array:
        t = col.array.type
        if pa.types.is_string(t):
            return col.array
        if pa.types.is_integer(t):
            return _coded(col, getattr(col.config, table_name), what)
        raise col.fail(f"type {t}; expected a string or an integer")

    return normalise


_MESSAGE_COLUMNS: dict[str, Normaliser] = {
    "id": as_string,
    "batch_id": as_string,
    "owner": as_string,
    "sender": as_string,
    "recipient": as_string,
    "body": as_string,
    "direction": as_direction,
    "segments": as_integer,
    "type": _enum("type_codes", "type"),
    "datacoding": _enum("datacoding_codes", "datacoding"),
    "priority": as_integer,
    "price": as_price,
    "currency": as_string,
    "created": as_time,
    "modified": as_time,
    "reference": as_string,
    "mcc": as_string,
    "mnc": as_string,
}
_STATUS_COLUMNS: dict[str, Normaliser] = {
    "message_id": as_string,
    "code": as_integer,
    "created": as_time,
    "duration": as_integer,
}


def _nested_statuses(
    reader: _FileReader, batch: pa.RecordBatch, messages: pa.RecordBatch
) -> pa.RecordBatch:
    """Turn a message batch's nested `statuses` lists into status-log rows."""
    lists = _plain(reader.source_array(batch, NESTED_STATUSES))
    name = reader.by_key[column_key(NESTED_STATUSES)]
    t = lists.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(
        t.value_type
    ):
        msg = f"{reader.source.path}: column {name!r}: type {t}; expected a list of structs"
        raise InputSchemaError(msg)
    parents = pc.list_parent_indices(lists)
    items = pc.list_flatten(lists)
    fields = {
        column_key(items.type.field(i).name): items.field(i) for i in range(items.type.num_fields)
    }
    arrays = []
    for target in STATUSES_SCHEMA.names:
        if target in ("message_id", "owner"):
            arrays.append(
                pc.take(messages.column("id" if target == "message_id" else "owner"), parents)
            )
            continue
        field_array = fields.get(column_key(target))
        required = not STATUSES_SCHEMA.field(target).nullable
        if field_array is None:
            if required:
                msg = f"{reader.source.path}: column {name!r}: struct field {target!r} missing"
                raise InputSchemaError(msg)
            arrays.append(pa.nulls(len(items), STATUSES_SCHEMA.field(target).type))
            continue
        col = _Column(_plain(field_array), reader.source.path, f"{name}.{target}", 0, reader.config)
        result = _STATUS_COLUMNS[target](col)
        if required and result.null_count:
            raise col.fail("null value inside a statuses list; expected a value", InputValueError)
        arrays.append(result)
    return pa.RecordBatch.from_arrays(arrays, schema=STATUSES_SCHEMA)
