"""Spark's session for the Spark engine: starting its JVM, and each failure as one line.

A failure is one line with its cause (`failures`). The JVM that this process starts writes its
output to a file without a name instead of the terminal, and the cause is read from there when
Spark's exception does not carry it (a JVM that exited, a cluster that ended the application).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen, TimeoutExpired
from typing import TYPE_CHECKING, Any

from convsum.errors import EngineError, first_line

if TYPE_CHECKING:
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

# The session's settings unless the [spark] table sets them: the staged times are UTC, and
# Spark's progress bar would interleave with convsum's own progress on the terminal.
SESSION_DEFAULTS = {
    "spark.app.name": "convsum",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "ERROR",
}


def java_problem() -> str | None:
    """Return why Spark cannot start a JVM here (no java, or a JAVA_HOME without one), or None.

    Spark's launcher runs JAVA_HOME/bin/java when JAVA_HOME is set, else the java on PATH.
    """
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # under spark-submit: its JVM is running
        return None
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not (java.is_file() and os.access(java, os.X_OK)):
            return f"JAVA_HOME={home} has no bin/java: set it to a Java 17+ runtime, or unset it"
        return None
    if shutil.which("java"):
        return None
    return "the spark engine needs a Java 17+ runtime: none on PATH (install one, or set JAVA_HOME)"


def session(master: str | None, conf: Mapping[str, str]) -> SparkSession:
    """Return the Spark session for `master`: the one running, or a new one.

    Without a master, the one `spark-submit` was given, else local mode on every core. The
    Python workers run this interpreter unless PYSPARK_PYTHON says otherwise. Raises EngineError
    when no JVM can start, or when no master of a standalone cluster accepts a connection.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    problem = java_problem()
    if problem is not None:
        raise EngineError(problem)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        master = "local[*]"
    settings = {**SESSION_DEFAULTS, **({} if master is None else {"spark.master": master}), **conf}
    master = settings.get("spark.master")
    if master is not None:
        _check_master_answers(master)
    active = SparkSession.getActiveSession()
    if active is not None and master is not None and active.sparkContext.master != master:
        active.stop()
    # The first session of a process starts the JVM (under spark-submit, it runs already).
    if SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        initial = SparkConf().setAll(list(settings.items()))
        SparkContext(conf=initial, gateway=_start_jvm(initial))
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _check_master_answers(master: str) -> None:
    """Raise EngineError when no master of a standalone cluster's URL accepts a connection.

    Spark itself would retry for a minute and then say only that no master answered.
    """
    if not master.startswith("spark://"):
        return
    refused = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
                return
        except (OSError, ValueError) as exc:
            refused.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
    msg = f"cannot reach the Spark master {master} ({'; '.join(refused)}); nothing published"
    raise EngineError(msg)


@dataclass
class _Jvm:
    """The JVM this process started for Spark, and the file that holds its output."""

    output: int  # the descriptor of its standard output and error: a file without a name
    process: Popen[bytes] | None = None  # None until its gateway answers

    def exited(self, wait: float = 0) -> bool:
        """Return whether the JVM has exited, waiting up to `wait` seconds for it to."""
        try:
            return self.process is None or self.process.wait(wait) is not None
        except TimeoutExpired:
            return False

    def size(self) -> int:
        return os.fstat(self.output).st_size

    def lines(self, since: int) -> list[str]:
        """Return the lines the JVM wrote after byte `since` (the last MiB of them at most)."""
        end = self.size()
        start = max(since, end - 2**20)
        # pread leaves the file's offset, which the JVM's writes share, where it is.
        text = os.pread(self.output, end - start, start)
        return text.decode(errors="replace").splitlines()


_jvm: _Jvm | None = None


def _start_jvm(conf: SparkConf) -> Any:
    """Start Spark's JVM with `conf` and return its Py4J gateway.

    The JVM's output (its log lines, and the stack traces of its failures) goes to a file
    instead of the terminal: `_failures` reports the cause it names in one line.
    """
    from pyspark.java_gateway import launch_gateway

    global _jvm  # one JVM per process, as PySpark's own SparkContext._gateway
    if _jvm is not None:  # one that did not start
        os.close(_jvm.output)
    output, name = tempfile.mkstemp(prefix="convsum-spark-", suffix=".log")
    Path(name).unlink()
    _jvm = _Jvm(output)
    into = {"stdout": output, "stderr": output}
    gateway = launch_gateway(conf, popen_kwargs=into)  # type: ignore[no-untyped-call]
    _jvm.process = gateway.proc
    return gateway


