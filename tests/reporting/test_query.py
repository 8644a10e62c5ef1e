"""`convsum query`: read-only SQL over the published tables, in every output format."""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
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
    published_root,
    status,
    table_rows,
    write_parquet,
)
from tests.support.charts import chart_specs
from tests.support.processes import wait_until_reading


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
    assert stderr.startswith("Error: ") and words in stderr.splitlines()[0], stderr


@pytest.mark.parametrize(
    ("sql", "hint"),
    [
        ("SELECT * FROM message", ['Did you mean "messages"?']),
        (
            "SELECT status_cod FROM messages",
            ['Candidate bindings: "status_code", "status_created"'],
        ),
        ("SELECT 1 +", ["LINE 1: SELECT 1 +", " " * len("LINE 1: SELECT 1 ") + "^"]),
    ],
)
def test_query_errors_keep_duckdbs_hints(out: Path, sql: str, hint: list[str]) -> None:
    code, _, stderr = _query(str(out), sql)
    lines = stderr.splitlines()
    assert code == 2 and lines[0].startswith("Error: "), stderr
    # The caret under the SQL's column, no blank line.
    assert [line[: len(want)] for line, want in zip(lines[1:], hint, strict=True)] == hint, stderr


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
    """The rows of csv or tsv, as strings (null as the empty string)."""
    delimiter = "," if fmt == "csv" else "\t"
    return list(csv.DictReader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
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
    assert table.split() == ["┏━━━━━━━━━┓", "┃", "id", "┃", "┃", "varchar", "┃",
                             "┡━━━━━━━━━┩", "│", "m1", "│", "│", "m2", "│", "│", "m3", "│",
                             "└─────────┘"]  # fmt: skip


def test_html_command_writes_the_reports_charts_deterministically(
    out: Path, tmp_path: Path
) -> None:
    args = ["html", str(out), "--tz", "Europe/Stockholm", "--min-volume", "1"]
    first = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.html")])
    second = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b.html")])
    assert (first.exit_code, second.exit_code) == (0, 0), first.stderr
    page = (tmp_path / "a.html").read_bytes()
    assert page == (tmp_path / "b.html").read_bytes()
    assert b"local days in Europe/Stockholm" in page
    assert b'<div class="value">3</div>' in page  # the messages
    volume = chart_specs(page)["chart-volume"]["data"]["values"]
    assert sorted((v["day"], v["direction"], v["messages"]) for v in volume if not v["scope"]) == [
        ("2024-01-01", "mo", 1), ("2024-01-01", "mt", 1), ("2024-01-02", "mt", 1)
    ]  # fmt: skip
    code = CliRunner().invoke(cli, ["html", str(out), "-o", "x.html", "--tz", "Mars/Base"])
    assert code.exit_code == 2 and "unknown time zone 'Mars/Base'" in code.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope", "{out}"], "unknown report 'nope'; one of: overview, outcomes, failures"),
        (["outcomes", "{out}", "--top", "3"], "report outcomes does not take --top"),
        (["quality", "{out}", "--tz", "UTC", "--by", "day"], "does not take --tz, --by"),
        (["outcomes", "{out}", "--from", "2024-01-02", "--to", "2024-01-02"], "--from must be"),
        (["outcomes", "{out}", "--from", "2024-13-01"], "'2024-13-01' does not match"),
        (["stuck", "{out}", "--older-than", "two days"], "is not a duration like 90s"),
        (["stuck", "{out}", "--older-than", "99999999999999d"], "of at most 36500d"),
        (["stuck", "{out}", "--older-than", "36501d"], "of at most 36500d"),
        (["latency", "{out}", "--by", "week"], "'week' is not one of"),
        (["outcomes"], "give the output root OUT"),
        ([], "give a report NAME"),
    ],
)
def test_report_misuse_exits_2_with_the_reason(out: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["report", *(a.format(out=out) for a in args)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert words in result.stderr.splitlines()[-1], result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["latency", "--by", "operator"],
        ["outcomes", "--owner", "acme", "--from", "2024-01-01", "--tz", "Europe/Stockholm"],
        ["stuck", "--older-than", "1h", "--as-of", "2024-01-05T00:00:00Z", "--direction", "mt"],
        ["top", "--top", "1"],
        ["quality"],
    ],
)
def test_report_show_sql_runs_through_query_as_it_is(
    out: Path, tmp_path: Path, args: list[str]
) -> None:
    shown = CliRunner().invoke(cli, ["report", "--show-sql", *args])
    assert shown.exit_code == 0 and "$" not in shown.stdout, shown.stdout
    ran = CliRunner().invoke(cli, ["query", str(out), "-", "-o", str(tmp_path / "q.parquet")],
                             input=shown.stdout)  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    report = [args[0], str(out), *args[1:], "-o", str(tmp_path / "r.parquet")]
    assert CliRunner().invoke(cli, ["report", *report]).exit_code == 0
    assert pq.read_table(tmp_path / "q.parquet").equals(pq.read_table(tmp_path / "r.parquet"))


