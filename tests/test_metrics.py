"""The jobs' metrics file: Prometheus' text format, read back with prometheus_client's parser."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from convsum import __version__
from convsum.cli import cli
from tests.support.s3server import S3Server

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "sample_data" / "demo"


def metrics(path: Path) -> dict[str, Any]:
    """Each sample of the file by its name, and its labels' values (one label at most here)."""
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family
        for sample in family.samples:
            key = sample.name + "".join(f"{{{v}}}" for v in sample.labels.values())
            samples[key] = sample.value
    return samples


def _run(out: Path, prom: Path, statuses: Path = DEMO / "statuses") -> tuple[int, dict[str, Any]]:
    args = ["run", "--messages", str(DEMO / "messages"), "--statuses", str(statuses),
            "--out", str(out), "--metrics-file", str(prom), "--report"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    return result.exit_code, orjson.loads(result.stdout) if result.exit_code == 0 else {}


def test_a_run_writes_its_metrics_and_a_failed_run_keeps_the_last_success(
    tmp_path: Path,
) -> None:
    prom = tmp_path / "textfile" / "convsum.prom"
    prom.parent.mkdir()
    before = time.time()
    code, report = _run(tmp_path / "out", prom)
    assert code == 0
    first = metrics(prom)
    assert first["convsum_run_exit_code"] == 0
    assert before <= first["convsum_run_started_timestamp_seconds"]
    assert first["convsum_run_started_timestamp_seconds"] <= first[
        "convsum_run_finished_timestamp_seconds"] <= time.time()  # fmt: skip
    success = first["convsum_run_last_success_timestamp_seconds"]
    assert success == first["convsum_run_finished_timestamp_seconds"]
    assert "convsum_run_last_failure_timestamp_seconds" not in first
    assert first[f"convsum_run_info{{{__version__}}}"] == 1
    assert first["convsum_run_messages"] == report["messages"] == 3000
    assert first["convsum_run_conversations"] == report["participants"]
    assert first["convsum_run_rows_read{messages}"] == report["rows_read"]["messages"]
    assert first["convsum_run_files{written}"] == report["files_written"]
    assert first["convsum_run_written_bytes"] == report["bytes_written"]
    newest = datetime.fromisoformat(report["newest_input"]).timestamp()
    assert first["convsum_run_newest_input_timestamp_seconds"] == newest
    assert {k: v for k, v in first.items() if k.startswith("convsum_run_stage_")} == {
        f"convsum_run_stage_duration_seconds{{{stage}}}": seconds
        for stage, seconds in report["stages"].items()
    }

    code, _ = _run(tmp_path / "out", prom, statuses=tmp_path / "gone")
    assert code == 1
    failed = metrics(prom)
    assert failed["convsum_run_exit_code"] == 1
    assert failed["convsum_run_last_success_timestamp_seconds"] == success  # carried over
    assert failed["convsum_run_last_failure_timestamp_seconds"] == failed[
        "convsum_run_finished_timestamp_seconds"]  # fmt: skip
    assert "convsum_run_messages" not in failed  # a failed run's counts would mislead
    # the data served is the last published run's: as fresh as it was
    assert failed["convsum_run_newest_input_timestamp_seconds"] == newest
    assert [p.name for p in prom.parent.iterdir()] == ["convsum.prom"]  # no temporary file

    assert _run(tmp_path / "out", prom)[0] == 0
    again = metrics(prom)
    assert again["convsum_run_last_success_timestamp_seconds"] > success
    assert again["convsum_run_last_failure_timestamp_seconds"] == failed[
        "convsum_run_last_failure_timestamp_seconds"]  # fmt: skip


def test_a_sync_writes_its_metrics_sent_or_failed(tmp_path: Path, s3: S3Server) -> None:
    out, prom = tmp_path / "out", tmp_path / "sync.prom"
    assert _run(out, tmp_path / "run.prom")[0] == 0
    bucket = s3.new_bucket()
    args = ["sync", str(out), f"s3://{bucket}/api", "--metrics-file", str(prom), "--report"]
    result = CliRunner().invoke(cli, args, env=s3.env())
    assert result.exit_code == 0, result.stderr
    report, sent = orjson.loads(result.stdout), metrics(prom)
    assert sent["convsum_sync_exit_code"] == 0
    assert sent["convsum_sync_objects{sent}"] == report["sent"] > 0
    assert sent["convsum_sync_sent_bytes"] == report["bytes"]
    unreachable = s3.env(AWS_ENDPOINT_URL="http://127.0.0.1:9")  # nothing listens there
    result = CliRunner().invoke(cli, args, env=unreachable)
    assert result.exit_code == 1
    failed = metrics(prom)
    assert failed["convsum_sync_exit_code"] == 1
    assert failed["convsum_sync_last_success_timestamp_seconds"] == sent[
        "convsum_sync_last_success_timestamp_seconds"]  # fmt: skip
    assert "convsum_sync_objects{sent}" not in failed
    # The alerts of jobs/README.md name metrics that a run and a sync write.
    written = {key.split("{")[0] for key in [*metrics(tmp_path / "run.prom"), *sent]}
    rules = (ROOT / "jobs" / "README.md").read_text().split("```yaml\n")[1].split("```")[0]
    named = set(re.findall(r"convsum_\w+", rules))
    assert len(named) == 4 and named <= written, named - written


def test_a_metrics_file_the_collector_would_not_read_is_refused(tmp_path: Path) -> None:
    args = ["sync", str(tmp_path), "s3://b/p", "--metrics-file", str(tmp_path / "m.txt")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "only files named *.prom" in result.stderr, result.stderr


def test_a_run_that_cannot_write_its_metrics_ends_as_it_would_have(tmp_path: Path) -> None:
    prom = tmp_path / "gone" / "convsum.prom"
    args = ["run", "--messages", str(DEMO / "messages"), "--statuses", str(DEMO / "statuses"),
            "--out", str(tmp_path / "out"), "--metrics-file", str(prom)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    warning = result.stderr.splitlines()[-1]
    assert warning == f"convsum: warning: {prom}: metrics not written (No such file or directory)"


def test_the_config_file_names_the_metrics_file_beside_it(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(
        f'messages = "{DEMO / "messages"}"\nstatuses = "{DEMO / "statuses"}"\n'
        'out = "out"\nmetrics_file = "convsum.prom"\n'
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "job.toml")])
    assert result.exit_code == 0, result.stderr
    assert metrics(tmp_path / "convsum.prom")["convsum_run_exit_code"] == 0
