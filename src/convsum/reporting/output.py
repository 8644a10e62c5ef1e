"""Write a query's rows in one of the output formats, every row, nothing cut.

Formats: `table` (drawn by rich for a terminal: long cells wrap, never end in an ellipsis), `csv`
and `tsv` (a header line, then one line per row; nested values as JSON text; timestamps as ISO
8601 with their offset), `json` (one array of objects), `jsonl` (one object per line), `markdown`
(a GitHub table) and `parquet` (the Arrow types as they are).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "tsv", "json", "jsonl", "markdown", "parquet")
SLICE_ROWS = 65_536


def write(table: pa.Table, fmt: str, out: IO[bytes], width: int | None = None) -> None:
    """Write `table` to the binary stream `out` in format `fmt`, a slice of rows at a time."""
    if fmt == "parquet":
        pq.write_table(table, out)
    elif fmt == "json":
        out.write(orjson.dumps(table.to_pylist(), default=json_default) + b"\n")
    else:
        for text in _TEXT_WRITERS[fmt](table, width):
            out.write(text.encode())


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


def _rows(table: pa.Table) -> Iterator[tuple[str, ...]]:
    return zip(*(_column_text(column) for column in table.columns), strict=True)


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


def _jsonl(table: pa.Table, _width: int | None) -> Iterator[str]:
    for part in _slices(table):
        rows = part.to_pylist()
        yield b"".join(orjson.dumps(row, default=json_default) + b"\n" for row in rows).decode()


def _delimited(delimiter: str) -> Callable[[pa.Table, int | None], Iterator[str]]:
    def write_delimited(table: pa.Table, _width: int | None) -> Iterator[str]:
        yield _delimited_lines([table.column_names], delimiter)
        for part in _slices(table):
            yield _delimited_lines(_rows(part), delimiter)

    return write_delimited


def _delimited_lines(rows: Iterable[Sequence[str]], delimiter: str) -> str:
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return text.getvalue()


def _markdown(table: pa.Table, _width: int | None) -> Iterator[str]:
    def line(cells: Sequence[str]) -> str:
        escaped = (c.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>") for c in cells)
        return "| " + " | ".join(escaped) + " |\n"

    yield line(table.column_names)
    yield "|" + "|".join("---" for _ in table.column_names) + "|\n"
    for part in _slices(table):
        yield "".join(line(row) for row in _rows(part))


def _table(table: pa.Table, width: int | None) -> Iterator[str]:
    from rich.console import Console
    from rich.table import Table

    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]
    drawn = Table(show_lines=False)
    for name, right in zip(table.column_names, numeric, strict=True):
        drawn.add_column(name, justify="right" if right else "left", overflow="fold")
    for row in _rows(table):
        drawn.add_row(*row)
    text = io.StringIO()
    Console(file=text, width=width or 160, force_terminal=False, highlight=False).print(drawn)
    yield text.getvalue()


_TEXT_WRITERS: dict[str, Callable[[pa.Table, int | None], Iterator[str]]] = {
    "csv": _delimited(","),
    "tsv": _delimited("\t"),
    "jsonl": _jsonl,
    "markdown": _markdown,
    "table": _table,
}
