"""Find, read and normalise the Parquet inputs (SPEC section 2) into canonical staging files.

Every input file is read batch by batch, checked and normalised on its own, so an error names the
exact file, column and row, and memory holds one batch at a time. The result is two Parquet files
with one fixed schema (`MESSAGES_SCHEMA`, `STATUSES_SCHEMA`) that every engine reads.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convsum.config import RunConfig, pattern_base
from convsum.errors import InputError, InputSchemaError, first_line
from convsum.normalise import (
    MESSAGE_COLUMNS,
    STATUS_COLUMNS,
    TIME,
    Column,
    Normaliser,
    plain,
)

MESSAGES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string()),
        pa.field("owner", pa.string(), nullable=False),
        pa.field("sender", pa.string(), nullable=False),
        pa.field("recipient", pa.string(), nullable=False),
        pa.field("body", pa.string()),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("segments", pa.int64(), nullable=False),
        pa.field("type", pa.string()),
        pa.field("datacoding", pa.string()),
        pa.field("priority", pa.int64()),
        pa.field("price", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("created", TIME, nullable=False),
        pa.field("modified", TIME),
        pa.field("reference", pa.string()),
        pa.field("mcc", pa.string()),
        pa.field("mnc", pa.string()),
    ]
)
# `owner` is set only for statuses taken from a message's nested list: such a status belongs to
# that owner's message alone. Rows of a separate status log leave it null.
STATUSES_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("owner", pa.string()),
        pa.field("code", pa.int64(), nullable=False),
        pa.field("created", TIME, nullable=False),
        pa.field("duration", pa.int64()),
    ]
)
MESSAGE_REQUIRED = ("id", "owner", "sender", "recipient", "direction", "segments", "created")
STATUS_REQUIRED = ("message_id", "code", "created")
NESTED_STATUSES = "statuses"
BATCH_ROWS = 131_072


@dataclass(frozen=True)
class StagedInputs:
    """Directories of the normalised staging files and what reading them counted."""

    messages: Path
    statuses: Path
    rows_read: Mapping[str, int]
    files_read: Mapping[str, list[Path]]
    files: tuple[StagedFile, ...] = ()

    @property
    def newest(self) -> datetime | None:
        """The latest `created` of every row staged: the newest event the logs hold."""
        found = [f.newest for f in self.files if f.newest is not None]
        return max(found).replace(tzinfo=UTC) if found else None


@dataclass(frozen=True)
class Source:
    """One input file: where it is, what it looked like when listed, its hive partition values."""

    role: str
    path: Path
    bytes: int
    mtime_ns: int
    partitions: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The file's identity across runs: its absolute path."""
        return str(self.path.absolute())


@dataclass(frozen=True)
class StagedFile:
    """The staging files (names in the role's staging directory) of one input file."""

    source: Source
    staged: str
    rows: int
    nested: str | None = None
    nested_rows: int = 0
    newest: datetime | None = None  # the latest `created` of its rows (nested statuses too), UTC


def column_key(name: str) -> str:
    """Return the spelling-free key of a column name: `batch_id`, `batchId` -> `batchid`."""
    return name.replace("_", "").lower()


def find_sources(pattern: str, role: str) -> list[Source]:
    """List the Parquet files behind a file, directory or glob, in a stable order."""
    if glob.has_magic(pattern):
        base = pattern_base(pattern)
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    elif Path(pattern).is_dir():
        base = Path(pattern)
        paths = sorted(
            p
            for p in base.rglob("*.parquet")
            if p.is_file() and not any(part[0] in "._" for part in p.relative_to(base).parts)
        )
    elif Path(pattern).is_file():
        return [_source(role, Path(pattern), {})]
    elif Path(pattern).exists():  # a FIFO, a socket, a device
        msg = f"{role} {pattern}: not a regular file or a directory (expected a Parquet file)"
        raise InputError(msg)
    else:
        msg = f"{role} {pattern}: no such file or directory"
        raise InputError(msg)
    if not paths:
        msg = f"{role} {pattern}: no Parquet files found there (expected *.parquet)"
        raise InputError(msg)
    return [_source(role, p, _hive_values(p, base)) for p in paths]


def _source(role: str, path: Path, partitions: dict[str, str]) -> Source:
    name = os.fsencode(path)
    try:
        name.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The manifest and the state store record every input path as text.
        shown = name.decode("utf-8", "backslashreplace")
        msg = f"{role} {shown}: file name is not valid UTF-8; expected a UTF-8 path"
        raise InputError(msg) from exc
    try:
        stat = path.stat()
    except OSError as exc:
        msg = f"{role} {path}: cannot read ({exc.strerror})"
        raise InputError(msg) from exc
    return Source(role, path, stat.st_size, stat.st_mtime_ns, partitions)


