"""Write a query's rows in one of the output formats.

Formats: `table` (drawn by rich for a terminal, to its width) and `markdown` (a GitHub table), the
two a person reads, with their numbers formatted (reporting/human.py); `csv` and `tsv` (a header
line, then one line per row; nested values as JSON text; timestamps as ISO 8601 with their
offset), `json` (one array of objects), `jsonl` (one object per line) and `parquet` (the Arrow
types as they are), with every value's full precision.

Message bodies, owners and participants are chosen by whoever sends a message, so the formats
a person reads never pass their text on as it is (`Display`): control characters are shown as
escapes wherever they would reach a terminal, and in the table and markdown always; markdown
escapes HTML; csv and tsv guard the cells a spreadsheet would run as a formula (OWASP's advice:
a leading `'`), unless asked for the raw values. json, jsonl and parquet carry the values as
they are.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convsum.reporting.human import Unit, columns, markdown_lines, table_text

SLICE_ROWS = 65_536

# C0 and C1 controls and DEL (but newline and tab, which the formats handle themselves), and the
# bidirectional overrides and isolates that reorder the text around them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP's CSV-injection list


@dataclass(frozen=True)
class Display:
    """Where the rows go, which decides how their text is made safe to read.

    `width` is the terminal's, for the table; `terminal` says the bytes reach a terminal, so no
    control character may pass; `raw` writes csv and tsv cells without the formula guard;
    `units` are what the table and markdown show some numeric columns as (reporting/human.py).
    """

    width: int | None = None
    terminal: bool = False
    raw: bool = False
    units: Mapping[str, Unit] = field(default_factory=dict)


def write(table: pa.Table, fmt: str, out: IO[bytes], display: Display | None = None) -> None:
    """Write `table` to the binary stream `out` in format `fmt`, a slice of rows at a time."""
    if fmt == "parquet":
        pq.write_table(table, out)
    elif fmt == "json":
        out.write(orjson.dumps(table.to_pylist(), default=json_default) + b"\n")
    else:
        for text in _TEXT_WRITERS[fmt](table, display or Display()):
            out.write(text.encode("utf-8", "backslashreplace"))


def shown_controls(text: str) -> str:
    """Return `text` with each control character as a visible escape (`\\x1b`, `\\u202e`)."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def formula_guarded(text: str) -> str:
    """Return `text` as a spreadsheet shows it: a cell that would run as a formula gets a `'`."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def cell_text(value: Any) -> str:
    """A value as text: empty for null, ISO 8601 for dates and times, JSON for nested values."""
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=json_default).decode()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, SLICE_ROWS):
        yield table.slice(start, SLICE_ROWS)


def _rows(
    table: pa.Table, text: Callable[[str], str] | None = None, guard: bool = False
) -> Iterator[tuple[str, ...]]:
    """Yield each row's cells as text, each passed through `text`, and with `guard` the cells
    of text columns through `formula_guarded` (numbers and times are never formulas)."""
    columns = []
    for column in table.columns:
        cells = _column_text(column)
        if guard and _is_text(column.type):
            cells = [formula_guarded(c) if c else c for c in cells]
        if text is not None:
            cells = [text(c) for c in cells]
        columns.append(cells)
    return zip(*columns, strict=True)


def _is_text(kind: pa.DataType) -> bool:
    return not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_boolean(kind)
    )


def _column_text(column: pa.ChunkedArray) -> list[str]:
    """A column's cells as `cell_text` gives them; Arrow formats the common types in bulk."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.tz in (None, "UTC"):
        text = pc.strftime(column.cast(pa.timestamp("us", kind.tz)), format="%Y-%m-%dT%H:%M:%S")
        text = pc.replace_substring_regex(text, pattern=r"\.000000$", replacement="")
        if kind.tz:
            text = pc.binary_join_element_wise(text, "+00:00", "")
    elif pa.types.is_date32(kind):
        text = pc.strftime(column, format="%Y-%m-%d")
    elif pa.types.is_integer(kind) or pa.types.is_string(kind):
        text = column.cast(pa.string())
    else:
        return [cell_text(value) for value in column.to_pylist()]
    return [value or "" for value in text.to_pylist()]


def _jsonl(table: pa.Table, _display: Display) -> Iterator[str]:
    for part in _slices(table):
        rows = part.to_pylist()
        yield b"".join(orjson.dumps(row, default=json_default) + b"\n" for row in rows).decode()


def _delimited(delimiter: str) -> Callable[[pa.Table, Display], Iterator[str]]:
    def write_delimited(table: pa.Table, display: Display) -> Iterator[str]:
        text = shown_controls if display.terminal else None
        header = [text(n) if text else n for n in table.column_names]
        yield _delimited_lines([header], delimiter)
        for part in _slices(table):
            yield _delimited_lines(_rows(part, text, guard=not display.raw), delimiter)

    return write_delimited


def _delimited_lines(rows: Iterable[Sequence[str]], delimiter: str) -> str:
    # Python's csv module quotes a cell only for the characters of its own line end, so a lone
    # `\r` would end the row for any other reader: each cell is quoted here as RFC 4180 says.
    special = re.compile(f'[{re.escape(delimiter)}"\r\n]')

    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if special.search(text) else text

    return "".join(delimiter.join(map(cell, row)) + "\n" for row in rows)


def _markdown_cell(text: str) -> str:
    """Return a cell's text as markdown that renders as that text, on one table row.

    HTML is escaped (a renderer would run `<script>`), every line break is `<br>`, and `\\` and
    `|` are escaped for the table.
    """
    text = html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r\n", "<br>").replace("\r", "<br>").replace("\n", "<br>")
    return shown_controls(text)


def _markdown(table: pa.Table, display: Display) -> Iterator[str]:
    yield from markdown_lines(columns(table, display.units, _markdown_cell))


def _table(table: pa.Table, display: Display) -> Iterator[str]:
    def text(value: str) -> str:
        return shown_controls(value.replace("\r\n", "\n"))

    yield table_text(columns(table, display.units, text), display.width or 160)


_TEXT_WRITERS: dict[str, Callable[[pa.Table, Display], Iterator[str]]] = {
    "csv": _delimited(","),
    "tsv": _delimited("\t"),
    "jsonl": _jsonl,
    "markdown": _markdown,
    "table": _table,
}
