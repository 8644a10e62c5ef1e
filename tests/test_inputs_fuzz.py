"""A fuzzer for the reader (SPEC sections 2 and 6): random Parquet inputs never crash a run.

Every run on random files (random column sets and spellings, types, nulls, encodings, extreme
values, invalid UTF-8, nested statuses, hive partition directories) ends with exit 0, or with
exit 1, exactly one `Error:` line and the output root byte-identical to before. Both engines give
the same answer: the same exit code, the same error line, the same published API tree.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from convsum.cli import cli
from tests.conftest import (
    LOCAL_ENGINES,
    MESSAGE_TYPES,
    STATUS_TYPES,
    message,
    snapshot,
    status,
    write_parquet,
)

pytestmark = pytest.mark.slow  # left out of make test-fast

# Reading and checking the inputs is one code for every engine; the Spark engine's derivation
# runs the DuckDB engine's steps (see tests.conftest.LOCAL_ENGINES), at a second or two a run.
INT64 = (-(2**63), 2**63 - 1)
INTEGER_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint64()]
TIME_TYPES = [
    pa.timestamp("s"),
    pa.timestamp("ms", "UTC"),
    pa.timestamp("us"),
    pa.timestamp("ns", "Europe/Stockholm"),
]
WILD_TYPES = [
    pa.string(),
    pa.large_string(),
    pa.binary(),
    pa.bool_(),
    pa.float64(),
    pa.decimal128(38, 2),
    pa.date32(),
    pa.null(),
    pa.list_(pa.int32()),
    pa.struct([("code", pa.int32())]),
    *INTEGER_TYPES,
    *TIME_TYPES,
]
TEXTS = [
    b"",
    b"mt",
    b"MO",
    b"1",
    b"SMS",
    b"Acme",
    b"46700000001",
    b"../x",
    b"caf\xc3\xa9",
    b"caf\xe9",
    b"\xff",
    b"\x00",
    b"2024-01-01T12:00:00Z",
    b"2024-01-01 12:00:00.123456789",
    b"0001-01-01T00:00:00+01:00",
    b"9999-12-31T23:59:59.999999999Z",
    b"0000-01-01T00:00:00",
    b"yesterday",
    b"99999999999999999999",
]
# (camelCase name, snake_case name, values that are usually valid)
GOOD_TEXT = st.sampled_from(["Acme", "4670", "4671", "Shop1", "../x"]).map(str.encode)
GOOD_TIME = st.sampled_from([0, 1_704_110_400_000, -62_135_596_800_000, 253_402_300_799_999])
MESSAGE_COLUMNS: dict[str, tuple[str, pa.DataType, st.SearchStrategy[Any]]] = {
    "id": ("id", pa.string(), st.sampled_from([b"m1", b"m2", b"m3"])),
    "batchId": ("batch_id", pa.string(), GOOD_TEXT),
    "owner": ("owner", pa.string(), st.sampled_from([b"acme", b"bank"])),
    "sender": ("sender", pa.string(), GOOD_TEXT),
    "recipient": ("recipient", pa.string(), GOOD_TEXT),
    "body": ("body", pa.string(), GOOD_TEXT),
    "direction": ("direction", pa.string(), st.sampled_from([b"mt", b"MO", b"0", b"1"])),
    "segments": ("segments", pa.int32(), st.integers(0, 6)),
    "type": ("type", pa.int8(), st.sampled_from([0, 1])),
    "datacoding": ("data_coding", pa.int8(), st.sampled_from([0, 2])),
    "priority": ("priority", pa.int32(), st.integers(-3, 3)),
    "price": ("price", pa.float64(), st.sampled_from([0.05, -1.5, 0.0, float("nan")])),
    "currency": ("currency", pa.string(), st.sampled_from([b"SEK", b"EUR"])),
    "created": ("created", pa.timestamp("ms", "UTC"), GOOD_TIME),
    "modified": ("modified", pa.timestamp("ms", "UTC"), GOOD_TIME),
    "reference": ("reference", pa.string(), GOOD_TEXT),
    "mcc": ("mcc", pa.string(), st.sampled_from([b"240"])),
    "mnc": ("mnc", pa.string(), st.sampled_from([b"07"])),
}
STATUS_COLUMNS: dict[str, tuple[str, pa.DataType, st.SearchStrategy[Any]]] = {
    "messageId": ("message_id", pa.string(), st.sampled_from([b"m1", b"m2", b"ghost"])),
    "code": ("code", pa.int32(), st.sampled_from([101, 201, 402, 999, 0, -5])),
    "created": ("created", pa.timestamp("ms", "UTC"), GOOD_TIME),
    "duration": ("duration", pa.int32(), st.integers(0, 9)),
}
REQUIRED = {"id", "owner", "sender", "recipient", "direction", "segments", "created", "code"}
# Mostly harmless keys; the others supply a column or clash with one.
PARTITION_KEYS = [*["date"] * 6, "x", "owner", "Owner", "direction", "type", "batch_id"]
PARTITION_VALUES = ["2024-01-01", "acme", "mt", "1", "caf%C3%A9", "caf%E9", "a b", "%", ""]


def _wild_values(t: pa.DataType) -> st.SearchStrategy[Any]:
    """Values of type `t` (as raw bytes or integers where a cast follows), extremes first."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return st.sampled_from(TEXTS) | st.binary(max_size=4)
    if pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_integer(t):
            info = (-(2 ** (t.bit_width - 1)), 2 ** (t.bit_width - 1) - 1)
            low, high = (0, 2**t.bit_width - 1) if pa.types.is_unsigned_integer(t) else info
        elif pa.types.is_date(t):
            low, high = -(2**31), 2**31 - 1
        else:  # Parquet stores seconds as milliseconds: keep them from overflowing on write
            low, high = (-(INT64[1] // 1000), INT64[1] // 1000) if t.unit == "s" else INT64
        extremes = st.sampled_from([v for v in (low, high, 0, -1, 1, 256) if low <= v <= high])
        return st.one_of(extremes, extremes, extremes, st.integers(low, high))
    if pa.types.is_floating(t):
        return st.floats(allow_nan=True, allow_infinity=True)
    if pa.types.is_decimal(t):
        return st.decimals(-(10**35), 10**35, places=2, allow_nan=False, allow_infinity=False)
    if pa.types.is_boolean(t):
        return st.booleans()
    return st.none()


def _array(values: list[Any], t: pa.DataType) -> pa.Array:
    """Build an array of type `t` from drawn values, keeping invalid UTF-8 as it is."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pa.array(values, pa.binary() if pa.types.is_string(t) else pa.large_binary())
        return pa.Array.from_buffers(t, len(raw), raw.buffers(), raw.null_count)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.array(values, pa.int64() if pa.types.is_timestamp(t) else pa.int32()).view(t)
    if pa.types.is_decimal(t):
        return pa.array([None if v is None else Decimal(v) for v in values], t)
    return pa.array(values, t)


def _kin(natural: pa.DataType) -> list[pa.DataType]:
    """Types a column may come in besides its natural one without being the wrong kind."""
    if pa.types.is_integer(natural):
        return INTEGER_TYPES
    return TIME_TYPES if pa.types.is_timestamp(natural) else [natural]


@st.composite
def _column(
    draw: st.DrawFn,
    natural: pa.DataType,
    good: st.SearchStrategy[Any],
    rows: int,
    wild: bool = True,
    nulls: bool = True,
) -> pa.Array:
    """Draw one column: its natural type and good values, or when wild anything at all."""
    t = draw(st.sampled_from(WILD_TYPES) | st.sampled_from(_kin(natural))) if wild else natural
    values_of = _wild_values(t) if wild else good
    if wild and draw(st.booleans()):  # one value in every row: extremes add up
        values = [draw(values_of)] * rows
    else:
        values = draw(
            st.lists(st.none() | values_of if nulls else values_of, min_size=rows, max_size=rows)
        )
    array = _array(values, t)
    if pa.types.is_string(t) and draw(st.booleans()):
        array = array.dictionary_encode()
    return array


@st.composite
def _nested_statuses(draw: st.DrawFn, rows: int, wild: bool) -> pa.Array:
    """Draw a nested statuses list column (a list of structs with random fields)."""
    lengths = draw(st.lists(st.integers(0, 2), min_size=rows, max_size=rows))
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    names = ["code", "created", *draw(st.sampled_from([[], ["duration"]]))]
    if wild:
        names = draw(st.lists(st.sampled_from(["code", "duration", "created"]), min_size=1))
        names = list(dict.fromkeys(names))
    fields = [
        draw(_column(*STATUS_COLUMNS[n][1:], rows=offsets[-1], wild=wild, nulls=wild))
        for n in names
    ]
    items = pa.StructArray.from_arrays(fields, names)
    mask = pa.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items, mask=mask)


@st.composite
def _table(draw: st.DrawFn, role: str, partitions: list[str]) -> pa.Table:
    """Draw a table of one role: mostly good columns in any spelling, a few wild ones."""
    spec = MESSAGE_COLUMNS if role == "messages" else STATUS_COLUMNS
    spec = {k: v for k, v in spec.items() if k not in partitions or draw(st.booleans())}
    rows = draw(st.integers(0, 4))
    wild = {name for name in [*spec, "statuses"] if draw(st.integers(0, 9)) == 0}
    columns: dict[str, pa.Array] = {}
    for camel, (snake, natural, good) in spec.items():
        required = camel in REQUIRED or camel == "messageId"
        if required or camel in wild or draw(st.booleans()):
            name = draw(st.sampled_from([camel, snake, camel.upper()]))
            is_wild = camel in wild
            columns[name] = draw(_column(natural, good, rows, is_wild, is_wild or not required))
    if role == "messages" and draw(st.booleans()):
        columns["statuses"] = draw(_nested_statuses(rows, "statuses" in wild))
    if draw(st.integers(0, 4)) == 0:
        columns["extra"] = draw(_column(pa.string(), GOOD_TEXT, rows))
    if draw(st.integers(0, 9)) == 0:  # a required column missing
        columns.pop(draw(st.sampled_from(sorted(columns))))
    return pa.table(columns) if columns else pa.table({"extra": pa.nulls(rows)})


@st.composite
def _input(draw: st.DrawFn, role: str) -> list[tuple[str, pa.Table]]:
    """Draw one input: files with their relative paths, in hive partition directories or not."""
    files = []
    for n in range(draw(st.integers(1, 2))):
        keys = draw(st.lists(st.sampled_from(PARTITION_KEYS), max_size=2, unique=True))
        parts = [f"{k}={draw(st.sampled_from(PARTITION_VALUES))}" for k in keys]
        table = draw(_table(role, keys))
        files.append(("/".join([*parts, f"part-{n}.parquet"]), table))
    return files


WRITE_OPTIONS = st.fixed_dictionaries(
    {
        "use_dictionary": st.booleans(),
        "compression": st.sampled_from(["none", "snappy", "zstd"]),
        "data_page_version": st.sampled_from(["1.0", "2.0"]),
        "write_statistics": st.booleans(),
    }
)


def _write(base: Path, files: list[tuple[str, pa.Table]], options: dict[str, Any]) -> Path:
    for relative, table in files:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, **options)
    return base if len(files) > 1 or "/" in files[0][0] else base / files[0][0]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An output root holding one published run, to copy for each example."""
    base = tmp_path_factory.mktemp("earlier")
    m = write_parquet(base / "m.parquet", [message("m1")], MESSAGE_TYPES)
    s = write_parquet(base / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    args = ["run", "--messages", str(m), "--statuses", str(s), "--out", str(base / "out")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    yield base / "out"


def _run(args: list[str], out: Path) -> tuple[int, list[str], dict[str, str]]:
    """Run the job; return its exit code, its error lines and the output root after it."""
    result = CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("convsum: ")]
    return result.exit_code, errors, snapshot(out)


@settings(
    max_examples=settings.default.max_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    messages=_input("messages"),
    statuses=st.none() | _input("statuses"),
    options=WRITE_OPTIONS,
)
def test_inputs_fuzz_any_files_exit_0_or_1_with_one_error_line(
    earlier_run: Path,
    messages: list[tuple[str, pa.Table]],
    statuses: list[tuple[str, pa.Table]] | None,
    options: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        args = ["run", "--messages", str(_write(base / "messages", messages, options))]
        if statuses is not None:
            args += ["--statuses", str(_write(base / "statuses", statuses, options))]
        before = snapshot(earlier_run)
        outcomes = []
        for engine in LOCAL_ENGINES:
            out = base / f"out-{engine}"
            shutil.copytree(earlier_run, out, symlinks=True)
            code, errors, after = _run([*args, "--engine", engine, "--threads", "1"], out)
            assert code in (0, 1), errors
            if code == 1:
                assert len(errors) == 1, errors
                assert errors[0].startswith("Error: "), errors
                assert after == before
            else:
                assert errors == []
            tree = after["current"].removeprefix("-> ") + "/api/"
            api = {k.removeprefix(tree): v for k, v in after.items() if k.startswith(tree)}
            outcomes.append((code, errors, api))
        event(f"exit {code}")  # shown by --hypothesis-show-statistics
        assert outcomes[0] == outcomes[1]