# The last line of a Python exception in the text of a failed Spark job (a Java exception's name
# is qualified: org.apache.spark.SparkException).
_PYTHON_ERROR = re.compile(r"^([A-Z]\w*(?:Error|Exception): .+)$", re.MULTILINE)
# A Java exception's line (its causes come after it), and the parts of Spark's messages that
# tell the user nothing: the error class and the SQL state.
_JAVA_ERROR = re.compile(r"^(?:Caused by: |: )?(?:[a-z_]\w*\.)+[A-Z][\w$]*: (.+)$", re.MULTILINE)
_SPARK_NOISE = re.compile(r"^\[[A-Z_.]+\] | SQLSTATE: \w+$")
# Lines of the JVM's output that name a failure's cause (see `_jvm_cause`).
_KILLED = re.compile(r"Application has been killed\. Reason: (.+)")
_LOCAL_DIR = re.compile(r"Failed to create local dir in (.+?)\. Ignoring")
_FILE_ERROR = re.compile(r"^java\.nio\.file\.(\w+): (.+)$")
_MAIN_ERROR = re.compile(r'^Exception in thread "main" [\w.$]+: (.+)$')
_ERROR_LINE = re.compile(r" ERROR [\w.$]+: (.+)$")


@contextmanager
def failures(what: str) -> Iterator[None]:
    """Turn a failed Spark session or job into one line: `what`, and the cause.

    The cause is the task's own error when there is one, else Spark's own words, in its
    exception or in its JVM's output. A JVM that exits makes Py4J's calls fail with a refused
    connection: that is Spark's failure, not one of the output.
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    before, since = _jvm, _jvm.size() if _jvm else 0
    try:
        yield
    except (Py4JError, PySparkException, ConnectionError) as exc:
        # The JVM's output since the start of `what` (all of it, for a JVM that it started).
        msg = f"{what}: {_cause(exc, since if _jvm is before else 0)}; nothing published"
        raise EngineError(msg) from exc


def _cause(exc: BaseException, since: int) -> str:
    """Return the cause of a Spark failure in one line (see `_failures`)."""
    from py4j.protocol import Py4JNetworkError

    text = str(exc)
    tasks = _PYTHON_ERROR.findall(text)
    if tasks:
        if tasks[-1].startswith("ModuleNotFoundError"):
            return f"{tasks[-1]} (an executor's Python needs convsum installed: see PYSPARK_PYTHON)"
        return str(tasks[-1])
    if _jvm is not None:
        # A connection that failed: the JVM is on its way out, give it time to get there.
        exited = _jvm.exited(wait=10 if isinstance(exc, ConnectionError | Py4JNetworkError) else 0)
        reason = _jvm_cause(_jvm.lines(since), exited)
        if reason is not None:
            return reason
    java = _JAVA_ERROR.findall(text)
    return _SPARK_NOISE.sub("", java[-1]).strip() if java else first_line(exc)


def _jvm_cause(lines: list[str], exited: bool) -> str | None:
    """Return the cause of a failure that the JVM's output names, or None.

    A cluster that ended the application; once the JVM exited: a local directory it could not
    create, spark-submit's refusal of its settings, or its last error.
    """

    def last(pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for line in reversed(lines) if (m := pattern.search(line))), None)

    if killed := last(_KILLED):
        return f"the cluster ended the application: {killed[1]}"
    if not exited:
        return None
    if directory := last(_LOCAL_DIR):
        reason = f"cannot create a local directory in {directory[1]}"
        if why := last(_FILE_ERROR):  # AccessDeniedException's message is only the path
            denied = why[1] == "AccessDeniedException"
            reason += f" ({why[2]}{': permission denied' if denied else ''})"
        return f"{reason}: set spark.local.dir (or SPARK_LOCAL_DIRS) to a writable directory"
    found = last(_MAIN_ERROR) or last(_ERROR_LINE)
    return found[1] if found else None