def list_inputs(config: RunConfig) -> list[Source]:
    """Return every input file the configuration names, messages first, each role in order."""
    sources = find_sources(config.messages, "messages")
    if config.statuses:
        sources += find_sources(config.statuses, "statuses")
    return sources


def _hive_values(path: Path, base: Path) -> dict[str, str]:
    try:
        parts = path.relative_to(base).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    # Bytes that are not UTF-8 (raw in the name, or percent-encoded) stay as surrogates, so the
    # value check reports them like any other column's.
    return {
        k: unquote(v, errors="surrogateescape")
        for k, _, v in (p.partition("=") for p in parts if "=" in p)
        if k
    }


def stage_inputs(
    config: RunConfig,
    work: Path,
    sources: list[Source] | None = None,
    prefix: str = "",
    nested_known: bool = False,
) -> StagedInputs:
    """Normalise the input files into `work`; raise InputError on the first bad file or value.

    `sources` defaults to every input file of the configuration; staging files are named
    `<prefix><role>-<n>.parquet`. Files are normalised in parallel (Arrow releases the GIL), one
    staging file per input file; results and errors are taken in file order, so the same bad
    input always gives the same error. `nested_known` says that files read earlier carried
    nested statuses (which makes a separate status log optional).
    """
    if sources is None:
        sources = list_inputs(config)
    staged = StagedInputs(work / "messages", work / "statuses", {}, {})
    staged.messages.mkdir()
    staged.statuses.mkdir()
    pq.write_table(STATUSES_SCHEMA.empty_table(), staged.statuses / "empty.parquet")
    jobs = [(prefix, i, s) for i, s in enumerate(sources)]
    with ThreadPoolExecutor(max_workers=config.threads or os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda job: _stage_file(config, staged, *job), jobs))
    message_files = [r for r in results if r.source.role == "messages"]
    nested_seen = nested_known or any(r.nested for r in message_files)
    if config.statuses is None and message_files and not nested_seen:
        msg = (
            f"messages {config.messages}: no column {NESTED_STATUSES!r} and no --statuses "
            "given; expected a status log or a nested statuses list"
        )
        raise InputSchemaError(msg)
    rows = {"messages": 0, "statuses": 0, "nested_statuses": 0}
    files: dict[str, list[Path]] = {"messages": [], "statuses": []}
    for result in results:
        rows[result.source.role] += result.rows
        rows["nested_statuses"] += result.nested_rows
        files[result.source.role].append(result.source.path)
    return StagedInputs(staged.messages, staged.statuses, rows, files, tuple(results))


def _stage_file(
    config: RunConfig, staged: StagedInputs, prefix: str, n: int, source: Source
) -> StagedFile:
    """Normalise one input file into its own staging file (and its nested statuses, if any)."""
    role = source.role
    explicit = config.message_columns if role == "messages" else config.status_columns
    reader = _FileReader(source, role, config, explicit)
    schema, columns = (
        (MESSAGES_SCHEMA, MESSAGE_COLUMNS)
        if role == "messages"
        else (STATUSES_SCHEMA, STATUS_COLUMNS)
    )
    target = (staged.messages if role == "messages" else staged.statuses) / (
        f"{prefix}{role}-{n:05d}.parquet"
    )
    nested_name = f"{prefix}nested-{n:05d}.parquet"
    nested = role == "messages" and reader.has(NESTED_STATUSES)
    rows = nested_rows = 0
    newest: list[datetime] = []
    with ExitStack() as files:
        out = files.enter_context(_writer(target, schema))
        nested_out = (
            files.enter_context(_writer(staged.statuses / nested_name, STATUSES_SCHEMA))
            if nested
            else None
        )
        for batch in reader.batches():
            normalised = reader.normalise(batch, columns, schema)
            out.write_batch(normalised)
            rows += normalised.num_rows
            newest.append(pc.max(normalised["created"]).as_py())
            if nested_out is not None:
                statuses = _nested_statuses(reader, batch, normalised)
                nested_out.write_batch(statuses)
                nested_rows += statuses.num_rows
                newest.append(pc.max(statuses["created"]).as_py())
    latest = max((t for t in newest if t is not None), default=None)  # naive, UTC (TIME)
    nested_file = nested_name if nested else None
    return StagedFile(source, target.name, rows, nested_file, nested_rows, latest)


