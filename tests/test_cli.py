"""The command line: help, version, exit codes, and bad input that publishes nothing (SPEC 6)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from convsum import __version__
from convsum.cli import cli
from convsum.reporting.query import open_tables
from convsum.reporting.reports import REPORTS
from convsum.results import DataCounts
from tests.conftest import (
    MESSAGE_TYPES,
    STATUS_TYPES,
    Tree,
    message,
    snapshot,
    status,
    table_rows,
    write_parquet,
)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_cli_every_command_has_help(name: str) -> None:
    command = cli.commands[name]
    assert command.help and len(command.help.split()) > 5
    for flag in ("--help", "-h"):
        result = _invoke(name, flag)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    params = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    assert all(p.help for p in params if p.name not in ("help", "version")), name


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[list[str]]:
    subs = getattr(command, "commands", {})
    return [list(path)] + [
        p for n, c in sorted(subs.items()) for p in _command_paths(c, (*path, n))
    ]


@pytest.mark.parametrize("args", _command_paths(cli), ids=" ".join)
def test_cli_version_on_every_command(args: list[str]) -> None:
    result = _invoke(*args, "--version")
    assert result.exit_code == 0, result.output
    assert result.output == f"convsum, version {__version__}\n"


@pytest.fixture
def good_inputs(tmp_path: Path) -> tuple[Path, Path]:
    m = write_parquet(tmp_path / "in" / "messages.parquet", [message("m1")], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "in" / "statuses.parquet", [status("m1", 201)], STATUS_TYPES)
    return m, s


@pytest.fixture
def published(tmp_path: Path, good_inputs: tuple[Path, Path]) -> Path:
    out = tmp_path / "out"
    m, s = good_inputs
    result = _invoke("run", "--messages", str(m), "--statuses", str(s), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def _unchecked_text(values: list[bytes]) -> pa.Array:
    """Return a string array holding `values` as they are, valid UTF-8 or not."""
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())


def _with_column(path: Path, rows: list[dict[str, Any]], name: str, array: pa.Array) -> Path:
    """Write message rows with column `name` replaced by `array`."""
    table = pa.Table.from_pylist(rows, schema=pa.schema(list(MESSAGE_TYPES.items())))
    if name in table.column_names:
        table = table.drop_columns([name])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.append_column(name, array), path)
    return path


def _bad_messages(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write a bad messages input; return it and the words the error must contain."""
    path = tmp_path / "bad" / "messages.parquet"
    if case == "missing file":
        return tmp_path / "bad" / "nope.parquet", "no such file or directory"
    if case == "fifo":
        path.parent.mkdir(parents=True)
        os.mkfifo(path)
        return path, "not a regular file or a directory (expected a Parquet file)"
    if case == "corrupt":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PAR1 this is not parquet at all PAR1")
        return path, "not a readable Parquet file"
    if case == "truncated":
        good = write_parquet(tmp_path / "bad" / "full.parquet", [message("m1")], MESSAGE_TYPES)
        path.write_bytes(good.read_bytes()[:-20])
        return path, "not a readable Parquet file"
    if case == "missing column":
        row = message("m1")
        del row["owner"]
        return write_parquet(path, [row], MESSAGE_TYPES), "missing required column 'owner'"
    if case == "wrong type":
        rows = [message("m1", segments="two")]
        return write_parquet(path, rows, {**MESSAGE_TYPES, "segments": pa.string()}), (
            "column 'segments': type string; expected an integer"
        )
    if case == "null id":
        rows = [message("m1"), message(None)]
        return write_parquet(path, rows, MESSAGE_TYPES), "column 'id': null value"
    if case == "unknown direction":
        rows = [message("m1"), message("m2", direction="sideways")]
        return write_parquet(
            path, rows, MESSAGE_TYPES
        ), "direction 'sideways'; expected 'mt' or 'mo'"
    if case == "unknown direction code":
        rows = [message("m1", direction=7)]
        return write_parquet(
            path, rows, {**MESSAGE_TYPES, "direction": pa.int32()}
        ), "direction 7 is not one of"
    if case == "bad timestamp text":
        rows = [message("m1", created="2024-01-01T12:00:00Z"), message("m2", created="yesterday")]
        return write_parquet(path, rows, {**MESSAGE_TYPES, "created": pa.string()}), (
            "column 'created': expected an ISO-8601 timestamp, found 'yesterday' (row index 1)"
        )
    if case == "timestamp text past year 9999":
        rows = [message("m1", created="2024-01-01T12:00:00Z")] * 2
        rows.append(message("m3", created="9999-12-31T23:00:00-02:00"))
        return write_parquet(path, rows, {**MESSAGE_TYPES, "created": pa.string()}), (
            "column 'created': timestamp '9999-12-31T23:00:00-02:00' outside the years 0001-9999; "
            "expected 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 (UTC) (row index 2)"
        )
    if case == "negative segments":
        rows = [message("m1"), message("m2", segments=-3)]
        return write_parquet(path, rows, MESSAGE_TYPES), (
            "column 'segments': value -3; expected an integer from 0 to 255 (row index 1)"
        )
    if case == "too many segments":
        rows = [message("m1", segments=256)]
        return write_parquet(path, rows, MESSAGE_TYPES), (
            "column 'segments': value 256; expected an integer from 0 to 255 (row index 0)"
        )
    if case == "invalid utf-8":
        rows = [message("m1"), message("m2")]
        body = _unchecked_text([b"fine", b"caf\xe9"])
        return _with_column(path, rows, "body", body), (
            "column 'body': text is not valid UTF-8; expected UTF-8 text (row index 1)"
        )
    if case == "invalid utf-8 in nested statuses":
        rows = [message("m1"), message("m2"), message("m3")]  # m3 holds statuses 0 and 1
        created = _unchecked_text([b"2024-01-01T12:00:00Z", b"2024-01-01T12:00:0\xff"])
        items = pa.StructArray.from_arrays([pa.array([201, 201]), created], ["code", "created"])
        statuses = pa.ListArray.from_arrays(pa.array([0, 0, 0, 2], pa.int32()), items)
        return _with_column(path, rows, "statuses", statuses), (
            "column 'statuses.created': text is not valid UTF-8; expected UTF-8 text (row index 2)"
        )
    if case == "invalid utf-8 in a partition value":
        row = message("m1")
        del row["owner"]
        write_parquet(tmp_path / "bad" / "owner=caf%E9" / "part-0.parquet", [row])
        return tmp_path / "bad", (
            "owner=caf%E9/part-0.parquet: column 'owner': text is not valid UTF-8; "
            "expected UTF-8 text (row index 0)"
        )
    raise AssertionError(case)


