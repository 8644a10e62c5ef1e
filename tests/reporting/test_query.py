"""`convsum query`: read-only SQL over the published tables, in every output format."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from convsum.cli import cli
from convsum.config import RunConfig
from convsum.reporting.output import cell_text, json_default
from convsum.reporting.query import open_tables
from convsum.run import run_job
from tests.conftest import (
    MESSAGE_TYPES,
    STATUS_TYPES,
    at,
    message,
    status,
    table_rows,
    write_parquet,
)
from tests.reporting.test_html import chart_specs


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published output root with odd values: nulls, quotes, separators, newlines."""
    base = tmp_path_factory.mktemp("query")
    messages = [
        message("m1", body='a "quoted", | piped\tand\nnew line', price=0.0725),
        message("m2", body=None, price=None, created=at(1.5), direction="mo", sender="4670"),
        message("m3", owner="bank", body="ü日本", created=at(86_400)),
    ]
    statuses = [status("m1", 201, at(2), 3), status("m3", 402, at(86_401))]
    write_parquet(base / "in" / "messages.parquet", messages, MESSAGE_TYPES)
    write_parquet(base / "in" / "statuses.parquet", statuses, STATUS_TYPES)
    config = RunConfig(
        messages=str(base / "in" / "messages.parquet"),
        statuses=str(base / "in" / "statuses.parquet"),
        out=str(base / "out"),
    )
    run_job(config)
    return base / "out"


def _query(*args: str, stdin: str | None = None) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, ["query", *args], input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout_bytes, result.stderr


REFUSED = [
    ("COPY messages TO '/tmp/x.csv'", "COPY statement is refused"),
    ("ATTACH '/tmp/x.duckdb'", "ATTACH statement is refused"),
    ("INSTALL httpfs", "LOAD statement is refused"),
    ("SET threads = 1", "SET statement is refused"),
    ("PRAGMA version", "PRAGMA statement is refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statement is refused"),
    ("DELETE FROM messages", "DELETE statement is refused"),
    ("SELECT 1; SELECT 2", "exactly one SQL statement, got 2"),
    ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
    ("SELECT * FROM glob('/*')", "Cannot access file"),
    ("SELECT * FROM read_text('/etc/hostname')", "Cannot access file"),
    ("SELECT * FROM messages WHERE nope = 1", 'column "nope" not found'),
    ("SELECT * FROM nowhere", "nowhere does not exist"),
    ("SELEC 1", 'syntax error at or near "SELEC"'),
]


@pytest.mark.parametrize(("sql", "words"), REFUSED)
def test_query_refuses_writing_other_files_and_bad_sql_with_exit_2(
    out: Path, sql: str, words: str
) -> None:
    code, stdout, stderr = _query(str(out), sql)
    assert (code, stdout) == (2, b"")
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("Error: "), stderr
    assert words in stderr


def test_query_reads_the_state_store_only_through_the_tables(out: Path) -> None:
    state = next((out / "current" / "state" / "messages").glob("*.parquet"))
    code, _, stderr = _query(str(out), f"SELECT count(*) FROM read_parquet('{state}')")
    assert code == 2 and "Cannot access file" in stderr


def test_query_failing_at_run_time_exits_1(out: Path) -> None:
    code, stdout, stderr = _query(str(out), "SELECT body::INTEGER FROM messages")
    assert (code, stdout) == (1, b"")
    assert stderr.startswith("Error: the query failed: Conversion Error")


def test_query_sql_from_argument_file_or_stdin(out: Path, tmp_path: Path) -> None:
    sql = "SELECT id FROM messages ORDER BY id"
    (tmp_path / "q.sql").write_text(sql)
    expected = b"id\nm1\nm2\nm3\n"
    assert _query(str(out), sql)[:2] == (0, expected)
    assert _query(str(out), "-f", str(tmp_path / "q.sql"))[:2] == (0, expected)
    assert _query(str(out), "-", stdin=sql)[:2] == (0, expected)
    assert _query(str(out), "-f", "-", stdin=sql)[:2] == (0, expected)
    for args in ([str(out)], [str(out), sql, "-f", str(tmp_path / "q.sql")]):
        code, _, stderr = _query(*args)
        assert code == 2 and "give the SQL" in stderr