def test_damaged_tables_are_refused_by_queries_and_rebuilt_by_the_next_run(tmp_path: Path) -> None:
    published_root(tmp_path, [message("m1")], [status("m1", 201)])
    config = RunConfig(
        messages=str(tmp_path / "in" / "m.parquet"),
        statuses=str(tmp_path / "in" / "s.parquet"),
        out=str(tmp_path / "out"),
    )
    (tmp_path / "out" / "current" / "tables" / "snapshot.json").write_text('{"format": 1}')
    code, _, stderr = _query(str(tmp_path / "out"), "SELECT 1")
    assert code == 1 and "has no queryable tables" in stderr
    report = run_job(config)
    assert (report.mode, report.rebuild_reason) == (
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
        wait_until_reading(out, process)
        time.sleep(0.5)  # in the query
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout) == (128 + sig, b"")
    assert stderr.decode() == f"Error: interrupted by {sig.name}\n"


def _convsum(*args: str | bytes, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run the installed command (argv as bytes where a test needs bytes that are not UTF-8)."""
    command = [str(Path(sys.executable).parent / "convsum"), *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        ([b"SELECT '\xff'"], b"", "Invalid value for SQL: the SQL is not UTF-8 text"),
        (["-"], b"SELECT '\xff\xfe'", "-: the SQL is not UTF-8 text (byte 8)"),
        (["-f", "{sql}"], b"", "bad.sql: the SQL is not UTF-8 text (byte 8)"),
    ],
)
def test_query_sql_that_is_not_utf8_exits_2_on_one_line(
    out: Path, tmp_path: Path, args: list[str | bytes], stdin: bytes, words: str
) -> None:
    (tmp_path / "bad.sql").write_bytes(b"SELECT '\xc3('")
    argv = [a.format(sql=tmp_path / "bad.sql") if isinstance(a, str) else a for a in args]
    done = _convsum("query", str(out), *argv, stdin=stdin)
    assert (done.returncode, done.stdout) == (2, b""), done.stderr
    assert done.stderr.decode().splitlines()[-1].endswith(words), done.stderr
    assert b"Traceback" not in done.stderr


def test_report_time_zone_that_is_not_utf8_exits_2_on_one_line(out: Path) -> None:
    done = _convsum("report", "outcomes", str(out), "--tz", b"Europe/\xffholm")
    assert (done.returncode, done.stdout) == (2, b""), done.stderr
    assert done.stderr.decode().splitlines()[-1] == (
        "Error: Invalid value for '--tz': the time zone is not UTF-8 text"
    )


def test_query_keeps_to_its_memory_and_spill_budget(out: Path) -> None:
    from convsum.config import default_memory_limit

    sql = (
        "SELECT current_setting('memory_limit') AS m, "
        "current_setting('max_temp_directory_size') AS t"
    )
    given = _query(str(out), sql, "--memory-limit", "100MiB", "--spill-limit", "1GiB")
    assert given[:2] == (0, b"m,t\n100.0 MiB,1.0 GiB\n"), given
    con = duckdb.connect(config={"memory_limit": default_memory_limit()})
    default = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert _query(str(out), sql)[1] == f"m,t\n{default},10.0 GiB\n".encode()
    refused = _query(str(out), sql, "--memory-limit", "lots")
    assert refused[0] == 2 and "memory limit 'lots'" in refused[2]


def test_query_beyond_its_budget_exits_1_saying_which_option_to_raise(out: Path) -> None:
    sql = "SELECT list(range) FROM range(20000000) GROUP BY range % 3"
    code, stdout, stderr = _query(
        str(out), sql, "--memory-limit", "64MiB", "--spill-limit", "64MiB"
    )
    assert (code, stdout) == (1, b"")
    assert stderr.startswith("Error: the query needs more than its budget: Out of Memory Error")
    assert "raise --memory-limit or --spill-limit" in stderr and "SET" not in stderr


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["query", "{out}", "SELECT 1"], "{out}/current/manifest.json"),
        (["query", "{out}", "SELECT 1"], "{out}/current/api/page.json"),
        (["report", "quality", "{out}"], "{out}/report.csv"),
        (["html", "{out}"], "{out}/current/tables/report.html"),
        (["query", "{other}", "SELECT 1"], "{out}/trees/x.csv"),
    ],
)
def test_output_inside_an_output_root_is_refused_with_exit_2(
    out: Path, tmp_path: Path, command: list[str], target: str
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "current").symlink_to(out.resolve() / (out / "current").readlink())
    before = snapshot_of(out)
    args = [a.format(out=out, other=other) for a in [*command, "-o", target]]
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert "is inside the output root" in result.stderr.splitlines()[-1], result.stderr
    assert snapshot_of(out) == before


def snapshot_of(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_query_removes_the_scratch_of_a_query_that_was_killed(out: Path, tmp_path: Path) -> None:
    import tempfile

    endless = "SELECT sum(a.range * b.range) FROM range(100000000) AS a, range(100000) AS b"
    command = [str(Path(sys.executable).parent / "convsum"), "query", str(out), endless]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        scratch = Path(tempfile.gettempdir())
        pattern = f"convsum-query-{process.pid}-*"
        deadline = time.monotonic() + 30
        while not list(scratch.glob(pattern)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(scratch.glob(pattern)), "the query made no scratch directory"
        process.kill()
        process.wait(timeout=60)
    assert list(scratch.glob(pattern))  # SIGKILL: nothing could clean up
    assert _query(str(out), "SELECT 1")[0] == 0
    assert list(scratch.glob(pattern)) == []


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("ATTACH 'x.db'", "an ATTACH statement is refused"),
        ("INSERT INTO messages VALUES (1)", "an INSERT statement is refused"),
        ("UPDATE messages SET id = 1", "an UPDATE statement is refused"),
        ("COPY messages TO 'x.csv'", "a COPY statement is refused"),
        ("SELECT " + " + ".join(["1"] * 1200), "Max expression depth limit of 1000 exceeded"),
    ],
)
def test_query_refusals_read_as_english_and_suggest_nothing_refused(
    out: Path, sql: str, words: str
) -> None:
    code, stdout, stderr = _query(str(out), sql)
    assert (code, stdout) == (2, b""), stderr
    assert words in stderr and "SET" not in stderr and stderr.count("\n") == 1, stderr


def test_query_runs_a_pivot_without_its_values_listed(out: Path) -> None:
    sql = "PIVOT (SELECT owner, direction FROM messages) ON direction USING count(*) ORDER BY owner"
    assert _query(str(out), sql)[:2] == (0, b"owner,mo,mt\nacme,1,1\nbank,0,1\n")


def test_query_sql_may_start_with_a_comment(out: Path) -> None:
    code, stdout, stderr = _query(
        str(out), "-- how many\nSELECT count(*) AS n FROM messages", "-F", "csv"
    )
    assert (code, stdout) == (0, b"n\n3\n"), stderr


def test_query_of_a_dangling_current_link_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "current").symlink_to("trees/gone")
    code, _, stderr = _query(str(tmp_path / "out"), "SELECT 1")
    assert code == 1
    assert stderr == (
        f"Error: {tmp_path}/out/current names trees/gone, which does not exist (the output root "
        f"was changed by hand); run `convsum run --full --out {tmp_path}/out` to publish it again\n"
    )


def test_quality_reports_the_last_run_even_when_the_clock_went_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    write_parquet(inputs / "m" / "1.parquet", [message("m1")], MESSAGE_TYPES)
    write_parquet(inputs / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    config = RunConfig(
        messages=str(inputs / "m"), statuses=str(inputs / "s.parquet"), out=str(tmp_path / "out")
    )
    run_job(config)
    write_parquet(inputs / "m" / "2.parquet", [message("m2"), message("m3")], MESSAGE_TYPES)
    monkeypatch.setattr("convsum.run.new_run_id", lambda: "19990101T000000Z-000000")
    run_job(config)
    code, stdout, stderr = _query(
        str(tmp_path / "out"), "SELECT run_number, run_id, messages FROM runs"
    )
    assert code == 0, stderr
    assert stdout.decode().splitlines()[1:] == [
        f"1,{stdout.decode().splitlines()[1].split(',')[1]},1",
        "2,19990101T000000Z-000000,3",
    ]
    result = CliRunner().invoke(cli, ["report", "quality", str(tmp_path / "out"), "-F", "csv"])
    assert result.stdout.splitlines()[1] == "messages,3", result.output


def test_report_as_of_takes_the_apis_iso_form_and_any_offset(tmp_path: Path) -> None:
    out = published_root(tmp_path, [message("m1")], [])  # 96 hours old at the time below
    forms = ["2024-01-05T12:00:00", "2024-01-05T12:00:00Z", "2024-01-05T12:00:00.000Z",
             "2024-01-05T14:00:00+02:00"]  # fmt: skip
    results = [
        CliRunner().invoke(cli, ["report", "stuck", str(out), "--as-of", f, "-F", "csv"])
        for f in forms
    ]
    assert [r.exit_code for r in results] == [0] * len(forms), results[0].stderr
    assert len({r.stdout for r in results}) == 1 and ",96.0," in results[0].stdout
    assert all("as of 2024-01-05T12:00:00Z" in r.stderr for r in results), results[1].stderr


def test_report_of_an_owner_with_no_message_says_so(out: Path) -> None:
    args = ["report", "outcomes", str(out), "--owner", "acme", "--owner", "nobody", "-F", "csv"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and result.stdout.count("\n") == 3  # acme's two days
    warned = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warned == ["convsum: warning: --owner 'nobody' matches no message of this run"]
    quiet = CliRunner().invoke(cli, ["report", "outcomes", str(out), "--owner", "acme"])
    assert "warning" not in quiet.stderr
    html = CliRunner().invoke(cli, ["html", str(out), "-o", str(out.parent / "r.html"),
                                    "--owner", "nobody"])  # fmt: skip
    assert html.exit_code == 0 and "--owner 'nobody' matches no message" in html.stderr


def test_output_suffix_names_the_format_or_is_refused(out: Path, tmp_path: Path) -> None:
    sql = "SELECT id FROM messages ORDER BY id"
    for name in ("x.xlsx", "rows"):
        code, _, stderr = _query(str(out), sql, "-o", str(tmp_path / name))
        assert code == 2 and f"no format is named by '{name}'" in stderr, stderr
        assert "convsum: " not in stderr and not (tmp_path / name).exists()  # before running
    assert _query(str(out), sql, "-o", str(tmp_path / "rows"), "-F", "tsv")[0] == 0
    assert (tmp_path / "rows").read_text() == "id\nm1\nm2\nm3\n"
    assert _query(str(out), sql, "-o", str(tmp_path / "x.md"))[0] == 0
    assert (tmp_path / "x.md").read_text().startswith("| id  |\n|-----|")
    assert _query(str(out), sql, "-o", "-")[:2] == (0, b"id\nm1\nm2\nm3\n")


def test_html_to_standard_output(out: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["html", str(out), "-o", "-"])
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"<!DOCTYPE html>")
    assert "wrote standard output" in result.stderr and not Path("-").exists()


def test_the_table_shows_40_rows_unless_limit_says_otherwise(out: Path) -> None:
    many = "SELECT range AS n FROM range(39583)"
    code, stdout, stderr = _query(str(out), many, "-F", "table")
    assert code == 0 and stderr.startswith("convsum: 39,583 rows (40 shown; --limit 0 for all)")
    numbers = re.findall(rb"\b\d+\b", stdout)
    assert numbers == [str(n).encode() for n in range(40)]
    sql = "SELECT range AS n FROM range(1000)"
    assert (
        len(re.findall(rb"\b\d+\b", _query(str(out), sql, "-F", "table", "--limit", "0")[1]))
        == 1000
    )
    assert _query(str(out), sql)[1].count(b"\n") == 1001  # csv: every row
    code, stdout, stderr = _query(str(out), sql, "--limit", "3")
    assert stdout == b"n\n0\n1\n2\n" and "1,000 rows (3 shown" in stderr
