"""Cut the engine's sorted conversation stream into page files, one page in memory at a time;
write them, and the summaries, through a tree's writer (a new tree's or an update's), or have an
engine's own workers write their parts of a new tree (`publish_stream`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from convsum.config import LIST_NAMES
from convsum.engines.base import Derivation, Pages, Stream
from convsum.log import Stage
from convsum.publish.paths import SUMMARY_FILE, conversation_path, page_file
from convsum.publish.storage import Storage
from convsum.publish.tree import TreeWriter


class SharedTree(Protocol):
    """A new tree that other processes (the Spark engine's executors) may write files into, each
    with its own writer `part` (`TreeSink`), for this process to adopt (publish/tree.py:
    TreeWriter)."""

    root: Path
    storage: Storage

    def adopt(self, part: str, files: int, size: int) -> None: ...


class Writer(Protocol):
    """Where a run's files go: a new tree (publish/tree.py) or an update (publish/update.py)."""

    @property
    def shared(self) -> SharedTree | None:
        """The tree itself when other processes may write its files (a new tree); None when
        every file must come through `write` (an update compares each with the served one)."""
        ...

    def write(self, conversation: str, name: str, body: bytes) -> None: ...


@dataclass(frozen=True)
class Page:
    """One finished page: which conversation and list it belongs to, and its JSON bytes."""

    owner: str
    participant: str
    list_name: str
    start: int
    body: bytes


@dataclass
class _Pending:
    owner: str
    participant: str
    page: int
    chunks: list[bytes]


class _ListCutter:
    """Cut one list (all, mt or mo) of the stream into pages of `page_size` messages.

    Rows arrive in list order with their position in the list; a page is a run of rows with the
    same (owner, participant, position // page_size). Within a batch every run but the last is
    complete; the last waits for the next batch, so at most one page is held between batches.
    """

    def __init__(self, list_name: str, page_size: int) -> None:
        self.list_name, self.page_size = list_name, page_size
        self.pending: _Pending | None = None

    def feed(
        self, owner: pa.Array, participant: pa.Array, pos: pa.Array, json: pa.Array
    ) -> Iterator[Page]:
        n = len(json)
        if n == 0:
            return
        page = pc.divide(pos, self.page_size)
        change = pc.or_(
            pc.or_(
                pc.not_equal(owner[1:], owner[:-1]),
                pc.not_equal(participant[1:], participant[:-1]),
            ),
            pc.not_equal(page[1:], page[:-1]),
        )
        starts = np.concatenate(([0], np.flatnonzero(change.to_numpy(zero_copy_only=False)) + 1))
        ends = np.append(starts[1:], n)
        width = np.int64 if pa.types.is_large_string(json.type) else np.int32
        offsets = np.frombuffer(json.buffers()[1], dtype=width)[json.offset : json.offset + n + 1]
        data = memoryview(json.buffers()[2] or b"")
        pages = page.to_numpy()
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key_owner, key_participant = owner[start].as_py(), participant[start].as_py()
            key_page = int(pages[start])
            chunk = bytes(data[offsets[start] : offsets[end]])
            pending = self.pending
            if pending and (pending.owner, pending.participant, pending.page) == (
                key_owner,
                key_participant,
                key_page,
            ):
                pending.chunks.append(chunk)
            else:
                if pending:
                    yield self._finish(pending)
                self.pending = _Pending(key_owner, key_participant, key_page, [chunk])

    def close(self) -> Iterator[Page]:
        if self.pending:
            yield self._finish(self.pending)
            self.pending = None

    def _finish(self, pending: _Pending) -> Page:
        joined = b"".join(pending.chunks)
        body = b"[" + joined[1:] + b"]"  # every row's text starts with ","
        return Page(
            pending.owner,
            pending.participant,
            self.list_name,
            pending.page * self.page_size,
            body,
        )


def conversation_pages(batches: Iterable[pa.RecordBatch], page_size: int) -> Iterator[Page]:
    """Yield the pages of every list of every conversation in a CONVERSATION_SCHEMA stream.

    A row whose position in a list is null is not part of any page of that list.
    """
    cutters = {name: _ListCutter(name, page_size) for name in LIST_NAMES}
    for batch in batches:
        owner, participant = batch.column("owner"), batch.column("participant")
        direction, json = batch.column("direction"), batch.column("json")
        pos_all, pos_dir = batch.column("pos_all"), batch.column("pos_dir")
        # A null position: the row's page in that list is left unchanged by an incremental run.
        keep = pos_all.is_valid() if pos_all.null_count else None
        yield from cutters["all"].feed(*_filtered(keep, owner, participant, pos_all, json))
        for name in ("mt", "mo"):
            mask = pc.and_(pc.equal(direction, name), pos_dir.is_valid())
            yield from cutters[name].feed(*_filtered(mask, owner, participant, pos_dir, json))
    for cutter in cutters.values():
        yield from cutter.close()


def _filtered(mask: pa.Array | None, *arrays: pa.Array) -> tuple[pa.Array, ...]:
    return arrays if mask is None else tuple(array.filter(mask) for array in arrays)


def write_pages(
    writer: Writer, rows: Iterable[pa.RecordBatch], page_size: int, order: str, stage: Stage
) -> None:
    """Write the pages of one order's sorted stream of conversation rows."""
    last: tuple[str, str] | None = None
    conversation = ""
    written = 0
    for page in conversation_pages(rows, page_size):
        if (page.owner, page.participant) != last:
            last = (page.owner, page.participant)
            conversation = conversation_path(page.owner, page.participant)
        writer.write(
            conversation, page_file(page_size, page.list_name, order, page.start), page.body
        )
        written += 1
        if written == 4096:
            stage.add(files=written)
            written = 0
    stage.add(files=written)


def write_summaries(writer: Writer, batches: Iterable[pa.RecordBatch], stage: Stage) -> None:
    """Write each conversation's summary file."""
    for batch in batches:
        owners, participants, bodies = (column.to_pylist() for column in batch.columns)
        for owner, participant, body in zip(owners, participants, bodies, strict=True):
            writer.write(conversation_path(owner, participant), SUMMARY_FILE, body.encode())
        stage.add(files=batch.num_rows)


def write_rows(
    writer: Writer, rows: Iterable[pa.RecordBatch], stream: Stream, page_size: int, stage: Stage
) -> None:
    """Write a stream's rows: the pages of one order, or the summaries."""
    if isinstance(stream, Pages):
        write_pages(writer, rows, page_size, stream.order, stage)
    else:
        write_summaries(writer, rows, stage)


@dataclass(frozen=True)
class TreeSink:
    """Writes one part of a stream into a new tree, in another process, as writer part `part`
    (engines/base.py: Sink)."""

    root: Path
    storage: Storage
    stream: Stream
    page_size: int

    def __call__(self, part: str, rows: Iterable[pa.RecordBatch]) -> tuple[int, int]:
        with TreeWriter(self.root, self.storage, part) as writer:
            write_rows(writer, rows, self.stream, self.page_size, Stage(self.stream.name))
            return writer.files, writer.bytes


def publish_stream(
    derived: Derivation, writer: Writer, stream: Stream, page_size: int, stage: Stage
) -> None:
    """Write one stream of the derivation through `writer`. Into a new tree, an engine with
    workers of its own has them write their parts (`Derivation.fan_out`), which the writer
    adopts; otherwise this process reads the stream and writes every file."""
    shared = writer.shared
    if shared is not None:
        sink = TreeSink(shared.root.resolve(), shared.storage, stream, page_size)
        parts = derived.fan_out(stream, sink)
        if parts is not None:
            for part in parts:
                shared.adopt(part.name, part.files, part.bytes)
                stage.add(files=part.files)
            return
    write_rows(writer, derived.rows(stream), stream, page_size, stage)
