"""How fresh the served data is: the newest input row, reported, and a run refused when too old."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
from click.testing import CliRunner

from convsum.cli import cli
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet

DEMO = Path(__file__).parent.parent / "sample_data" / "demo"


def _newest_created(*directories: Path) -> datetime:
    return max(
        pc.max(pq.read_table(path, columns=["created"])["created"]).as_py()
        for directory in directories
        for path in sorted(directory.rglob("*.parquet"))
    )


def _run(logs: Path, out: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    result = CliRunner().invoke(cli, ["run", "--messages", str(logs / "messages"), "--statuses",
                                      str(logs / "statuses"), "--out", str(out), "--report",
                                      *args])  # fmt: skip
    report = orjson.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, result.stderr, report


def test_the_report_manifest_and_nights_carry_the_newest_input_row(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    shutil.copytree(DEMO, logs)
    code, _, report = _run(logs, out)
    newest = _newest_created(logs / "messages", logs / "statuses")
    assert code == 0 and report["newest_input"] == newest.isoformat().replace("+00:00", "Z")
    manifest = orjson.loads((out / "current" / "manifest.json").read_bytes())
    assert manifest["newest_input"] == report["newest_input"]
    # A night without a new file keeps it; a night of newer rows moves it on.
    assert _run(logs, out)[2]["newest_input"] == report["newest_input"]
    later = newest + timedelta(hours=5)
    write_parquet(logs / "messages" / "night.parquet", [message("n1", created=later)],
                  MESSAGE_TYPES)  # fmt: skip
    write_parquet(logs / "statuses" / "night.parquet",
                  [status("n1", 201, later + timedelta(seconds=3))], STATUS_TYPES)  # fmt: skip
    code, _, night = _run(logs, out)
    assert code == 0 and night["mode"] == "incremental"
    assert night["newest_input"] == (later + timedelta(seconds=3)).isoformat().replace(
        "+00:00", "Z")  # fmt: skip


def test_a_run_whose_newest_input_is_too_old_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr, _ = _run(DEMO, out, "--max-input-age", "26h")
    assert code == 1
    line = stderr.splitlines()[-1]
    assert line.startswith("Error: the newest input row is from 2018-10-0"), line
    assert line.endswith("older than max_input_age 1d 2h (have the logs stopped arriving?); "
                         "nothing published")  # fmt: skip
    assert not (out / "current").exists()
    age = (datetime.now(UTC) - _newest_created(DEMO / "messages", DEMO / "statuses")).days + 2
    assert _run(DEMO, out, "--max-input-age", f"{age}d")[0] == 0
    served = (out / "current").resolve()
    code, _, _ = _run(DEMO, out, "--max-input-age", "30d")  # the night after: still too old
    assert code == 1 and (out / "current").resolve() == served


def test_the_config_file_sets_the_age_as_a_duration(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'messages = "{DEMO / "messages"}"\nstatuses = "{DEMO / "statuses"}"\n'
                   'out = "out"\nmax_input_age = "48h"\n')  # fmt: skip
    result = CliRunner().invoke(cli, ["run", "--config", str(job)])
    assert result.exit_code == 1 and "older than max_input_age 2d 0h" in result.stderr
    job.write_text(job.read_text().replace('"48h"', '"two days"'))
    result = CliRunner().invoke(cli, ["run", "--config", str(job)])
    assert result.exit_code == 2 and "is not a duration like 90s" in result.stderr
