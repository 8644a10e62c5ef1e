"""The formats a person reads: the table fits the terminal, numbers read as numbers."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from rich.cells import cell_len

from convsum.reporting.human import duration
from convsum.reporting.output import Display, write

ROWS = 39_583
UTC_MICROS = pa.timestamp("us", "UTC")
UNITS = {"delivery_rate": "share", "p95": "seconds", "age_hours": "hours"}


def _written(table: pa.Table, fmt: str, display: Display) -> str:
    out = io.BytesIO()
    write(table, fmt, out, display)
    return out.getvalue().decode()


def _report_like(rows: int) -> pa.Table:
    """Rows as the reports give them: names, ids, days, times, counts, rates and durations."""
    start = datetime(2018, 10, 1, 8, 3, 40, tzinfo=UTC)
    return pa.table(
        {
            "day": [date(2018, 10, 1) + timedelta(days=i % 180) for i in range(rows)],
            "owner": [f"owner-{i % 7}" for i in range(rows)],
            "id": [f"bank-nord-{i:06d}" for i in range(rows)],
            "created": [start + timedelta(seconds=37 * i) for i in range(rows)],
            "messages": [1_000_003 * (i % 13) for i in range(rows)],
            "delivery_rate": [(i % 1000) / 1000 for i in range(rows)],
            "p95": [95.25 + i for i in range(rows)],
            "age_hours": [71605.28972222222 - i for i in range(rows)],
            "body": ["Message: " + "x" * (i % 300) for i in range(rows)],
            "status_code": [None if i % 5 == 0 else 202 for i in range(rows)],
        }
    )


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_table_fits_the_terminal_and_never_splits_a_number_or_a_date(width: int) -> None:
    table = _report_like(ROWS).slice(0, 40)
    text = _written(table, "table", Display(width=width, units=UNITS))
    lines = text.splitlines()
    assert max(map(cell_len, lines)) <= width
    header = lines[1].replace("┃", " ").split()
    left_out = [name for name in table.column_names if name not in header]
    assert header == [name for name in table.column_names if name not in left_out]
    assert left_out == (
        ["created", "messages", "delivery_rate", "p95", "age_hours", "body", "status_code"]
        if width == 60
        else ["delivery_rate", "p95", "age_hours", "body", "status_code"]
        if width == 80
        else ["body", "status_code"]
    )
    # The left-out columns are named, whole, under the table.
    under = [line for line in lines if not line.startswith(("┏", "┃", "┡", "│", "└"))]
    named = " ".join(" ".join(under).split())
    assert re.search(
        rf"{len(left_out)} columns not shown: {', '.join(left_out)} \(a wider terminal", named
    )
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 40  # one line a row: nothing that is shown wrapped
    for line, row in zip(rows, table.to_pylist(), strict=True):
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        expected = {
            "day": row["day"].isoformat(),
            "owner": row["owner"],
            "id": row["id"],
            "created": row["created"].strftime("%Y-%m-%d %H:%M:%S"),
            "messages": f"{row['messages']:,}",
            "delivery_rate": f"{row['delivery_rate'] * 100:.1f}%",
            "p95": duration(row["p95"]),
            "age_hours": duration(row["age_hours"] * 3600),
        }
        assert cells == [expected[name] for name in header]


def test_the_table_folds_long_text_and_cuts_what_would_fill_the_screen() -> None:
    body = "word " * 100
    table = pa.table({"id": ["m1"], "body": [body]})
    lines = _written(table, "table", Display(width=60)).splitlines()
    assert max(map(cell_len, lines)) <= 60
    rows = [line.strip("│ ").removeprefix("m1").strip("│ ") for line in lines if line[0] == "│"]
    assert "".join(rows).replace(" ", "") == body[:159].replace(" ", "") + "…"
    under = " ".join(lines[lines.index(next(x for x in lines if x[0] == "└")) + 1 :])
    assert (
        " ".join(under.split()) == "text longer than 160 characters is cut (-F csv shows it whole)"
    )


def test_the_table_shows_each_kind_of_value_as_a_person_reads_it() -> None:
    table = pa.table(
        {
            "n": pa.array([1234567, None], pa.int64()),
            "rate": [0.32270916334661354, None],
            "p95": [259.6045499999999, 31.25],
            "age_hours": [71605.28972222222, 0.5],
            "ratio": [0.32270916334661354, 0.5],
            "big": [259.6045499999999, 12345.678],
            "cost": pa.array([Decimal("28.42"), Decimal("1234.5")], pa.decimal128(38, 10)),
            "owners": [["acme", "shop1"], []],
            "at": pa.array([datetime(2018, 10, 1, 8, 8, 52, 250000), None], UTC_MICROS),
        }
    )  # fmt: skip
    units = {"rate": "share", "p95": "seconds", "age_hours": "hours"}
    lines = _written(table, "table", Display(width=200, units=units)).splitlines()
    cells = [[c.strip() for c in line.strip("┃│").split(line[0])] for line in lines[1:6:]]
    assert cells[0] == ["n", "rate", "p95", "age_hours", "ratio", "big", "cost", "owners", "at"]
    assert cells[1] == ["bigint", "double", "double", "double", "double", "double",
                        "decimal(38,10)", "varchar[]", "timestamptz"]  # fmt: skip
    assert cells[3] == ["1,234,567", "32.3%", "4m 20s", "2,983d 13h", "0.3227", "259.60",
                        "28.42", '["acme","shop1"]', "2018-10-01 08:08:52.250"]  # fmt: skip
    assert cells[4] == ["NULL", "NULL", "31.2s", "30m 0s", "0.5000", "12,345.68",
                        "1,234.50", "[]", "NULL"]  # fmt: skip
    # Numbers are right-aligned, text left.
    first, second = lines[4].split("│")[1:3]
    assert first.endswith("1,234,567 ") and second.endswith("32.3% ")
    assert lines[4].split("│")[8].startswith(' ["acme"')


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0.0s"), (42.34, "42.3s"), (59.96, "1m 0s"), (260, "4m 20s"), (3600, "1h 0m"),
     (71_580, "19h 53m"), (86_400 * 2983 + 13 * 3600 + 1799, "2,983d 13h"), (-90, "-1m 30s")],
)  # fmt: skip
def test_durations_read_in_their_largest_units(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_markdown_is_rounded_like_the_table_and_aligned() -> None:
    table = pa.table(
        {"owner": ["acme", "bank-nord"], "messages": [1234567, 5], "rate": [0.5, None]}
    )
    text = _written(table, "markdown", Display(units={"rate": "share"}))
    assert text.splitlines() == [
        "| owner     |  messages |  rate |",
        "|-----------|----------:|------:|",
        "| acme      | 1,234,567 | 50.0% |",
        "| bank-nord |         5 |  NULL |",
    ]


def test_the_machine_formats_keep_full_precision() -> None:
    table = pa.table({"rate": [0.32270916334661354], "n": [1234567]})
    csv = _written(table, "csv", Display(units={"rate": "share"}))
    assert csv == "rate,n\n0.32270916334661354,1234567\n"


def test_a_time_wider_than_folded_text_is_left_out_rather_than_split() -> None:
    # 25 characters, more than a text column folds down to (24): at 47 columns a text column of
    # this width would be drawn folded; the time is left out.
    sent = datetime(2018, 10, 1, 8, 3, 40, tzinfo=UTC)
    table = pa.table(
        {
            "id": ["bank-nord-000791"],
            "sent": pa.array([sent], pa.timestamp("us", "Europe/Stockholm")),
        }
    )
    narrow = _written(table, "table", Display(width=47)).splitlines()
    assert "sent" not in narrow[1] and narrow[6].startswith("1 column not shown: sent")
    wide = _written(table, "table", Display(width=48)).splitlines()
    assert "│ 2018-10-01 10:03:40+02:00 │" in wide[4]
