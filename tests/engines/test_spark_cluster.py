"""The Spark engine on a real standalone cluster: a master and a worker on 127.0.0.1, started
from the PySpark distribution's own launcher, and a job submitted to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyspark
import pytest

from tests.support.data import DEMO
from tests.support.ports import free_port
from tests.support.trees import comparable_tree

SPARK_HOME = Path(pyspark.__file__).parent


def _environment(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp / "logs"),
        "PYSPARK_PYTHON": sys.executable,
    }


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:
            return int(orjson.loads(answer.read())["aliveworkers"])
    except OSError:
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Start a master and a worker (two cores); yield the master's URL and the worker's
    directory, where each application's executors keep their logs."""
    tmp = tmp_path_factory.mktemp("cluster")
    env = _environment(tmp)
    port, ui_port = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    log = (tmp / "cluster.log").open("wb")
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(ui_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
         "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
         "--work-dir", str(tmp / "worker")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while _alive_workers(ui_port) < 1:
            assert time.monotonic() < deadline, (tmp / "cluster.log").read_text()
            assert master.poll() is None and worker.poll() is None
            time.sleep(0.5)
        yield url, tmp / "worker"
    finally:
        for process in (worker, master):
            process.terminate()
            process.wait(timeout=30)
        log.close()


ROOT = Path(__file__).resolve().parent.parent.parent
INPUTS = ["--messages", str(DEMO / "messages"), "--statuses", str(DEMO / "statuses")]


@pytest.fixture(scope="module")
def duckdb_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The DuckDB engine's tree of the demo data, with descending pages."""
    out = tmp_path_factory.mktemp("duckdb") / "out"
    convsum = str(Path(sys.executable).parent / "convsum")
    command = [convsum, "run", *INPUTS, "--desc-pages", "--out", str(out), "--engine", "duckdb"]
    subprocess.run(command, check=True, capture_output=True)
    tree = comparable_tree(out, ("config", "engine"))
    assert len(tree) > 1000
    return tree


def _submitted(worker: Path, command: list[str], env: dict[str, str]) -> None:
    """Run `command`; check that it succeeded as one new application of the cluster, whose
    executor logged in the worker's directory (the tasks ran there, not in the driver)."""
    before = set(worker.glob("app-*"))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    applications = set(worker.glob("app-*")) - before
    assert len(applications) == 1
    assert list(applications.pop().glob("*/stderr"))


def test_spark_cluster_run_writes_the_duckdb_engines_tree(
    cluster: tuple[str, Path], duckdb_tree: dict[str, bytes], tmp_path: Path
) -> None:
    url, worker = cluster
    convsum = str(Path(sys.executable).parent / "convsum")
    command = [convsum, "run", *INPUTS, "--desc-pages", "--out", str(tmp_path / "out")]
    command += ["--engine", "spark", "--spark-master", url]
    _submitted(worker, command, _environment(tmp_path))
    assert comparable_tree(tmp_path / "out", ("config", "engine")) == duckdb_tree


def test_spark_cluster_spark_submit_job_writes_the_duckdb_engines_tree(
    cluster: tuple[str, Path], duckdb_tree: dict[str, bytes], tmp_path: Path
) -> None:
    """jobs/spark_submit.py as its docstring runs it: the master is spark-submit's."""
    url, worker = cluster
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", url]
    job = [str(ROOT / "jobs" / "spark_submit.py"), *INPUTS, "--desc-pages"]
    job += ["--out", str(tmp_path / "out"), "--engine", "spark"]
    _submitted(worker, [*submit, *job], _environment(tmp_path))
    assert comparable_tree(tmp_path / "out", ("config", "engine")) == duckdb_tree