BAD_CASES = [
    "missing file",
    "fifo",
    "corrupt",
    "truncated",
    "missing column",
    "wrong type",
    "null id",
    "unknown direction",
    "unknown direction code",
    "bad timestamp text",
    "timestamp text past year 9999",
    "negative segments",
    "too many segments",
    "invalid utf-8",
    "invalid utf-8 in nested statuses",
    "invalid utf-8 in a partition value",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_cli_bad_messages_exit_1_and_publish_nothing(
    tmp_path: Path, published: Path, good_inputs: tuple[Path, Path], case: str, engine: str
) -> None:
    before = snapshot(published)
    bad, words = _bad_messages(tmp_path, case)
    result = CliRunner().invoke(
        cli,
        [
            *("run", "--messages", str(bad), "--statuses", str(good_inputs[1])),
            *("--out", str(published), "--engine", engine),
        ],
    )
    assert result.exit_code == 1, result.output
    error_lines = [line for line in result.stderr.splitlines() if not line.startswith("convsum: ")]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("Error: ")
    assert words in error_lines[0]
    if case != "missing file":
        assert str(bad) in error_lines[0]
    assert "Traceback" not in result.output
    assert snapshot(published) == before


def test_cli_negative_status_duration_exits_1_and_publishes_nothing(
    tmp_path: Path, published: Path, good_inputs: tuple[Path, Path], engine: str
) -> None:
    before = snapshot(published)
    rows = [status("m1", 101), status("m1", 201, duration=-2)]
    bad = write_parquet(tmp_path / "bad" / "st.parquet", rows, STATUS_TYPES)
    args = ["run", "--messages", str(good_inputs[0]), "--statuses", str(bad)]
    result = CliRunner().invoke(cli, [*args, "--out", str(published), "--engine", engine])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"Error: {bad}: column 'duration': value -2; expected an integer of 0 or more (row index 1)"
    )
    assert snapshot(published) == before


