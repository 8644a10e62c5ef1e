"""The formats a person reads: the terminal's table and markdown.

A cell reads as a person expects: integers with thousands separators; a column that a report
declares a share (`Unit`) as a percentage with one decimal, one it declares a duration as `4m 20s`;
other floating-point numbers with two decimals (four when every one is below 1); decimals with as
many places as the column needs; UTC timestamps without their offset (the column's type says
`timestamptz`); NULL as `NULL`. Numbers are right-aligned. The machine formats (csv, tsv, json,
jsonl, parquet) keep every value's full precision: they never come here.

The table fits the terminal's width: numbers, dates, times and column names never wrap, text
folds, and the columns that do not fit are left out and named under the table.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa

Unit = Literal["share", "seconds", "hours"]

NULL = "NULL"
# Text no wider than TEXT_LEAST (ids, numbers, names) never folds; wider text folds down to it.
TEXT_LEAST = 24
# The table's longest text cell: a longer one is cut and ends in an ellipsis (a message body
# can fill a screen); the machine formats and markdown keep it whole.
TEXT_CELL_MAX = 160


@dataclass(frozen=True)
class Column:
    """A column as a person reads it: its name, its type as DuckDB names it, its cells' text."""

    name: str
    kind: str
    cells: list[str]
    right: bool  # numbers: right-aligned
    folds: bool  # text: may wrap onto more lines; nothing else does


def columns(table: pa.Table, units: Mapping[str, Unit], text: Callable[[str], str]) -> list[Column]:
    """Return the table's columns as a person reads them; `text` makes the text cells safe."""
    from convsum.reporting.output import cell_text

    shown = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind, values = column.type, column.to_pylist()
        if pa.types.is_timestamp(kind):
            cells = [NULL if v is None else _timestamp(v, kind.tz) for v in values]
        elif pa.types.is_integer(kind):
            cells = [NULL if v is None else f"{v:,}" for v in values]
        elif pa.types.is_floating(kind):
            cells = _floats(values, units.get(name))
        elif pa.types.is_decimal(kind):
            cells = _decimals(values)
        else:
            cells = [NULL if v is None else text(cell_text(v)) for v in values]
        number = _is_number(kind)
        folds = not (number or pa.types.is_temporal(kind) or pa.types.is_boolean(kind))
        shown.append(Column(text(name), type_name(kind), cells, number, folds))
    return shown


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _timestamp(value: Any, tz: str | None) -> str:
    """A timestamp to the second, or the millisecond (as the API writes them), or the microsecond:
    as exact as it is."""
    exact = value.microsecond % 1000 or not value.microsecond
    text = str(value.isoformat(sep=" ", timespec="auto" if exact else "milliseconds"))
    return text.removesuffix("+00:00") if tz == "UTC" else text


def _floats(values: list[float | None], unit: Unit | None) -> list[str]:
    """Floating-point cells: as the column's unit says, else with 2 decimals (4 below 1)."""
    if unit == "share":
        return [NULL if v is None else _finite(v, percent) for v in values]
    if unit is not None:
        scale = 3600 if unit == "hours" else 1
        return [NULL if v is None else _finite(v * scale, duration) for v in values]
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    places = 2 if finite and max(finite) >= 1 else 4
    return [NULL if v is None else _finite(v, lambda x: f"{x:,.{places}f}") for v in values]


def _finite(value: float, shown: Callable[[float], str]) -> str:
    return shown(value) if math.isfinite(value) else str(value)


def _decimals(values: list[Decimal | None]) -> list[str]:
    """Decimal cells with the places the column needs (its most exact value's), aligned."""
    exact = [v.normalize() for v in values if v is not None and v.is_finite()]
    places = max([0, *(-int(v.as_tuple().exponent) for v in exact)])
    return [NULL if v is None else f"{v:,.{places}f}" for v in values]


def percent(share: float) -> str:
    """Return a share (0.9080) as a person reads it: 90.8%."""
    return f"{share * 100:,.1f}%"


