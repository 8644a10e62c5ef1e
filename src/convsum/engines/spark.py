"""The Spark engine: the DuckDB engine's two steps, each run by the cluster's executors on one
part of the data at a time, with Spark's shuffles between them.

SPEC section 3 is written once, as the DuckDB engine's SQL, in two steps that are each local to
a key (engines/duckdb.py): `resolve` to a message id (deduplication, latest status), `lists` to
a conversation (its rows, positions and JSON text). A run here is:

1. a shuffle: Spark writes the staged messages and statuses in buckets of message id;
2. each executor task runs `resolve` on one bucket, writes one row per message with its latest
   status (`write_resolved`) and returns the bucket's counts, which the driver adds up;
3. a shuffle: Spark writes each of those rows to the bucket of each of its two conversations;
4. each executor task runs `lists` on one conversation bucket, positions and renders its
   conversations' rows, and writes their page files into the new tree (with its own list of
   the paths, which the driver's writer adopts); then, from the tally file, their summaries. An
   incremental run's tasks write the rows to a Parquet file per bucket instead, which the
   driver streams to the update, and the driver writes the summaries: the update compares each
   changed file with the served one before it swaps it in.

The work directory and the output root must be one shared file system path for the driver and
every executor (whose Python must have convsum installed). The driver never collects a message
row: it receives counts and file counts. The conversation tallies and the queryable tables are
computed by DuckDB on the driver from the resolved files (`relations`), as for the other
engines.

A failure is one line with its cause (`_failures`). The JVM that this process starts writes its
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from subprocess import Popen, TimeoutExpired
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.engines.base import (
    CONVERSATION_SCHEMA,
    Derivation,
    EngineSettings,
    WrittenHere,
    add_facts,
    summaries,
)
from convsum.engines.duckdb import (
    connect,
    conversation_rows,
    lists,
    resolve,
    resolved,
    write_resolved,
)
from convsum.engines.duckdb import (
    derivation as duckdb_derivation,
)
from convsum.errors import EngineError, first_line
from convsum.inputs import MESSAGES_SCHEMA, STATUSES_SCHEMA, StagedInputs
from convsum.log import Stage
from convsum.publish.pages import Writer, write_pages, write_summaries
from convsum.publish.tree import TreeWriter

if TYPE_CHECKING:
    from pyspark import SparkConf
    from pyspark.sql import DataFrame, SparkSession

T = TypeVar("T")

INSTALL_HINT = "the spark engine needs PySpark and a Java 17+ runtime: pip install 'convsum[spark]'"

# The session's settings unless the [spark] table sets them: the staged times are UTC, and
# Spark's progress bar would interleave with convsum's own progress on the terminal.
SESSION_DEFAULTS = {
    "spark.app.name": "convsum",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "ERROR",
}

# A bucket holds about this many staged rows (messages and statuses), at least one bucket per
# core of the cluster (Spark's default parallelism): each task's DuckDB works on one bucket.
_ROWS_PER_BUCKET = 4_000_000

_SPARK_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.timestamp("us"): "TIMESTAMP_NTZ",
}


class SparkEngine:
    """Compute the derived tables on a Spark cluster (or in local mode)."""

    name = "spark"

    def __init__(self, master: str | None, conf: Mapping[str, str]) -> None:
        self.master, self.conf = master, conf

    @contextmanager
    def derive(self, staged: StagedInputs, settings: EngineSettings) -> Iterator[_SparkDerivation]:
        with _failures("Spark did not start"):
            spark = session(self.master, self.conf)
        with _failures("the Spark job failed"), self._derive(spark, staged, settings) as derived:
            yield derived

    @contextmanager
    def _derive(
        self, spark: SparkSession, staged: StagedInputs, settings: EngineSettings
    ) -> Iterator[_SparkDerivation]:
        # Executors run in directories of their own: every path they are given is absolute.
        staged = replace(
            staged, messages=staged.messages.resolve(), statuses=staged.statuses.resolve()
        )
        work = settings.work_dir.resolve() / "spark"
        work.mkdir()
        only = settings.conversations
        # Each task's DuckDB uses the cores Spark gives a task, unless --threads says otherwise.
        cores = int(spark.sparkContext.getConf().get("spark.task.cpus", "1") or 1)
        task = replace(
            settings,
            threads=settings.threads or cores,
            conversations=only.resolve() if only else None,
        )
        buckets = _bucket_count(spark, staged)
        by_id = work / "by_id"
        _shuffle(_read(spark, staged.messages, MESSAGES_SCHEMA), "id", by_id / "messages", buckets)
        _shuffle(
            _read(spark, staged.statuses, STATUSES_SCHEMA),
            "message_id",
            by_id / "statuses",
            buckets,
        )
        (work / "resolved").mkdir()
        facts = _each_bucket(spark, buckets, partial(_resolve_bucket, work, task, buckets))
        rows = spark.read.parquet((work / "resolved").as_uri())
        conversation = rows.selectExpr(
            "*", "explode(array_distinct(array(bucket_sender, bucket_recipient))) AS bucket"
        ).drop("bucket_sender", "bucket_recipient")
        _shuffle(conversation, None, work / "by_conversation", buckets)
        counts: dict[str, Any] = {}
        for bucket_facts in facts:
            counts = add_facts(counts, bucket_facts, None)
        with closing(connect(settings)) as con:
            resolved(con, str(work / "resolved" / "*.parquet"))
            lists(con, None)
            driver = duckdb_derivation(con, staged, settings)
            yield _SparkDerivation(spark, driver, counts, work, task, buckets)


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
    return None if shutil.which("java") else INSTALL_HINT


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
def _failures(what: str) -> Iterator[None]:
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


class _SparkDerivation(WrittenHere):
    def __init__(
        self,
        spark: SparkSession,
        driver: Derivation,
        counts: dict[str, Any],
        work: Path,
        task: EngineSettings,
        buckets: int,
    ) -> None:
        self.spark, self.driver, self._counts = spark, driver, counts
        self.work, self.task, self.buckets = work, task, buckets

    def counts(self) -> dict[str, Any]:
        return self._counts

    def relations(self) -> duckdb.DuckDBPyConnection:
        return self.driver.relations()

    def conversation_rows(self, descending: bool) -> Iterator[pa.RecordBatch]:
        """Have the executors write each bucket's rows; stream them one bucket after another.

        Each conversation lies whole in one bucket, in list order there.
        """
        target = self.work / ("rows_desc" if descending else "rows_asc")
        target.mkdir()
        step = partial(_rows_bucket, self.work, target, self.task, self.buckets, descending)
        _each_bucket(self.spark, self.buckets, step)
        for k in range(self.buckets):
            path = target / f"{k:05d}.parquet"
            if path.exists():
                yield from pq.ParquetFile(path).iter_batches(batch_size=self.task.batch_rows)

    def write_pages(self, writer: Writer, page_size: int, order: str, stage: Stage) -> None:
        """A new tree's pages are written by the executors, each bucket's by its task. An
        update's go through the driver, which compares each with the served file."""
        if not isinstance(writer, TreeWriter):
            super().write_pages(writer, page_size, order, stage)
            return
        tree = writer.root.resolve()
        step = partial(_pages_bucket, self.work, tree, self.task, self.buckets, page_size, order)
        self._adopt(writer, order, _each_bucket(self.spark, self.buckets, step), stage)

    def write_summaries(self, writer: Writer, tallies: Path, stage: Stage) -> None:
        """A new tree's summaries are written by the executors, each bucket's by its task."""
        if not isinstance(writer, TreeWriter):
            super().write_summaries(writer, tallies, stage)
            return
        tree, tallies = writer.root.resolve(), tallies.resolve()
        step = partial(_summaries_bucket, self.work, tree, self.task, self.buckets, tallies)
        self._adopt(writer, "summaries", _each_bucket(self.spark, self.buckets, step), stage)

    @staticmethod
    def _adopt(writer: TreeWriter, name: str, written: list[tuple[int, int]], stage: Stage) -> None:
        """Count as the driver's the files that each bucket's task wrote as `name`."""
        for k, (files, size) in enumerate(written):
            if files:
                writer.adopt(_writer_part(name, k), files, size)
                stage.add(files=files)