def test_cli_bad_status_column_names_file_and_column(
    tmp_path: Path, published: Path, good_inputs: tuple[Path, Path]
) -> None:
    before = snapshot(published)
    bad = write_parquet(
        tmp_path / "bad" / "st.parquet",
        [{"messageId": "m1", "code": None, "created": None}],
        STATUS_TYPES,
    )
    result = CliRunner().invoke(
        cli,
        ["run", "--messages", str(good_inputs[0]), "--statuses", str(bad), "--out", str(published)],
    )
    assert result.exit_code == 1, result.output
    assert f"{bad}: column 'code': null value" in result.stderr
    assert snapshot(published) == before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--bogus"], "No such option"),
        (["run", "--out", "x"], "missing messages"),
        (["run", "--messages", "m", "--out", "o", "--page-size", "7"], "must divide 10000"),
        (
            ["run", "--messages", "m", "--out", "o", "--engine", "flink"],
            "Invalid value for '--engine'",
        ),
        (
            ["run", "--messages", "m", "--out", "o", "--threads", "0"],
            "Invalid value for '--threads'",
        ),
        (
            ["run", "--messages", "m", "--out", "o", "--memory-limit", "banana"],
            "Invalid value for '--memory-limit': memory limit 'banana': expected a size",
        ),
        (
            ["run", "--messages", "m", "--out", "o", "--engine", "polars", "--memory-limit", "4"],
            "Invalid value for '--memory-limit'",
        ),
        (["run", "--messages", "in", "--out", "in/out"], "messages in and out in/out overlap"),
        (["run", "--messages", "in/*.parquet", "--out", "in"], "and out in overlap"),
        (
            ["run", "--messages", "m.parquet", "--statuses", "out/s", "--out", "out"],
            "statuses out/s and out out overlap",
        ),
        (["nginx-conf"], "give OUT, or --from s3://BUCKET/PREFIX"),
        (["nginx-conf", "--from", "s3://bucket/p"], "--from: give OUT too, whose token store"),
    ],
)
def test_cli_misuse_exits_2(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("page_sise = 50", "unknown key 'page_sise'"),
        ('memory_limit = "lots"', "memory limit 'lots': expected a size from 64MiB to 8EiB"),
        ("[spark.executor]\nmemory = 4", "[spark] must be a table of Spark settings"),
    ],
)
def test_cli_bad_config_file_exits_2(tmp_path: Path, line: str, words: str) -> None:
    config = tmp_path / "job.toml"
    config.write_text(f'messages = "m"\nout = "o"\n{line}\n')
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert words in result.stderr


@pytest.mark.parametrize("missing", ["pyspark", "java"])
def test_cli_spark_engine_without_pyspark_or_java_exits_2_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    if missing == "pyspark":
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name: None if name == "pyspark" else find_spec(name)
        )
    else:
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(cli, ["run", "--messages", "m", "--out", "o", "--engine", "spark"])
    assert result.exit_code == 2, result.output
    assert "Java 17+" in result.stderr
    if missing == "pyspark":
        assert "pip install 'convsum[spark]'" in result.stderr
    else:
        assert "none on PATH (install one, or set JAVA_HOME)" in result.stderr


def test_cli_config_file_supplies_options_and_flags_win(
    tmp_path: Path, good_inputs: tuple[Path, Path]
) -> None:
    m, s = good_inputs
    config = tmp_path / "in" / "job.toml"
    config.write_text(
        f'messages = "{m.name}"\nstatuses = "{s.name}"\nout = "../out"\npage_size = 20\n'
    )
    result = _invoke("run", "--config", str(config), "--page-size", "10", "--report")
    assert result.exit_code == 0, result.output
    manifest = (tmp_path / "out" / "current" / "manifest.json").read_text()
    assert '"page_size": 10' in manifest
    assert '"files_written": 6' in result.stdout


def test_cli_nginx_conf_without_a_published_tree_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["nginx-conf", str(tmp_path)])
    assert result.exit_code == 1
    assert "no published manifest" in result.stderr


