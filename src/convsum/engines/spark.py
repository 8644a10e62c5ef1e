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
   conversations' rows, and feeds them to the publisher's sink, which writes their page files
   into the new tree (`fan_out`); then, from the tally file, their summaries. An incremental
   run's tasks write the rows to a Parquet file per bucket instead, which the driver streams to
   the update, and the driver reads the summaries: the update compares each changed file with
   the served one before it swaps it in.

The work directory and the output root must be one shared file system path for the driver and
every executor (whose Python must have convsum installed). The driver never collects a message
row: it receives counts and file counts. The conversation tallies and the queryable tables are
computed by DuckDB on the driver from the resolved files (`relations`), as for the other
engines.

Starting Spark, and turning its failures into one line, is engines/spark_session.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from convsum.engines.base import (
    CONVERSATION_SCHEMA,
    Derivation,
    EngineSettings,
    Part,
    ReadHere,
    Sink,
    Stream,
    Summaries,
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
from convsum.engines.spark_session import failures, session
from convsum.inputs import MESSAGES_SCHEMA, STATUSES_SCHEMA, StagedInputs
from convsum.results import Facts

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

T = TypeVar("T")

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
        with failures("Spark did not start"):
            spark = session(self.master, self.conf)
        with failures("the Spark job failed"), self._derive(spark, staged, settings) as derived:
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
        counts = Facts()
        for bucket_facts in facts:
            counts = counts.plus(bucket_facts)
        with closing(connect(settings)) as con:
            resolved(con, str(work / "resolved" / "*.parquet"))
            lists(con, None)
            driver = duckdb_derivation(con, staged, settings)
            yield _SparkDerivation(spark, driver, counts, work, task, buckets)


class _SparkDerivation(ReadHere):
    def __init__(
        self,
        spark: SparkSession,
        driver: Derivation,
        counts: Facts,
        work: Path,
        task: EngineSettings,
        buckets: int,
    ) -> None:
        self.spark, self.driver, self._counts = spark, driver, counts
        self.work, self.task, self.buckets = work, task, buckets

    def counts(self) -> Facts:
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

    def fan_out(self, stream: Stream, sink: Sink) -> list[Part]:
        """Have each bucket's task feed its conversations' part of the stream to `sink`."""
        if isinstance(stream, Summaries):  # executors run in directories of their own
            stream = Summaries(stream.tallies.resolve())
        task = (self.work, self.task, self.buckets, stream, sink)
        parts = _each_bucket(self.spark, self.buckets, partial(_fan_out_bucket, *task))
        return [part for part in parts if part is not None]


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


def _resolve_bucket(work: Path, task: EngineSettings, buckets: int, k: int) -> Facts:
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


def _fan_out_bucket(
    work: Path, task: EngineSettings, buckets: int, stream: Stream, sink: Sink, k: int
) -> Part | None:
    """Executor: feed `sink` the part of the stream of the conversations of bucket k; return
    what it wrote (None: nothing to feed)."""
    name = f"{stream.name}-{k:05d}"
    if isinstance(stream, Summaries):
        with closing(connect(_task_settings(task, work, f"summaries-{k}"))) as con:
            rows = summaries(con, stream.tallies, task.batch_rows, (k, buckets))
            files, size = sink(name, rows)
            return Part(name, files, size)
    with _conversations_of_bucket(work, task, buckets, f"pages-{stream.order}", k) as con:
        if con is None:
            return None
        files, size = sink(name, conversation_rows(con, task, stream.order == "desc"))
        return Part(name, files, size)
