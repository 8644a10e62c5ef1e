"""Input normalisation (SPEC section 2): every accepted spelling gives the same staged rows."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convsum.config import RunConfig
from convsum.errors import InputError, InputValueError
from convsum.inputs import stage_inputs
from convsum.normalise import MAX_MICROS, MIN_MICROS
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, T0, message, status, write_parquet

NAIVE_T0 = T0.replace(tzinfo=None)


def _stage(
    tmp_path: Path, messages: str, statuses: str | None, **config: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    work = tmp_path / "work"
    work.mkdir()
    cfg = RunConfig(messages=messages, statuses=statuses, out=str(tmp_path / "out"), **config)
    staged = stage_inputs(cfg, work)
    return pq.read_table(staged.messages).to_pylist(), pq.read_table(staged.statuses).to_pylist()


def _stage_error(kind: type[InputError], tmp_path: Path, *args: Any) -> str:
    """Stage inputs that must fail; return the one-line error, of class `kind`."""
    with pytest.raises(kind) as caught:
        _stage(tmp_path, *args)
    return str(caught.value)


def _canonical_message(id: str = "m1", **fields: Any) -> dict[str, Any]:
    """The staged row of `message(id)`: snake_case names, naive UTC times."""
    row = message(id)
    row["batch_id"] = row.pop("batchId")
    row["created"] = NAIVE_T0
    row.update(fields)
    return row


def _canonical_status(message_id: str = "m1", code: int = 201, **fields: Any) -> dict[str, Any]:
    row = {
        "message_id": message_id,
        "owner": None,
        "code": code,
        "created": NAIVE_T0,
        "duration": 0,
    }
    row.update(fields)
    return row


def test_inputs_camel_case_api_names(tmp_path: Path) -> None:
    m = write_parquet(tmp_path / "m.parquet", [message("m1", batchId="b1")], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    assert _stage(tmp_path, str(m), str(s)) == (
        [_canonical_message(batch_id="b1")],
        [_canonical_status()],
    )


def test_inputs_snake_case_names(tmp_path: Path) -> None:
    row = message("m1")
    row["batch_id"] = "b1"
    del row["batchId"]
    m = write_parquet(tmp_path / "m.parquet", [row])
    s = write_parquet(
        tmp_path / "s.parquet", [{"message_id": "m1", "code": 201, "created": T0, "duration": 0}]
    )
    assert _stage(tmp_path, str(m), str(s)) == (
        [_canonical_message(batch_id="b1")],
        [_canonical_status()],
    )


def test_inputs_explicit_column_mapping(tmp_path: Path) -> None:
    row = message("m1")
    row["msisdn_to"] = row.pop("recipient")
    m = write_parquet(tmp_path / "m.parquet", [row])
    s = write_parquet(
        tmp_path / "s.parquet", [{"msg": "m1", "code": 201, "created": T0, "duration": 0}]
    )
    staged = _stage(
        tmp_path,
        str(m),
        str(s),
        message_columns={"recipient": "msisdn_to"},
        status_columns={"messageId": "msg"},
    )
    assert staged == ([_canonical_message()], [_canonical_status()])


def test_inputs_integer_enums(tmp_path: Path) -> None:
    rows = [
        message("m1", direction=0, type=1, datacoding=0),
        message("m2", direction=1, type=0, datacoding=2),
    ]
    m = write_parquet(
        tmp_path / "m.parquet",
        rows,
        {**MESSAGE_TYPES, "direction": pa.int8(), "type": pa.int16(), "datacoding": pa.uint8()},
    )
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s))
    assert got == [
        _canonical_message("m1", direction="mt", type="SMS", datacoding="gsm"),
        _canonical_message("m2", direction="mo", type="flash", datacoding="ucs"),
    ]


def test_inputs_direction_codes_are_configurable(tmp_path: Path) -> None:
    m = write_parquet(
        tmp_path / "m.parquet",
        [message("m1", direction=1)],
        {**MESSAGE_TYPES, "direction": pa.int32()},
    )
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s), direction_codes={1: "mt", 2: "mo"})
    assert [r["direction"] for r in got] == ["mt"]


def test_inputs_string_directions_in_any_case(tmp_path: Path) -> None:
    rows = [
        message("m1", direction="MT"),
        message("m2", direction="Mo"),
        message("m3", direction="mo"),
    ]
    m = write_parquet(tmp_path / "m.parquet", rows, MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s))
    assert [r["direction"] for r in got] == ["mt", "mo", "mo"]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Stockholm"])
def test_inputs_timestamps_of_every_unit_and_zone(
    tmp_path: Path, unit: str, tz: str | None
) -> None:
    created = T0 + timedelta(seconds=3, milliseconds=250 if unit != "s" else 0)
    value = created if tz else created.replace(tzinfo=None)
    m = write_parquet(
        tmp_path / "m.parquet",
        [message("m1", created=value)],
        {**MESSAGE_TYPES, "created": pa.timestamp(unit, tz)},
    )
    s = write_parquet(
        tmp_path / "s.parquet",
        [status("m1", 201, value)],
        {**STATUS_TYPES, "created": pa.timestamp(unit, tz)},
    )
    got_m, got_s = _stage(tmp_path, str(m), str(s))
    assert got_m[0]["created"] == created.replace(tzinfo=None)
    assert got_s[0]["created"] == created.replace(tzinfo=None)


ISO_CASES = [
    ("2024-01-01T12:00:00Z", NAIVE_T0),
    ("2024-01-01T14:00:00.250+02:00", NAIVE_T0 + timedelta(milliseconds=250)),
    ("2024-01-01 12:00:01", NAIVE_T0 + timedelta(seconds=1)),
    ("2024-01-01T12:00:02.123456789Z", NAIVE_T0 + timedelta(seconds=2, microseconds=123456)),
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1)),
    ("0001-01-01T01:00:00.5+01:00", datetime(1, 1, 1, 0, 0, 0, 500000)),
    ("9999-12-31 23:59:59.999999999", datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ("1969-12-31T23:59:59.9999999Z", datetime(1969, 12, 31, 23, 59, 59, 999999)),
]


@pytest.mark.parametrize(("text", "expected"), ISO_CASES)
def test_inputs_iso_strings(tmp_path: Path, text: str, expected: datetime) -> None:
    """ISO text of any offset, with the years 0001-9999 as typed timestamps; floored to µs."""
    rows = [message("m1", created=text)]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "created": pa.string()})
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s))
    assert [r["created"] for r in got] == [expected]


def test_inputs_iso_strings_mixed_in_one_column(tmp_path: Path) -> None:
    rows = [message(f"m{i}", created=text) for i, (text, _) in enumerate(ISO_CASES)]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "created": pa.string()})
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s))
    assert [r["created"] for r in got] == [expected for _, expected in ISO_CASES]


def test_inputs_integer_widths_and_integer_ids(tmp_path: Path) -> None:
    rows = [message(1234, sender=46700000001, recipient=46734487112, segments=3, priority=2)]
    types = {
        **MESSAGE_TYPES,
        "id": pa.int64(),
        "sender": pa.int64(),
        "recipient": pa.uint64(),
        "segments": pa.int8(),
        "priority": pa.uint16(),
    }
    m = write_parquet(tmp_path / "m.parquet", rows, types)
    s = write_parquet(
        tmp_path / "s.parquet",
        [status(1234, 201)],
        {**STATUS_TYPES, "messageId": pa.int32(), "code": pa.int16()},
    )
    got_m, got_s = _stage(tmp_path, str(m), str(s))
    assert got_m == [
        _canonical_message(
            "1234",
            sender="46700000001",
            recipient="46734487112",
            segments=3,
            priority=2,
            body="body of 1234",
        )
    ]
    assert got_s == [_canonical_status("1234")]


def test_inputs_nested_statuses_layout(tmp_path: Path) -> None:
    nested = pa.list_(
        pa.struct(
            [("code", pa.int32()), ("duration", pa.int32()), ("created", pa.timestamp("ms", "UTC"))]
        )
    )
    rows = [
        message(
            "m1",
            statuses=[
                {"code": 101, "duration": 0, "created": T0},
                {"code": 201, "duration": 3, "created": T0 + timedelta(seconds=5)},
            ],
        ),
        message("m2", statuses=[]),
    ]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "statuses": nested})
    got_m, got_s = _stage(tmp_path, str(m), None)
    assert [r["id"] for r in got_m] == ["m1", "m2"]
    assert got_s == [
        _canonical_status("m1", 101, owner="acme"),
        _canonical_status(
            "m1", 201, owner="acme", duration=3, created=NAIVE_T0 + timedelta(seconds=5)
        ),
    ]


def test_inputs_directory_of_several_files(tmp_path: Path) -> None:
    write_parquet(tmp_path / "m" / "part-1.parquet", [message("m2")], MESSAGE_TYPES)
    write_parquet(tmp_path / "m" / "part-0.parquet", [message("m1")], MESSAGE_TYPES)
    write_parquet(tmp_path / "m" / "_SUCCESS.parquet", [message("ignored")], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(tmp_path / "m"), str(s))
    assert [r["id"] for r in got] == ["m1", "m2"]


def test_inputs_hive_partitions_supply_columns(tmp_path: Path) -> None:
    for owner in ("acme", "bank"):
        row = message(f"{owner}-1")
        del row["owner"]
        write_parquet(
            tmp_path / "m" / f"owner={owner}" / "date=2024-01-01" / "part-0.parquet", [row]
        )
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(tmp_path / "m"), str(s))
    assert [(r["id"], r["owner"]) for r in got] == [("acme-1", "acme"), ("bank-1", "bank")]


def test_inputs_glob(tmp_path: Path) -> None:
    write_parquet(tmp_path / "in" / "a" / "x.parquet", [message("m1")], MESSAGE_TYPES)
    write_parquet(tmp_path / "in" / "b" / "x.parquet", [message("m2")], MESSAGE_TYPES)
    write_parquet(tmp_path / "in" / "b" / "y.other", [message("m3")], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(tmp_path / "in" / "*" / "*.parquet"), str(s))
    assert [r["id"] for r in got] == ["m1", "m2"]


def test_inputs_dictionary_and_large_strings(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [message("m1")], schema=pa.schema([(k, v) for k, v in MESSAGE_TYPES.items()])
    )
    table = table.set_column(
        table.schema.get_field_index("owner"), "owner", table.column("owner").dictionary_encode()
    )
    table = table.set_column(
        table.schema.get_field_index("body"), "body", table.column("body").cast(pa.large_string())
    )
    pq.write_table(table, tmp_path / "m.parquet")
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(tmp_path / "m.parquet"), str(s))
    assert got == [_canonical_message()]


def test_inputs_zoned_created_equals_utc(tmp_path: Path) -> None:
    stockholm = timezone(timedelta(hours=1))
    local = datetime(2024, 1, 1, 13, 0, tzinfo=stockholm)
    assert local == T0
    m = write_parquet(
        tmp_path / "m.parquet",
        [message("m1", created=local)],
        {**MESSAGE_TYPES, "created": pa.timestamp("us", "Europe/Stockholm")},
    )
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    got, _ = _stage(tmp_path, str(m), str(s))
    assert got[0]["created"] == datetime(2024, 1, 1, 12, 0, tzinfo=UTC).replace(tzinfo=None)


def test_inputs_file_name_not_utf8_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    # pathlib cannot hold a name that is not UTF-8 text; open() takes the bytes.
    with open(os.fsencode(folder) + b"/caf\xe9.parquet", "wb") as file:  # noqa: PTH123
        pq.write_table(pa.Table.from_pylist([message("m1")]), file)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    expected = (
        f"messages {folder}/caf\\xe9.parquet: file name is not valid UTF-8; expected a UTF-8 path"
    )
    assert _stage_error(InputError, tmp_path, str(folder), str(s)) == expected


def test_inputs_null_in_nested_statuses_names_the_message_row(tmp_path: Path) -> None:
    nested = pa.list_(pa.struct([("code", pa.int32()), ("created", pa.timestamp("ms", "UTC"))]))
    rows = [
        message("m1", statuses=[{"code": 201, "created": T0}]),
        message("m2", statuses=[{"code": 201, "created": T0}, {"code": None, "created": T0}]),
    ]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "statuses": nested})
    expected = (
        f"{m}: column 'statuses.code': null value inside a statuses list; expected a value "
        "(row index 1)"
    )
    assert _stage_error(InputValueError, tmp_path, str(m), None) == expected


@pytest.mark.parametrize("text", ["0000-12-31T23:59:59Z", "0001-01-01T00:30+01:00"])
def test_inputs_iso_string_before_year_1_is_rejected(tmp_path: Path, text: str) -> None:
    rows = [message("m1", created="2024-01-01T12:00:00Z"), message("m2", created=text)]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "created": pa.string()})
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    expected = (
        f"{m}: column 'created': timestamp {text!r} outside the years 0001-9999; "
        "expected 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 (UTC) (row index 1)"
    )
    assert _stage_error(InputValueError, tmp_path, str(m), str(s)) == expected


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("micros", [MIN_MICROS - 1_000_000, MAX_MICROS + 1_000_000])
def test_inputs_typed_timestamp_outside_years_1_to_9999_is_rejected(
    tmp_path: Path, unit: str, micros: int
) -> None:
    per_micro = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
    raw = pa.array([0, 0, micros // per_micro], pa.int64()).view(pa.timestamp(unit, "UTC"))
    table = pa.Table.from_pylist(
        [message(f"m{i}") for i in range(3)], schema=pa.schema(list(MESSAGE_TYPES.items()))
    )
    table = table.set_column(table.schema.get_field_index("created"), "created", raw)
    pq.write_table(table, tmp_path / "m.parquet")
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    expected = (
        f"{tmp_path / 'm.parquet'}: column 'created': timestamp outside the years 0001-9999; "
        "expected 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 (UTC) (row index 2)"
    )
    assert _stage_error(InputValueError, tmp_path, str(tmp_path / "m.parquet"), str(s)) == expected


def test_inputs_segments_0_and_255_and_negative_prices_are_kept(tmp_path: Path) -> None:
    rows = [message("m1", segments=0, price=-0.05), message("m2", segments=255, price=-12.5)]
    m = write_parquet(tmp_path / "m.parquet", rows, MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [status("m1", 104, duration=0)], STATUS_TYPES)
    assert _stage(tmp_path, str(m), str(s)) == (
        [
            _canonical_message("m1", segments=0, price=-0.05),
            _canonical_message("m2", segments=255, price=-12.5),
        ],
        [_canonical_status("m1", 104)],
    )


@pytest.mark.parametrize(
    ("price_type", "prices"),
    [
        (pa.int64(), [-(2**63), 2**63 - 1, 2**53 + 1]),
        (pa.uint64(), [2**64 - 1]),
        (pa.decimal128(38, 2), [Decimal("-123456789012345678901234567890123456.78")]),
    ],
)
def test_inputs_prices_beyond_float64s_exact_range_become_the_nearest_float(
    tmp_path: Path, price_type: pa.DataType, prices: list[Any]
) -> None:
    types = {**MESSAGE_TYPES, "price": price_type}
    rows = [message(f"m{i}", price=p) for i, p in enumerate(prices)]
    m = write_parquet(tmp_path / "m.parquet", rows, types)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    staged, _ = _stage(tmp_path, str(m), str(s))
    assert [row["price"] for row in staged] == [float(p) for p in prices]


def test_inputs_negative_duration_in_nested_statuses_is_rejected(tmp_path: Path) -> None:
    nested = pa.list_(
        pa.struct([("code", pa.int32()), ("duration", pa.int32()), ("created", pa.timestamp("ms"))])
    )
    statuses = [{"code": 201, "duration": 1, "created": NAIVE_T0}]
    rows = [
        message("m1", statuses=statuses),
        message("m2", statuses=[*statuses, {"code": 201, "duration": -1, "created": NAIVE_T0}]),
    ]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, "statuses": nested})
    expected = (
        f"{m}: column 'statuses.duration': value -1; expected an integer of 0 or more (row index 1)"
    )
    assert _stage_error(InputValueError, tmp_path, str(m), None) == expected


@pytest.mark.parametrize("column", ["type", "priority"])
def test_inputs_uint64_past_int64_is_rejected_with_its_row(tmp_path: Path, column: str) -> None:
    rows = [message("m1", **{column: 1}), message("m2", **{column: 2**64 - 1})]
    m = write_parquet(tmp_path / "m.parquet", rows, {**MESSAGE_TYPES, column: pa.uint64()})
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    expected = (
        f"{m}: column {column!r}: value 18446744073709551615; expected a 64-bit integer "
        "(row index 1)"
    )
    assert _stage_error(InputValueError, tmp_path, str(m), str(s)) == expected


def test_inputs_direction_of_twenty_digits_is_rejected(tmp_path: Path) -> None:
    digits = "9" * 20
    m = write_parquet(tmp_path / "m.parquet", [message("m1", direction=digits)], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    expected = (
        f"{m}: column 'direction': direction {digits!r}; expected 'mt' or 'mo' (any case) "
        "(row index 0)"
    )
    assert _stage_error(InputValueError, tmp_path, str(m), str(s)) == expected