def test_cli_run_report_on_stdout(published: Path, good_inputs: tuple[Path, Path]) -> None:
    m, s = good_inputs
    args = ("run", "--messages", str(m), "--statuses", str(s), "--out", str(published))
    result = _invoke(*args, "--report", "--full")
    assert result.exit_code == 0, result.output
    import orjson

    report = orjson.loads(result.stdout)
    assert (report["mode"], report["rebuild_reason"]) == ("full", "--full")
    assert report["messages"] == 1
    assert report["files_written"] == 6
    assert report["files_removed"] == 0
    # The state is committed after the report is written: its stage is not in the report.
    stages = {"list", "read", "derive", "pages", "summaries", "tables", "index"}
    assert set(report["stages"]) == stages
    tables, listed = table_rows(published), (published / "current" / "files.txt").read_bytes()
    again = orjson.loads(_invoke(*args, "--report").stdout)
    assert (again["mode"], again["rebuild_reason"]) == ("incremental", None)
    assert again["files_read"] == {"messages": 0, "statuses": 0}
    assert again["files_skipped"] == {"messages": 1, "statuses": 1}
    assert (again["files_written"], again["files_unchanged"], again["files_removed"]) == (0, 0, 0)
    # No new file: nothing is derived again, and the counts stand.
    data = [field.name for field in fields(DataCounts)]
    assert {k: again[k] for k in data} == {k: report[k] for k in data}
    assert set(again["stages"]) == {"list", "read", "swap", "index"}
    assert table_rows(published) == tables
    assert (published / "current" / "files.txt").read_bytes() == listed
    assert (published / "current" / "written.txt").read_bytes() == b""
    with open_tables(published) as opened:
        runs = opened.con.execute("SELECT run_id FROM runs ORDER BY started").fetchall()
    assert runs[-2:] == [(report["run_id"],), (again["run_id"],)]  # one row more


def test_cli_only_summaries_writes_no_pages(tmp_path: Path, good_inputs: tuple[Path, Path]) -> None:
    m, s = good_inputs
    out = tmp_path / "out"
    result = _invoke(
        "run", "--messages", str(m), "--statuses", str(s), "--out", str(out), "--only", "summaries"
    )
    assert result.exit_code == 0, result.output
    files = (out / "current" / "files.txt").read_text().split()
    assert len(files) == 2
    assert all(f.endswith(".summary.json") for f in files)
    conf = _invoke("nginx-conf", str(out), "--owner-in-path")
    assert "this run published summaries only" in conf.output
    assert "@past_end;" not in conf.output
    assert "js_var $cs_lists 0;" in _invoke("nginx-conf", str(out)).output


def test_cli_first_bad_file_in_order_is_reported(
    tmp_path: Path, good_inputs: tuple[Path, Path]
) -> None:
    row = message("m1")
    del row["owner"]
    write_parquet(tmp_path / "bad" / "a.parquet", [row], MESSAGE_TYPES)
    write_parquet(tmp_path / "bad" / "b.parquet", [message(None)], MESSAGE_TYPES)
    for good in range(3):
        write_parquet(tmp_path / "bad" / f"c{good}.parquet", [message(f"g{good}")], MESSAGE_TYPES)
    args = ["run", "--messages", str(tmp_path / "bad"), "--statuses", str(good_inputs[1])]
    for threads in ("1", "2", "4"):
        result = CliRunner().invoke(
            cli, [*args, "--out", str(tmp_path / "out"), "--threads", threads]
        )
        assert result.exit_code == 1
        assert f"{tmp_path / 'bad' / 'a.parquet'}: missing required column 'owner'" in result.stderr
    assert not (tmp_path / "out" / "current").exists()


def test_cli_disk_full_exits_1_and_publishes_nothing(
    published: Path, good_inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from convsum.publish.tree import TreeWriter

    def full(self: TreeWriter, conversation: str, name: str, body: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.api / conversation / name))

    before = snapshot(published)
    monkeypatch.setattr(TreeWriter, "write", full)
    m, s = good_inputs
    result = CliRunner().invoke(
        cli, ["run", "--messages", str(m), "--statuses", str(s), "--out", str(published), "--full"]
    )
    assert result.exit_code == 1, result.output
    assert "cannot write the output" in result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(published) == before


