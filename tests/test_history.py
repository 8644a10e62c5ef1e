"""The jobs' history (every run and sync that ended) and `convsum status`, the check built on it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import orjson
from click.testing import CliRunner, Result

from convsum.cli import cli
from convsum.history import HISTORY
from convsum.incremental.catalog import CATALOG, STATE
from tests.support.s3server import S3Server

DEMO = Path(__file__).parent.parent / "sample_data" / "demo"


def _run(out: Path, statuses: Path = DEMO / "statuses") -> Result:
    args = ["run", "--messages", str(DEMO / "messages"), "--statuses", str(statuses),
            "--out", str(out)]  # fmt: skip
    return CliRunner().invoke(cli, args)


def _status(out: Path, *args: str) -> tuple[int, dict[str, str]]:
    result = CliRunner().invoke(cli, ["status", str(out), *args])
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    return result.exit_code, {key: value.strip() for key, value in lines.items()}


def test_every_run_that_ends_adds_a_line_that_query_reads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    assert _run(out, statuses=tmp_path / "gone").exit_code == 1
    lines = [orjson.loads(line) for line in (out / HISTORY).read_bytes().splitlines()]
    assert [(e["job"], e["exit_code"], e["stage"], e["mode"]) for e in lines] == [
        ("run", 0, None, "full"),
        ("run", 1, "list", None),
    ]
    assert lines[1]["error"] == f"statuses {tmp_path / 'gone'}: no such file or directory"
    assert lines[0]["run_id"] == (out / "current").resolve().name
    assert all(e["started"] <= e["finished"] for e in lines)
    sql = "SELECT job, exit_code, stage, finished >= started AS ordered FROM history"
    result = CliRunner().invoke(cli, ["query", str(out), sql, "-F", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == [
        {"job": "run", "exit_code": 0, "stage": None, "ordered": True},
        {"job": "run", "exit_code": 1, "stage": "list", "ordered": True},
    ]


def test_status_says_healthy_then_what_went_wrong(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    code, said = _status(out)
    served = (out / "current").resolve().name
    assert code == 0 and said["status"] == "healthy"
    assert said["served"].startswith(f"run {served}, started ")
    assert said["newest input"].startswith("2018-10-04 08:01 UTC (")
    assert said["last run"].startswith(f"{served}, ended ")
    assert said["pending"] == "nothing"
    code, said = _status(out, "--max-input-age", "2d")
    assert code == 1 and said["status"] == (
        "unhealthy: the served data is older than --max-input-age"
    )
    assert _run(out, statuses=tmp_path / "gone").exit_code == 1
    code, said = _status(out)
    assert code == 1 and said["status"] == "unhealthy: the last run failed (exit 1)"
    assert " in its list stage, exit 1: statuses " in said["last run"]
    assert said["last success"].startswith(f"{served}, ended ")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _status(empty) == (1, {"served": "nothing", "status": "unhealthy: nothing is published"})


def test_status_says_when_the_bucket_is_behind(tmp_path: Path, s3: S3Server) -> None:
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    destination = f"s3://{s3.new_bucket()}/api"
    synced = CliRunner().invoke(cli, ["sync", str(out), destination], env=s3.env())
    assert synced.exit_code == 0, synced.stderr
    code, said = _status(out)
    assert code == 0 and said["last sync"].startswith(f"to {destination}: ")
    assert _run(out).exit_code == 0  # a new run the bucket does not hold yet
    code, said = _status(out)
    assert code == 1 and said["status"].startswith("unhealthy: the bucket holds run ")
    unreachable = s3.env(AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert CliRunner().invoke(cli, ["sync", str(out), destination], env=unreachable).exit_code == 1
    code, said = _status(out)
    assert code == 1 and said["status"] == "unhealthy: the last sync failed (exit 1)"


def _holding_the_catalog(out: Path, read_only: bool) -> subprocess.Popen[str]:
    """A process that opens the served catalog, says so, and holds it until its stdin ends."""
    catalog = out / "current" / STATE / CATALOG
    script = (
        "import sys, duckdb\n"
        f"con = duckdb.connect({str(catalog)!r}, read_only={read_only})\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    return holder


def test_status_says_when_a_run_holds_the_state_store(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    with _holding_the_catalog(out, read_only=False) as run:
        code, said = _status(out)
        run.communicate("")
    assert code == 0 and said["status"] == "healthy"
    assert said["pending"] == "a run is under way (it holds the state store)"


def test_a_run_waits_for_a_status_check_reading_the_state_store(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    with _holding_the_catalog(out, read_only=True) as check:
        threading.Timer(1.0, check.communicate, ("",)).start()
        result = _run(out)
    assert result.exit_code == 0, result.stderr
    assert '"mode":"incremental"' in (out / HISTORY).read_text().splitlines()[-1]