def duration(seconds: float) -> str:
    """Return seconds as a person reads a duration: 42.3s, 4m 20s, 19h 53m, 2,983d 13h."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    for size, unit, part, part_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m")):
        if whole >= size:
            return f"{whole // size:,}{unit} {whole % size // part}{part_unit}"
    return f"{whole // 60}m {whole % 60}s"


_TYPE_NAMES = {
    pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "integer", pa.int64(): "bigint",
    pa.uint8(): "utinyint", pa.uint16(): "usmallint", pa.uint32(): "uinteger",
    pa.uint64(): "ubigint", pa.float32(): "float", pa.float64(): "double", pa.bool_(): "boolean",
    pa.string(): "varchar", pa.large_string(): "varchar", pa.date32(): "date",
    pa.binary(): "blob", pa.large_binary(): "blob",
}  # fmt: skip


def type_name(kind: pa.DataType) -> str:
    """Return an Arrow type as DuckDB's SQL names it (bigint, varchar[], timestamptz)."""
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_decimal(kind):
        return f"decimal({kind.precision},{kind.scale})"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return type_name(kind.value_type) + "[]"
    return _TYPE_NAMES.get(kind, str(kind))


def fitted(shown: list[Column], width: int) -> tuple[list[int], list[Column]]:
    """Return the widths of the columns that fit in `width` (from the left), and those left out.

    Each drawn column takes its width and 3 characters of border and padding, the table one more.
    A column is never narrower than its name and its type, nor than its widest cell unless it is
    text wider than TEXT_LEAST, which folds down to that.
    The room left widens the text columns toward their widest cells, left first.
    """
    from rich.cells import cell_len

    natural = [max(map(cell_len, [c.name, c.kind, *c.cells])) for c in shown]
    least = [
        min(wide, max(cell_len(c.name), cell_len(c.kind), TEXT_LEAST)) if c.folds else wide
        for c, wide in zip(shown, natural, strict=True)
    ]
    used, count = 1, 0
    for narrowest in least:
        if count and used + narrowest + 3 > width:
            break
        used, count = used + narrowest + 3, count + 1
    widths, spare = least[:count], max(width - used, 0)
    for index, column in enumerate(shown[:count]):
        grow = min(spare, natural[index] - widths[index]) if column.folds else 0
        widths[index], spare = widths[index] + grow, spare - grow
    return widths, shown[count:]


def table_text(shown: list[Column], width: int) -> str:
    """Draw the columns with rich, in `width` characters: every cell a `Text`, so no markup or
    emoji code in the data is interpreted."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    widths, left_out = fitted(shown, width)
    drawn = Table()
    for column, column_width in zip(shown, widths, strict=False):
        drawn.add_column(
            Text(f"{column.name}\n{column.kind}"),
            justify="right" if column.right else "left",
            width=column_width,
            overflow="fold" if column.folds else "crop",
            no_wrap=not column.folds,
        )
    cut = False
    for row in zip(*(c.cells for c in shown[: len(widths)]), strict=True):
        cells = [_cut(cell) for cell in row]
        cut = cut or cells != list(row)
        drawn.add_row(*map(Text, cells))
    text = io.StringIO()
    console = Console(file=text, width=width, force_terminal=False, highlight=False)
    console.print(drawn)
    if left_out:
        names = ", ".join(c.name for c in left_out)
        count = f"{len(left_out)} column" + ("" if len(left_out) == 1 else "s")
        console.print(Text(f"{count} not shown: {names} (a wider terminal or -F csv shows them)"))
    if cut:
        console.print(f"text longer than {TEXT_CELL_MAX} characters is cut (-F csv shows it whole)")
    return text.getvalue()


def _cut(cell: str) -> str:
    return cell if len(cell) <= TEXT_CELL_MAX else cell[: TEXT_CELL_MAX - 1] + "…"


def markdown_lines(shown: list[Column]) -> Iterator[str]:
    """Yield a GitHub table of the columns, padded so that its text lines up, numbers right."""
    from rich.cells import cell_len

    widths = [max(3, *map(cell_len, [c.name, *c.cells])) for c in shown]

    def line(cells: list[str]) -> str:
        padded = [
            " " * (w - cell_len(t)) + t if c.right else t + " " * (w - cell_len(t))
            for c, t, w in zip(shown, cells, widths, strict=True)
        ]
        return "| " + " | ".join(padded) + " |\n"

    yield line([c.name for c in shown])
    rule = ["-" * (w + 1) + (":" if c.right else "-") for c, w in zip(shown, widths, strict=True)]
    yield "|" + "|".join(rule) + "|\n"
    for row in zip(*(c.cells for c in shown), strict=True):
        yield line(list(row))