def test_cli_second_run_on_a_locked_root_exits_75(
    published: Path, good_inputs: tuple[Path, Path]
) -> None:
    import fcntl

    before = snapshot(published)
    m, s = good_inputs
    args = ["run", "--messages", str(m), "--statuses", str(s), "--out", str(published)]
    with (published / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("4242")
        held.flush()
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 75, result.output
        assert "another run (pid 4242) is writing this output root" in result.stderr
        assert snapshot(published) == before
    assert CliRunner().invoke(cli, args).exit_code == 0  # released with its holder


def test_cli_report_counts_files_removed_since_the_previous_tree(tmp_path: Path) -> None:
    s = write_parquet(tmp_path / "in" / "statuses.parquet", [status("m1", 201)], STATUS_TYPES)
    both = write_parquet(
        tmp_path / "in" / "both.parquet",
        [message("m1", recipient="4671"), message("m2", recipient="4672")],
        MESSAGE_TYPES,
    )
    one = write_parquet(
        tmp_path / "in" / "one.parquet", [message("m1", recipient="4671")], MESSAGE_TYPES
    )
    out = ["--out", str(tmp_path / "out"), "--statuses", str(s), "--report"]
    first = _invoke("run", "--messages", str(both), *out)
    second = _invoke("run", "--messages", str(one), *out)
    import orjson

    # 4672's summary and its all and mt pages are gone; Acme's pages are rewritten in place.
    assert orjson.loads(first.stdout)["files_removed"] == 0
    assert orjson.loads(second.stdout)["files_removed"] == 3


def test_cli_years_1_and_9999_render_alike_from_text_and_timestamps(
    tmp_path: Path, engine: str
) -> None:
    texts = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z"]
    times = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    m_text = write_parquet(
        tmp_path / "text" / "m.parquet",
        [message(f"m{i}", created=t) for i, t in enumerate(texts)],
        {**MESSAGE_TYPES, "created": pa.string()},
    )
    m_typed = write_parquet(
        tmp_path / "typed" / "m.parquet",
        [message(f"m{i}", created=t) for i, t in enumerate(times)],
        {**MESSAGE_TYPES, "created": pa.timestamp("us", "UTC")},
    )
    s = write_parquet(tmp_path / "s.parquet", [], STATUS_TYPES)
    created = []
    for m in (m_text, m_typed):
        out = m.parent / "out"
        args = ["run", "--messages", str(m), "--statuses", str(s), "--out", str(out)]
        result = _invoke(*args, "--engine", engine)
        assert result.exit_code == 0, result.output
        tree = Tree(out, {})
        created.append([row["created"] for row in tree.messages("Acme")])
    expected = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"]
    assert created == [expected, expected]


def test_cli_environment_sits_between_the_command_line_and_the_file(
    tmp_path: Path, good_inputs: tuple[Path, Path]
) -> None:
    m, s = good_inputs
    config = tmp_path / "job.toml"
    config.write_text(f'messages = "{m}"\nstatuses = "{s}"\nout = "{tmp_path / "out"}"\n'
                      "page_size = 20\n")  # fmt: skip
    runner = CliRunner(env={"CONVSUM_RUN_PAGE_SIZE": "10"})

    def page_size(*args: str) -> int:
        result = runner.invoke(cli, ["run", "--config", str(config), "--full", *args])
        assert result.exit_code == 0, result.output
        manifest = (tmp_path / "out" / "current" / "manifest.json").read_bytes()
        return int(orjson.loads(manifest)["layout"]["page_size"])

    assert page_size() == 10  # the environment beats the file
    assert page_size("--page-size", "25") == 25  # the command line beats both
    bad = runner.invoke(cli, ["run", "--config", str(config)], env={"CONVSUM_RUN_PAGE_SIZE": "7"})
    assert bad.exit_code == 2 and "page size 7 is not served statically" in bad.stderr


def test_completion_offers_the_report_names_without_the_query_engines() -> None:
    env = {**os.environ, "_CONVSUM_COMPLETE": "bash_complete", "COMP_CWORD": "2",
           "PYTHONPROFILEIMPORTTIME": "1"}  # fmt: skip
    command = [str(Path(sys.executable).parent / "convsum")]
    every = subprocess.run(command, env={**env, "COMP_WORDS": "convsum report "},
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert every.stdout.split() == [f"plain,{name}" for name in REPORTS]
    some = subprocess.run(command, env={**env, "COMP_WORDS": "convsum report l"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert some.stdout.split() == ["plain,latency"]
    imported = {line.split("|")[-1].strip() for line in every.stderr.splitlines()}
    assert "click" in imported
    heavy = {"duckdb", "polars", "pyarrow", "convsum.publish.nginx", "rich", "orjson", "tomllib"}
    assert not imported & heavy