def _bucket_count(spark: SparkSession, staged: StagedInputs) -> int:
    """Return into how many buckets each shuffle splits the rows."""
    rows = sum(staged.rows_read.values())
    return max(spark.sparkContext.defaultParallelism, -(-rows // _ROWS_PER_BUCKET))


def _read(spark: SparkSession, directory: Path, schema: pa.Schema) -> DataFrame:
    ddl = ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in schema)
    return spark.read.schema(ddl).parquet(directory.as_uri())


def _shuffle(frame: DataFrame, key: str | None, target: Path, buckets: int) -> None:
    """Write `frame` in `buckets` buckets of `key` (None: of its `bucket` column) under
    `target`, one directory per bucket (`target/k`; none for an empty bucket)."""
    if key is not None:
        frame = frame.selectExpr("*", f"pmod(xxhash64(`{key}`), {buckets:d}) AS bucket")
    frame.repartition(buckets, "bucket").write.partitionBy("bucket").parquet(target.as_uri())
    # DuckDB would read `bucket=k` as a column of the files (hive partitioning).
    for directory in target.glob("bucket=*"):
        directory.rename(target / directory.name.removeprefix("bucket="))


def _each_bucket(spark: SparkSession, buckets: int, step: Callable[[int], T]) -> list[T]:
    """Run `step(k)` for each bucket k, one executor task each; return the results in order."""
    return spark.sparkContext.parallelize(range(buckets), buckets).map(step).collect()


def _bucket(directory: Path, k: int, schema: pa.Schema) -> Path:
    """Return the directory of bucket k's files; an empty one when Spark wrote none."""
    path = directory / str(k)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), path / "empty.parquet")
    return path


