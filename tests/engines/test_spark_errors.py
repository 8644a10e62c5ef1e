"""The Spark engine's errors: one `Error:` line naming the setting and the cause, the exit code
of docs/operations.md, and none of the JVM's own output on stderr.

What can be checked before a JVM starts is checked with the configuration (exit 2); what only
Spark can tell is read from its failure (exit 1). The tests that start a JVM run `convsum` in a
process of its own, whose stderr is the JVM's too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from convsum.cli import cli
from convsum.config import check_spark_master
from convsum.engines import spark_session
from convsum.errors import ConfigError, EngineError
from tests.support.data import DEMO

CONVSUM = str(Path(sys.executable).parent / "convsum")
INPUTS = ["--messages", str(DEMO / "messages"), "--statuses", str(DEMO / "statuses")]


def _run(tmp_path: Path, *args: str) -> Result:
    command = ["run", *INPUTS, "--out", str(tmp_path / "out"), "--engine", "spark", *args]
    return CliRunner().invoke(cli, command, catch_exceptions=False)


def _config(tmp_path: Path, spark_table: str) -> str:
    path = tmp_path / "job.toml"
    path.write_text(f"[spark]\n{spark_table}\n")
    return str(path)


def _error_line(stderr: str) -> str:
    """Return the one `Error:` line of stderr."""
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    "url",
    [
        "local",
        "local[*]",
        "local[4]",
        "local[2, 3]",
        "local-cluster[2, 1, 1024]",
        "spark://spark-master:7077",
        "spark://10.0.0.1:7077,10.0.0.2:7077",
        "spark://[::1]:7077",
        "yarn",
        "k8s://https://kubernetes.default:443",
    ],
)
def test_spark_master_check_accepts_what_spark_parses(url: str) -> None:
    assert check_spark_master(url) == url


@pytest.mark.parametrize(
    "url",
    ["nosuch://x", "sparky://x", "spark://h", "spark://h:7077/path", "local[0]", "yarn-client", ""],
)
def test_spark_master_check_refuses_what_spark_cannot_parse(url: str) -> None:
    with pytest.raises(ConfigError, match="Spark cannot parse this master URL"):
        check_spark_master(url)


def test_spark_bad_master_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "--spark-master", "nosuch://x")
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert "'--spark-master': 'nosuch://x': Spark cannot parse this master URL" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('"spark.executor.memory" = "lots"', "spark.executor.memory = 'lots': expected a whole"),
        ('"spark.executor.cores" = 0', "spark.executor.cores = '0': expected a whole number"),
        ('"spark.master" = "nosuch://x"', "spark.master = 'nosuch://x': Spark cannot parse"),
    ],
)
def test_spark_bad_setting_is_one_line_and_exit_2(tmp_path: Path, setting: str, words: str) -> None:
    result = _run(tmp_path, "--config", _config(tmp_path, setting))
    assert result.exit_code == 2, result.output
    assert words in _error_line(result.stderr)


def test_spark_unwritable_local_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A local directory under a file: what root, too, cannot create."""
    (tmp_path / "file").touch()
    local = tmp_path / "file" / "spark"
    result = _run(tmp_path, "--config", _config(tmp_path, f'"spark.local.dir" = "{local}"'))
    assert result.exit_code == 2, result.output
    line = _error_line(result.stderr)
    assert f"Spark cannot create its local directory {local}: {local.parent} is not a" in line


def test_spark_stale_java_home_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    result = _run(tmp_path)
    assert result.exit_code == 2, result.output
    assert f"JAVA_HOME={tmp_path} has no bin/java" in _error_line(result.stderr)


def test_spark_master_nothing_listens_at_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Refused at once, without a JVM: Spark itself would retry for a minute."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"spark://127.0.0.1:{port}"
    result = _run(tmp_path, "--spark-master", url)
    assert result.exit_code == 1, result.output
    line = _error_line(result.stderr)
    assert f"cannot reach the Spark master {url} (127.0.0.1:{port}: Connection refused)" in line
    assert not (tmp_path / "out" / "current").exists()


@pytest.mark.parametrize(
    ("spark_table", "environment", "words"),
    [
        (
            '"spark.submit.deployMode" = "cluster"',
            {},
            'Spark did not start: Cluster deploy mode is not compatible with master "local"',
        ),
        (
            "",
            {"SPARK_LOCAL_DIRS": "{tmp}/file/spark"},
            "Spark did not start: cannot create a local directory in {tmp}/file/spark "
            "({tmp}/file/spark: Not a directory): set spark.local.dir (or SPARK_LOCAL_DIRS)",
        ),
    ],
    ids=["refused-by-spark-submit", "local-dir-from-the-environment"],
)
def test_spark_failing_jvm_is_one_line_and_exit_1(
    tmp_path: Path, spark_table: str, environment: dict[str, str], words: str
) -> None:
    """What only Spark can tell: its JVM exits before its gateway answers (spark-submit
    refuses the settings), or after (no local directory): its cause in one line, and none of
    its log lines or stack traces."""
    (tmp_path / "file").touch()
    command = [CONVSUM, "run", *INPUTS, "--out", str(tmp_path / "out"), "--engine", "spark"]
    command += ["--config", _config(tmp_path, spark_table)]
    env = {**os.environ, **{k: v.format(tmp=tmp_path) for k, v in environment.items()}}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert words.format(tmp=tmp_path) in _error_line(result.stderr)
    lines = result.stderr.splitlines()
    assert all(line.startswith(("convsum: ", "Error: ")) for line in lines), result.stderr
    assert not (tmp_path / "out" / "current").exists()


def test_spark_lost_connection_to_its_jvm_is_sparks_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Py4J's refused connection to a JVM that exited is an OSError: not one of the output."""
    monkeypatch.setattr(spark_session, "_jvm", None)
    with (
        pytest.raises(
            EngineError, match=r"^the Spark job failed: \[Errno 111\] Connection refused"
        ),
        spark_session.failures("the Spark job failed"),
    ):
        raise ConnectionRefusedError(111, "Connection refused")
