"""Column normalisers (SPEC section 2): every accepted spelling of a column into one type."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from convsum.config import RunConfig
from convsum.errors import InputError, InputSchemaError, InputValueError

TIME = pa.timestamp("us")  # UTC, naive: the zone is implied everywhere downstream
_OFFSET = re.compile(r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")
_SUB_MICRO = re.compile(r"^([^.]*\.[0-9]{6})[0-9]+")  # a fraction's digits past the sixth
MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00
MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999
_TIME_RANGE = "0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999"

Normaliser = Callable[["Column"], pa.Array]


@dataclass
class Column:
    """One source column of one batch, with what is needed to explain a bad value.

    `rows` gives the batch row of each value when values are not one per row (the items of a
    nested list); otherwise value i is row i. A string column is checked for valid UTF-8 on
    creation: Parquet readers do not check it, and the engines fail on it later without saying
    where.
    """

    array: pa.Array
    file: Path
    name: str
    first_row: int
    config: RunConfig
    rows: pa.Array | None = None

    def __post_init__(self) -> None:
        if pa.types.is_string(self.array.type) and not _valid_utf8(self.array):
            index = first_failing(self.array, _valid_utf8)
            raise self.fail_at(index, "text is not valid UTF-8; expected UTF-8 text")

    def fail(self, what: str, cls: type[InputError] = InputSchemaError) -> InputError:
        return cls(f"{self.file}: column {self.name!r}: {what}")

    def fail_at(self, index: int, what: str) -> InputError:
        row = self.first_row + (index if self.rows is None else self.rows[index].as_py())
        return self.fail(f"{what} (row index {row})", InputValueError)

    def fail_where(self, mask: pa.Array, what: Callable[[int], str]) -> None:
        """Raise at the first value where `mask` is true (null counts as false), if any.

        `what` gets that value's index and says what is wrong with it.
        """
        mask = pc.fill_null(mask, False)
        if pc.any(mask).as_py():
            index = pc.index(mask, True).as_py()
            raise self.fail_at(index, what(index))


def _valid_utf8(array: pa.Array) -> bool:
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def first_failing(array: pa.Array, ok: Callable[[pa.Array], bool]) -> int:
    """Return the index of the first value for which `ok` fails, given that it fails somewhere.

    `ok` checks a whole slice at once (a cast, a validation); bisecting keeps the search to a
    logarithmic number of vectorised checks. For the error path only.
    """
    lo, hi = 0, len(array)  # the first failing value lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(array.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo


def plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type) or pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    return array


def as_string(col: Column) -> pa.Array:
    """Strings as they are; integer ids and MSISDNs as their decimal text."""
    t = col.array.type
    if pa.types.is_string(t):
        return col.array
    if pa.types.is_integer(t):
        return col.array.cast(pa.string())
    raise col.fail(f"type {t}; expected a string or an integer")


def as_integer(col: Column) -> pa.Array:
    """Integers of any width as int64."""
    t = col.array.type
    if pa.types.is_integer(t):
        return _int64(col)
    raise col.fail(f"type {t}; expected an integer")


def _int64(col: Column) -> pa.Array:
    """Cast an integer column to int64; only a uint64 past 2**63 - 1 does not fit."""
    try:
        return col.array.cast(pa.int64())
    except pa.ArrowInvalid:
        too_big = pc.greater(col.array, pa.scalar(2**63 - 1, pa.uint64()))
        col.fail_where(too_big, lambda i: f"value {col.array[i]}; expected a 64-bit integer")
        raise


def _bounded(low: int, high: int | None = None) -> Normaliser:
    """Integers of any width as int64, each from `low` to `high` (no upper limit when None)."""
    expected = f"from {low} to {high}" if high is not None else f"of {low} or more"

    def normalise(col: Column) -> pa.Array:
        values = as_integer(col)
        outside = pc.less(values, low)
        if high is not None:
            outside = pc.or_(outside, pc.greater(values, high))
        col.fail_where(outside, lambda i: f"value {values[i]}; expected an integer {expected}")
        return values

    return normalise


# A concatenated SMS counts its parts in one byte, so a message has at most 255 segments; 0 is a
# message never split (rejected before sending). The limit also keeps sums of segments far from
# 64-bit overflow, where the engines would disagree.
as_segments = _bounded(0, 255)
# A duration is elapsed time; a negative one is a broken clock or a broken export.
as_duration = _bounded(0)


def as_price(col: Column) -> pa.Array:
    """Floats, decimals and integers as float64; negative prices (refunds, credits) are kept.

    An integer or decimal beyond float64's exact range (2**53) becomes the nearest float64, as a
    price is a float everywhere downstream; Arrow's safe cast would refuse it.
    """
    t = col.array.type
    if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_integer(t):
        return col.array.cast(pa.float64(), safe=False)
    raise col.fail(f"type {t}; expected a number")


def as_time(col: Column) -> pa.Array:
    """Timestamps of any unit (naive means UTC) or ISO-8601 strings as naive UTC microseconds.

    Both kinds accept the years 0001 to 9999 (UTC), which every engine renders alike;
    sub-microsecond digits are floored.
    """
    t = col.array.type
    if pa.types.is_string(t):
        return _parse_iso(col)
    if not pa.types.is_timestamp(t):
        raise col.fail(f"type {t}; expected a timestamp or an ISO-8601 string")
    raw = col.array.view(pa.int64())  # epoch values in the column's unit, UTC for zoned types
    per_micro = {"s": 1_000_000, "ms": 1_000, "us": 1}.get(t.unit)
    if per_micro is None:  # nanoseconds: every value lies within the years 1677-2262
        return _floor_divide(raw, 1_000).view(TIME)
    _check_range(col, raw, MIN_MICROS // per_micro, MAX_MICROS // per_micro)
    return pc.multiply(raw, per_micro).view(TIME)


def _check_range(col: Column, values: pa.Array, low: int, high: int) -> None:
    def what(index: int) -> str:
        found = f"{col.array[index].as_py()!r} " if pa.types.is_string(col.array.type) else ""
        return f"timestamp {found}outside the years 0001-9999; expected {_TIME_RANGE} (UTC)"

    col.fail_where(pc.or_(pc.less(values, low), pc.greater(values, high)), what)


def _floor_divide(values: pa.Array, divisor: int) -> pa.Array:
    """Integer division rounding towards minus infinity (Arrow's rounds towards zero)."""
    quotient = pc.divide(values, divisor)
    inexact_negative = pc.and_(
        pc.less(values, 0), pc.not_equal(pc.multiply(quotient, divisor), values)
    )
    return pc.subtract(quotient, inexact_negative.cast(pa.int64()))


def _parse_iso(col: Column) -> pa.Array:
    """Parse ISO-8601 text, with a zone offset (then converted to UTC) or without (UTC)."""
    # Digits past the microsecond are dropped before parsing: that floors the time, since a
    # fraction always counts forwards from its second.
    text = pc.replace_substring_regex(col.array, _SUB_MICRO.pattern, r"\1")
    zoned = pc.fill_null(pc.match_substring_regex(text, _OFFSET.pattern), False)
    out = pa.nulls(len(text), pa.int64())
    for mask, target in ((zoned, pa.timestamp("us", "UTC")), (pc.invert(zoned), TIME)):
        part = text.filter(mask)
        if not len(part):
            continue
        try:
            parsed = part.cast(target)
        except pa.ArrowInvalid:
            index = pc.indices_nonzero(mask)[first_failing(part, _parses(target))].as_py()
            found = col.array[index].as_py()
            raise col.fail_at(index, f"expected an ISO-8601 timestamp, found {found!r}") from None
        out = pc.replace_with_mask(out, mask, parsed.view(pa.int64()))
    _check_range(col, out, MIN_MICROS, MAX_MICROS)
    return out.view(TIME)


def _parses(target: pa.DataType) -> Callable[[pa.Array], bool]:
    def parses(text: pa.Array) -> bool:
        try:
            text.cast(target)
        except pa.ArrowInvalid:
            return False
        return True

    return parses


def _coded(col: Column, table: Mapping[int, str], what: str) -> pa.Array:
    """Map an integer enum through `table`; an unknown integer is an error."""
    ints = _int64(col)
    known = pa.array(sorted(table), pa.int64())
    unknown = pc.and_(pc.invert(pc.is_in(ints, value_set=known)), ints.is_valid())
    choices = ", ".join(f"{k} ({v})" for k, v in sorted(table.items()))
    col.fail_where(unknown, lambda i: f"{what} {ints[i]} is not one of {choices}")
    values = pa.array([table[k] for k in sorted(table)], pa.string())
    return pc.take(values, pc.index_in(ints, value_set=known))


def as_direction(col: Column) -> pa.Array:
    """`mt`/`mo` in any case, or an integer (or digit string) mapped by the direction codes."""
    t = col.array.type
    if pa.types.is_integer(t):
        return _coded(col, col.config.direction_codes, "direction")
    if not pa.types.is_string(t):
        raise col.fail(f"type {t}; expected 'mt'/'mo' or an integer")
    lowered = pc.utf8_lower(col.array)
    # Longer digit strings cannot be a 64-bit code; they fail below as an unknown direction.
    digits = pc.fill_null(pc.match_substring_regex(lowered, r"^[0-9]{1,18}$"), False)
    if pc.any(digits).as_py():
        as_int = pc.if_else(digits, lowered, None).cast(pa.int64())
        mapped = _coded(
            Column(as_int, col.file, col.name, col.first_row, col.config),
            col.config.direction_codes,
            "direction",
        )
        lowered = pc.if_else(digits, mapped, lowered)
    bad = pc.invert(pc.fill_null(pc.is_in(lowered, value_set=pa.array(["mt", "mo"])), True))
    col.fail_where(
        bad, lambda i: f"direction {col.array[i].as_py()!r}; expected 'mt' or 'mo' (any case)"
    )
    return lowered


def _enum(table_name: str, what: str) -> Normaliser:
    def normalise(col: Column) -> pa.Array:
        t = col.array.type
        if pa.types.is_string(t):
            return col.array
        if pa.types.is_integer(t):
            return _coded(col, getattr(col.config, table_name), what)
        raise col.fail(f"type {t}; expected a string or an integer")

    return normalise


MESSAGE_COLUMNS: dict[str, Normaliser] = {
    "id": as_string,
    "batch_id": as_string,
    "owner": as_string,
    "sender": as_string,
    "recipient": as_string,
    "body": as_string,
    "direction": as_direction,
    "segments": as_segments,
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
STATUS_COLUMNS: dict[str, Normaliser] = {
    "message_id": as_string,
    "code": as_integer,
    "created": as_time,
    "duration": as_duration,
}