def test_query_of_nothing_published_exits_1(tmp_path: Path) -> None:
    code, _, stderr = _query(str(tmp_path), "SELECT 1")
    assert code == 1 and "nothing published here" in stderr


def test_query_of_a_tree_without_tables_says_how_to_get_them(out: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "trees" / "t1").mkdir(parents=True)
    (old / "trees" / "t1" / ".readers").touch()
    (old / "current").symlink_to("trees/t1")
    code, _, stderr = _query(str(old), "SELECT 1")
    assert code == 1 and "run `convsum run --full" in stderr


SQL = "SELECT *, [id, owner] AS nested, 1.5::DECIMAL(9, 2) AS exact FROM messages ORDER BY id"


def _parsed(fmt: str, data: bytes) -> list[dict[str, str]]:
    """The rows of a text format, as strings (null as the empty string)."""
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        return list(csv.DictReader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))
    lines = data.decode().splitlines()
    assert fmt == "markdown" and lines[1].startswith("|---")

    def cells(line: str) -> list[str]:
        parts = line[2:-2].replace("\\|", "\0").split(" | ")
        return [p.replace("\0", "|").replace("<br>", "\n").replace("\\\\", "\\") for p in parts]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "markdown", "json", "jsonl", "parquet"])
def test_query_every_format_parses_back_to_the_rows(out: Path, tmp_path: Path, fmt: str) -> None:
    with open_tables(out) as tables:
        expected = tables.run(SQL)
    target = tmp_path / f"rows.{fmt}"
    code, stdout, stderr = _query(str(out), SQL, "-F", fmt, "-o", str(target))
    assert (code, stdout) == (0, b"")
    assert stderr.startswith("convsum: 3 rows; run ")
    data = target.read_bytes()
    rows = expected.to_pylist()
    if fmt == "parquet":
        assert pq.read_table(target).equals(expected)
    elif fmt in ("json", "jsonl"):
        parsed = orjson.loads(data) if fmt == "json" else list(map(orjson.loads, data.splitlines()))
        assert parsed == orjson.loads(orjson.dumps(rows, default=json_default))
        # Written out, not derived from the writer's own helper: numbers stay numbers.
        first = parsed[0]
        assert (first["exact"], first["nested"], first["created"], first["price"]) == (
            1.5, ["m1", "acme"], "2024-01-01T12:00:00+00:00", 0.0725
        )  # fmt: skip
    else:
        assert _parsed(fmt, data) == [{k: cell_text(v) for k, v in row.items()} for row in rows]


def test_query_format_defaults_follow_the_output(out: Path, tmp_path: Path) -> None:
    sql = "SELECT id FROM messages ORDER BY id"
    assert _query(str(out), sql)[1] == b"id\nm1\nm2\nm3\n"  # not a terminal: csv
    _query(str(out), sql, "-o", str(tmp_path / "ids.jsonl"))
    assert (tmp_path / "ids.jsonl").read_bytes() == b'{"id":"m1"}\n{"id":"m2"}\n{"id":"m3"}\n'
    table = _query(str(out), sql, "-F", "table")[1].decode()
    assert table.split() == ["┏━━━━┓", "┃", "id", "┃", "┡━━━━┩", "│", "m1", "│", "│", "m2",
                             "│", "│", "m3", "│", "└────┘"]  # fmt: skip


