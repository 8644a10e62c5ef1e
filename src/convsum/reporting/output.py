"""Write a query's rows in one of the output formats, every row, nothing cut.

Formats: `table` (drawn by rich for a terminal: long cells wrap, never end in an ellipsis), `csv`
and `tsv` (a header line, then one line per row; nested values as JSON text; timestamps as ISO
8601 with their offset), `json` (one array of objects), `jsonl` (one object per line), `markdown`
(a GitHub table) and `parquet` (the Arrow types as they are).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "tsv", "json", "jsonl", "markdown", "parquet")


def write(table: pa.Table, fmt: str, out: IO[bytes], width: int | None = None) -> None:
    """Write `table` to the binary stream `out` in format `fmt`."""
    if fmt == "parquet":
        pq.write_table(table, out)
    elif fmt in ("json", "jsonl"):
        rows = table.to_pylist()
        if fmt == "json":
            out.write(orjson.dumps(rows, default=json_default) + b"\n")
        else:
            out.writelines(orjson.dumps(row, default=json_default) + b"\n" for row in rows)
    else:
        text = io.StringIO(newline="")
        _TEXT_WRITERS[fmt](table, text, width)
        out.write(text.getvalue().encode())


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


def _rows(table: pa.Table) -> Iterator[tuple[str, ...]]:
    columns = [_column_text(column) for column in table.columns]
    for start in range(0, table.num_rows, 65_536):
        yield from zip(*(column[start : start + 65_536] for column in columns), strict=True)


def _column_text(column: pa.ChunkedArray) -> list[str]:
    """A column's cells as `cell_text` gives them; times are formatted by Arrow, in bulk."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.tz in (None, "UTC"):
        text = pc.strftime(column.cast(pa.timestamp("us", kind.tz)), format="%Y-%m-%dT%H:%M:%S")
        text = pc.replace_substring_regex(text, pattern=r"\.000000$", replacement="")
        if kind.tz:
            text = pc.binary_join_element_wise(text, "+00:00", "")
        return [value or "" for value in text.to_pylist()]
    if pa.types.is_date32(kind):
        return [value or "" for value in pc.strftime(column, format="%Y-%m-%d").to_pylist()]
    return [cell_text(value) for value in column.to_pylist()]


def _delimited(delimiter: str) -> Callable[[pa.Table, io.StringIO, int | None], None]:
    def write_delimited(table: pa.Table, text: io.StringIO, _width: int | None) -> None:
        writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows(_rows(table))

    return write_delimited


def _markdown(table: pa.Table, text: io.StringIO, _width: int | None) -> None:
    def line(cells: Sequence[str]) -> str:
        escaped = (c.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>") for c in cells)
        return "| " + " | ".join(escaped) + " |\n"

    text.write(line(table.column_names))
    text.write("|" + "|".join("---" for _ in table.column_names) + "|\n")
    text.writelines(line(row) for row in _rows(table))


def _table(table: pa.Table, text: io.StringIO, width: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]
    drawn = Table(show_lines=False)
    for name, right in zip(table.column_names, numeric, strict=True):
        drawn.add_column(name, justify="right" if right else "left", overflow="fold")
    for row in _rows(table):
        drawn.add_row(*row)
    Console(file=text, width=width or 160, force_terminal=False, highlight=False).print(drawn)


_TEXT_WRITERS: dict[str, Callable[[pa.Table, io.StringIO, int | None], None]] = {
    "csv": _delimited(","),
    "tsv": _delimited("\t"),
    "markdown": _markdown,
    "table": _table,
}
