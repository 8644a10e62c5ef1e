"""The output formats keep hostile text from acting: on a spreadsheet, a terminal, a renderer."""

from __future__ import annotations

import csv
import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from convsum.reporting.output import Display, write
from tests.conftest import message, published_root, status

FORMULAS = ['=HYPERLINK("http://x","y")', "@SUM(1+1)", "+1+1", "-2+3", "\tx", "\rx"]
# Clear the screen (CSI), recolour (SGR), set the window title (OSC, ended by BEL), a C1 CSI,
# a right-to-left override, and a carriage return that would overwrite the line.
ESCAPES = ["\x1b[2J", "\x1b[31mred", "\x1b]0;title\x07", "\x9b1m", "\u202eevil", "fake\rrow"]


def _written(table: pa.Table, fmt: str, display: Display | None = None) -> str:
    out = io.BytesIO()
    write(table, fmt, out, display)
    return out.getvalue().decode()


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


@pytest.mark.parametrize(("fmt", "delimiter"), [("csv", ","), ("tsv", "\t")])
def test_output_delimited_guards_text_cells_that_a_spreadsheet_runs(
    fmt: str, delimiter: str
) -> None:
    table = pa.table(
        {
            "body": [*FORMULAS, "plain", "a=b", None],
            "n": pa.array([-5, 1, 2, 3, 4, 5, 6, 7, None], pa.int64()),
        }
    )
    rows = _csv_rows(_written(table, fmt), delimiter)
    guarded = [f"'{f}" for f in FORMULAS]
    assert rows == [
        ["body", "n"],
        *([g, str(n)] for g, n in zip(guarded, [-5, 1, 2, 3, 4, 5], strict=True)),
        ["plain", "6"],
        ["a=b", "7"],
        ["", ""],
    ]


def test_output_delimited_raw_keeps_every_cell_as_it_is() -> None:
    table = pa.table({"body": FORMULAS})
    rows = _csv_rows(_written(table, "csv", Display(raw=True)))
    assert rows == [["body"], *([f] for f in FORMULAS)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "markdown", "table"])
def test_output_to_a_terminal_shows_control_characters_as_escapes(fmt: str) -> None:
    table = pa.table({"body": ESCAPES, "\x1b[8mname": [1] * len(ESCAPES)})
    text = _written(table, fmt, Display(width=200, terminal=True))
    controls = {c for c in text if ord(c) < 32 and c not in "\n\t"} | {
        c for c in text if 0x7F <= ord(c) <= 0x9F or c == "\u202e"
    }
    assert controls == set(), fmt
    line_break = "fake<br>row" if fmt == "markdown" else "fake\\rrow"
    for shown in ("\\x1b[2J", "\\x1b]0;title\\x07", "\\x9b1m", "\\u202eevil", line_break):
        assert shown in text, (fmt, shown)


def test_output_csv_into_a_file_keeps_control_characters() -> None:
    table = pa.table({"body": ["\x1b[2J", "a\rb"]})
    assert _csv_rows(_written(table, "csv")) == [["body"], ["\x1b[2J"], ["a\rb"]]


def test_output_markdown_escapes_html_and_keeps_one_line_per_row() -> None:
    bodies = ["<script>alert(1)</script>", "a\rb", "c\r\nd", "e\nf", "x | y & z"]
    text = _written(pa.table({"body": bodies}), "markdown")
    padding = re.compile(r" +\|$")
    assert [padding.sub(" |", line) for line in text.splitlines()] == [
        "| body |",
        "|" + "-" * len(text.splitlines()[0][2:-2]) + "--|",
        "| &lt;script&gt;alert(1)&lt;/script&gt; |",
        "| a<br>b |",
        "| c<br>d |",
        "| e<br>f |",
        "| x \\| y &amp; z |",
    ]


def test_output_table_draws_markup_and_emoji_codes_as_text() -> None:
    names = ["[/]", "[bold]x[/bold]", ":warning:", "[link=http://x]y[/link]"]
    text = _written(pa.table({"owner": names}), "table", Display(width=80))
    cells = [line.strip("│ ") for line in text.splitlines()[4:-1]]
    assert cells == names


@pytest.fixture(scope="module")
def hostile_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root whose message bodies carry terminal escapes and spreadsheet formulas."""
    rows = [message(f"m{i}", body=body) for i, body in enumerate([*ESCAPES, *FORMULAS])]
    return published_root(tmp_path_factory.mktemp("hostile"), rows, [status("m0", 201)])


@pytest.mark.parametrize("fmt", ["table", "csv", "tsv", "markdown"])
def test_query_to_a_real_terminal_sends_no_escape_sequence(hostile_out: Path, fmt: str) -> None:
    command = [str(Path(sys.executable).parent / "convsum"), "query", str(hostile_out),
               "SELECT id, body FROM messages ORDER BY id", "-F", fmt]  # fmt: skip
    controller, terminal = pty.openpty()
    with subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE) as process:
        os.close(terminal)
        seen = b""
        while chunk := _read(controller):
            seen += chunk
        assert process.wait(timeout=60) == 0
    os.close(controller)
    assert b"\x1b" not in seen and b"\x07" not in seen and "\u202e".encode() not in seen
    assert b"\\x1b[2J" in seen


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other side closed
        return b""