def _task_settings(task: EngineSettings, work: Path, name: str) -> EngineSettings:
    directory = work / "tasks" / name
    directory.mkdir(parents=True, exist_ok=True)
    return replace(task, work_dir=directory)


def _resolve_bucket(work: Path, task: EngineSettings, buckets: int, k: int) -> dict[str, Any]:
    """Executor: resolve the messages of id bucket k; write them; return the bucket's counts."""
    by_id = work / "by_id"
    staged = StagedInputs(
        _bucket(by_id / "messages", k, MESSAGES_SCHEMA),
        _bucket(by_id / "statuses", k, STATUSES_SCHEMA),
        {},
        {},
    )
    settings = _task_settings(task, work, f"resolve-{k}")
    with closing(connect(settings)) as con:
        params = resolve(con, staged, settings.work_dir)
        write_resolved(con, work / "resolved" / f"{k:05d}.parquet", buckets)
        return duckdb_derivation(con, staged, settings, params).counts()


@contextmanager
def _conversations_of_bucket(
    work: Path, task: EngineSettings, buckets: int, name: str, k: int
) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """Executor: yield a connection holding `conv_out` for the conversations of bucket k (see
    engines/duckdb.py: `lists`); None when the bucket has none."""
    directory = work / "by_conversation" / str(k)
    if not directory.is_dir():
        yield None
        return
    settings = _task_settings(task, work, f"{name}-{k}")
    with closing(connect(settings)) as con:
        resolved(con, str(directory / "*.parquet"))
        lists(con, settings.conversations, (k, buckets))
        yield con


def _rows_bucket(
    work: Path, target: Path, task: EngineSettings, buckets: int, descending: bool, k: int
) -> None:
    """Executor: write the rows of the conversations of bucket k to a Parquet file, in list
    order."""
    name = "rows-desc" if descending else "rows-asc"
    with _conversations_of_bucket(work, task, buckets, name, k) as con:
        if con is not None:
            with pq.ParquetWriter(target / f"{k:05d}.parquet", CONVERSATION_SCHEMA) as out:
                for batch in conversation_rows(con, task, descending):
                    out.write_batch(batch)


def _writer_part(name: str, k: int) -> str:
    """The name of the list of the files that bucket k's task wrote as `name` (an order of pages,
    or the summaries)."""
    return f"-{name}-{k:05d}"


def _pages_bucket(
    work: Path, tree: Path, task: EngineSettings, buckets: int, page_size: int, order: str, k: int
) -> tuple[int, int]:
    """Executor: write the pages of one order of the conversations of bucket k into the new
    tree; return how many files and bytes."""
    with _conversations_of_bucket(work, task, buckets, f"pages-{order}", k) as con:
        if con is None:
            return 0, 0
        with TreeWriter(tree, _writer_part(order, k)) as writer:
            rows = conversation_rows(con, task, order == "desc")
            write_pages(writer, rows, page_size, order, Stage("pages"))
            return writer.files, writer.bytes


def _summaries_bucket(
    work: Path, tree: Path, task: EngineSettings, buckets: int, tallies: Path, k: int
) -> tuple[int, int]:
    """Executor: write the summaries of the conversations of bucket k into the new tree; return
    how many files and bytes."""
    with (
        closing(connect(_task_settings(task, work, f"summaries-{k}"))) as con,
        TreeWriter(tree, _writer_part("summaries", k)) as writer,
    ):
        batches = summaries(con, tallies, task.batch_rows, (k, buckets))
        write_summaries(writer, batches, Stage("summaries"))
        return writer.files, writer.bytes