# Columns of few distinct values, which dictionary encoding shrinks. Building a dictionary for the
# others (ids, bodies, times) costs a third of the staging time and saves little space.
_DICTIONARY_COLUMNS = frozenset(
    {"owner", "direction", "type", "datacoding", "currency", "mcc", "mnc", "code", "duration"}
)


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Open a staging file: Snappy-compressed, dictionaries only where values repeat."""
    dictionary = [name for name in schema.names if name in _DICTIONARY_COLUMNS]
    return pq.ParquetWriter(path, schema, use_dictionary=dictionary)


class _FileReader:
    """Open one Parquet file, resolve its column names and yield normalised batches."""

    def __init__(
        self, source: Source, role: str, config: RunConfig, explicit: Mapping[str, str]
    ) -> None:
        self.source, self.role, self.config = source, role, config
        try:
            self.file = pq.ParquetFile(source.path)
        except (pa.ArrowException, OSError) as exc:
            msg = f"{source.path}: not a readable Parquet file ({first_line(exc)})"
            raise InputError(msg) from exc
        names = list(self.file.schema_arrow.names)
        self.by_key: dict[str, str] = {}
        for name in [*names, *(k for k in source.partitions if k not in names)]:
            key = column_key(name)
            if key in self.by_key:
                msg = f"{source.path}: columns {self.by_key[key]!r} and {name!r} both mean {key!r}"
                raise InputSchemaError(msg)
            self.by_key[key] = name
        for target, name in explicit.items():
            if name not in names and name not in source.partitions:
                msg = f"{source.path}: column {name!r} (mapped to {target!r}) not found"
                raise InputSchemaError(msg)
            self.by_key[column_key(target)] = name
        self.rows_done = 0

    def has(self, target: str) -> bool:
        return column_key(target) in self.by_key

    def batches(self) -> Iterator[pa.RecordBatch]:
        wanted = [n for n in self.by_key.values() if n in self.file.schema_arrow.names]
        try:
            for batch in self.file.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
                yield batch
                self.rows_done += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            msg = f"{self.source.path}: not a readable Parquet file ({first_line(exc)})"
            raise InputError(msg) from exc

    def source_array(self, batch: pa.RecordBatch, target: str) -> pa.Array | None:
        name = self.by_key.get(column_key(target))
        if name is None:
            return None
        if name in batch.schema.names:
            return batch.column(name)
        value = self.source.partitions[name].encode("utf-8", "surrogateescape")
        return pa.repeat(pa.scalar(value, pa.binary()), batch.num_rows).view(pa.string())

    def normalise(
        self, batch: pa.RecordBatch, columns: Mapping[str, Normaliser], schema: pa.Schema
    ) -> pa.RecordBatch:
        arrays = []
        for target in schema.names:
            array = self.source_array(batch, target) if target in columns else None
            arrays.append(self._normalise_one(batch.num_rows, target, array, columns, schema))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _normalise_one(
        self,
        num_rows: int,
        target: str,
        array: pa.Array | None,
        columns: Mapping[str, Normaliser],
        schema: pa.Schema,
    ) -> pa.Array:
        required = not schema.field(target).nullable
        if array is None:
            if required:
                msg = f"{self.source.path}: missing required column {target!r} ({self.role})"
                raise InputSchemaError(msg)
            return pa.nulls(num_rows, schema.field(target).type)
        name = self.by_key[column_key(target)]
        column = Column(plain(array), self.source.path, name, self.rows_done, self.config)
        if pa.types.is_null(column.array.type):  # an all-null column, as pandas writes one
            result = pa.nulls(num_rows, schema.field(target).type)
        else:
            result = columns[target](column)
        if required:
            column.fail_where(
                result.is_null(), lambda _: "null value; expected a value in every row"
            )
        return result


def _nested_statuses(
    reader: _FileReader, batch: pa.RecordBatch, messages: pa.RecordBatch
) -> pa.RecordBatch:
    """Turn a message batch's nested `statuses` lists into status-log rows."""
    lists = plain(reader.source_array(batch, NESTED_STATUSES))
    name = reader.by_key[column_key(NESTED_STATUSES)]
    t = lists.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(
        t.value_type
    ):
        msg = f"{reader.source.path}: column {name!r}: type {t}; expected a list of structs"
        raise InputSchemaError(msg)
    parents = pc.list_parent_indices(lists)
    items = pc.list_flatten(lists)
    fields = {
        column_key(items.type.field(i).name): items.field(i) for i in range(items.type.num_fields)
    }
    arrays = []
    for target in STATUSES_SCHEMA.names:
        if target in ("message_id", "owner"):
            arrays.append(
                pc.take(messages.column("id" if target == "message_id" else "owner"), parents)
            )
            continue
        field_array = fields.get(column_key(target))
        required = not STATUSES_SCHEMA.field(target).nullable
        if field_array is None:
            if required:
                msg = f"{reader.source.path}: column {name!r}: struct field {target!r} missing"
                raise InputSchemaError(msg)
            arrays.append(pa.nulls(len(items), STATUSES_SCHEMA.field(target).type))
            continue
        col = Column(
            plain(field_array),
            reader.source.path,
            f"{name}.{target}",
            reader.rows_done,
            reader.config,
            rows=parents,
        )
        result = STATUS_COLUMNS[target](col)
        if required:
            col.fail_where(
                result.is_null(), lambda _: "null value inside a statuses list; expected a value"
            )
        arrays.append(result)
    return pa.RecordBatch.from_arrays(arrays, schema=STATUSES_SCHEMA)