def test_html_command_writes_the_reports_charts_deterministically(
    out: Path, tmp_path: Path
) -> None:
    args = ["html", str(out), "--tz", "Europe/Stockholm", "--min-volume", "1"]
    first = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.html")])
    second = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b.html")])
    assert (first.exit_code, second.exit_code) == (0, 0), first.stderr
    page = (tmp_path / "a.html").read_bytes()
    assert page == (tmp_path / "b.html").read_bytes()
    assert b"Europe/Stockholm" in page and b"<dd>3</dd>" in page  # the zone, the messages
    volume = chart_specs(page)["chart-volume"]["data"]["values"]
    assert sorted((v["day"], v["direction"], v["messages"]) for v in volume) == [
        ("2024-01-01", "mo", 1), ("2024-01-01", "mt", 1), ("2024-01-02", "mt", 1)
    ]  # fmt: skip
    code = CliRunner().invoke(cli, ["html", str(out), "-o", "x.html", "--tz", "Mars/Base"])
    assert code.exit_code == 2 and "unknown time zone 'Mars/Base'" in code.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope", "{out}"], "unknown report 'nope'; one of: outcomes, failures"),
        (["outcomes", "{out}", "--top", "3"], "report outcomes does not take --top"),
        (["quality", "{out}", "--tz", "UTC", "--by", "day"], "does not take --tz, --by"),
        (["outcomes", "{out}", "--from", "2024-01-02", "--to", "2024-01-02"], "--from must be"),
        (["outcomes", "{out}", "--from", "2024-13-01"], "'2024-13-01' does not match"),
        (["stuck", "{out}", "--older-than", "two days"], "is not a duration like 90s"),
        (["latency", "{out}", "--by", "week"], "'week' is not one of"),
        (["outcomes"], "give the output root OUT"),
        ([], "give a report NAME"),
    ],
)
def test_report_misuse_exits_2_with_the_reason(out: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["report", *(a.format(out=out) for a in args)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert words in result.stderr.splitlines()[-1], result.stderr


def test_report_show_sql_is_the_sql_that_runs(out: Path, tmp_path: Path) -> None:
    shown = CliRunner().invoke(cli, ["report", "--show-sql", "latency", "--by", "operator"])
    assert shown.exit_code == 0 and "GROUP BY mcc, mnc" in shown.stdout
    params = {"tz": "UTC", "owners": [], "direction": None, "from": None, "to": None}
    with open_tables(out) as tables:
        direct = tables.run(shown.stdout, params)
    result = CliRunner().invoke(
        cli, ["report", "latency", str(out), "--by", "operator", "-o", str(tmp_path / "l.parquet")]
    )
    assert result.exit_code == 0
    assert pq.read_table(tmp_path / "l.parquet").equals(direct)


def test_damaged_tables_are_refused_by_queries_and_rebuilt_by_the_next_run(tmp_path: Path) -> None:
    write_parquet(tmp_path / "in" / "m.parquet", [message("m1")], MESSAGE_TYPES)
    write_parquet(tmp_path / "in" / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    config = RunConfig(
        messages=str(tmp_path / "in" / "m.parquet"),
        statuses=str(tmp_path / "in" / "s.parquet"),
        out=str(tmp_path / "out"),
    )
    run_job(config)
    (tmp_path / "out" / "current" / "tables" / "snapshot.json").write_text('{"format": 1}')
    code, _, stderr = _query(str(tmp_path / "out"), "SELECT 1")
    assert code == 1 and "has no queryable tables" in stderr
    report = run_job(config)
    assert (report["mode"], report["rebuild_reason"]) == (
        "full", f"the queryable tables in {tmp_path / 'out'} cannot be read"
    )  # fmt: skip
    assert table_rows(tmp_path / "out")["messages"][0][:2] == ("acme", "m1")


def test_query_into_a_reader_that_stops_early_ends_quietly(out: Path) -> None:
    command = [str(Path(sys.executable).parent / "convsum"), "query", str(out),
               "SELECT * FROM range(1000000)", "-F", "csv"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline() == b"range\n"
        process.stdout.close()
        assert process.stderr.read() == b""
        assert process.wait(timeout=60) == 128 + signal.SIGPIPE


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_query_stopped_by_a_signal_says_so_on_one_line(out: Path, sig: signal.Signals) -> None:
    endless = "SELECT sum(a.range * b.range) FROM range(100000000) AS a, range(100000) AS b"
    command = [str(Path(sys.executable).parent / "convsum"), "query", str(out), endless]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        time.sleep(2)  # started, and in the query
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout) == (128 + sig, b"")
    assert stderr.decode() == f"Error: interrupted by {sig.name}\n"
