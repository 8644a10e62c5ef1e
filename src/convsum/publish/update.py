"""Update a served tree in place: rewrite only the files that differ, one conversation at a time.

An incremental run recomputes some conversations, and of their ascending lists only the pages
from the first that may have changed to the last (see EngineSettings.conversations). For each
file it is given, `TreeUpdate` compares the new bytes with the served file: equal files are left
alone (not even touched);
different or new ones are written to a scratch directory on the same file system. Nothing in the
served tree changes until `apply`, which goes conversation by conversation: it renames the new
page files into place, then the summary, then removes the files the conversation no longer has.
rename(2) replaces a file atomically, so a reader sees each file either old or new, whole, and a
conversation's summary and pages disagree only during the few renames of its own swap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa

from convsum.publish import durable
from convsum.publish.paths import SUMMARY_FILE, conversation_file, conversation_files
from convsum.publish.storage import Storage
from convsum.publish.tree import Directories

WRITE = "+"
REMOVE = "-"


class TreeUpdate:
    """The changed files of a set of recomputed conversations, staged, then swapped in."""

    def __init__(self, api: Path, scratch: Path, storage: Storage) -> None:
        self.api = api
        self.scratch = scratch
        self.storage = storage
        scratch.mkdir()
        self.files = 0
        self.bytes = 0
        self.unchanged = 0
        self._produced: dict[str, set[str]] = {}
        self._writes: dict[str, list[tuple[str, Path]]] = {}
        self._removals: dict[str, list[str]] = {}
        self._directories = Directories(api)

    @property
    def shared(self) -> None:
        """None: every file comes through `write`, to be compared with the served one."""
        return None

    def write(self, conversation: str, name: str, body: bytes) -> None:
        """Stage `body` as file `name` of `conversation`, unless the served file equals it.

        A stored file is compared once decoded: a compressor that changed since it was written
        rewrites no file whose served bytes are the same.
        """
        self._produced.setdefault(conversation, set()).add(name)
        path = conversation_file(conversation, name)
        try:
            served = (self.api / self.storage.stored(path)).read_bytes()
            if self.storage.decode(served) == body:
                self.unchanged += 1
                return
        except FileNotFoundError:
            pass
        staged = self.scratch / str(self.files)
        stored = self.storage.encode(body)
        staged.write_bytes(stored)
        self._writes.setdefault(conversation, []).append((name, staged))
        self.files += 1
        self.bytes += len(stored)

    def plan(self, conversations: Iterable[str]) -> pa.Table:
        """Find the files each recomputed conversation no longer has; return every change.

        `conversations` are the paths (publish.paths.conversation_path) of all recomputed
        conversations, including those that have no file any more. Returns (path, op) rows:
        op "+" written, "-" removed.
        Call after every file of the recomputed conversations was offered to `write`.
        """
        for conversation in conversations:
            produced = self._produced.get(conversation, set())
            gone = sorted(_stale(self._files_of(conversation), produced))
            if gone:
                self._removals[conversation] = gone
        paths, ops = [], []
        for conversation, writes in self._writes.items():
            paths += [conversation_file(conversation, name) for name, _ in writes]
            ops += [WRITE] * len(writes)
        for conversation, names in self._removals.items():
            paths += [conversation_file(conversation, name) for name in names]
            ops += [REMOVE] * len(names)
        return pa.table({"path": pa.array(paths, pa.string()), "op": pa.array(ops, pa.string())})

    @property
    def removed(self) -> int:
        return sum(len(names) for names in self._removals.values())

    @property
    def conversations_changed(self) -> int:
        return len(self._writes.keys() | self._removals.keys())

    def apply(self) -> None:
        """Swap the staged files in, conversation by conversation: pages, summary, removals.

        The staged files are flushed to disk first; the caller flushes the renames (see
        publish/durable.py) before it records the update as done.
        """
        durable.sync_filesystem(self.scratch)
        for conversation in sorted(self._writes.keys() | self._removals.keys()):
            writes = sorted(self._writes.get(conversation, ()), key=_summary_last)
            for name, staged in writes:
                target = conversation_file(conversation, name)
                self._directories.make_parent(target)
                staged.rename(self.api / self.storage.stored(target))
            for name in self._removals.get(conversation, ()):
                gone = self.api / self.storage.stored(conversation_file(conversation, name))
                gone.unlink(missing_ok=True)
                self._prune(gone.parent)

    def _files_of(self, conversation: str) -> Iterator[str]:
        """Yield the names of the files the served tree holds for `conversation`: those in its
        fan-out directory named after it, and those of its page-group directories."""
        directory, _, leaf = conversation.rpartition("/")
        paths: list[str] = []
        try:
            entries = list(os.scandir(self.api / directory))
        except FileNotFoundError:
            return iter(())
        for entry in entries:
            if not entry.name.startswith(leaf + "."):
                continue
            if entry.is_dir(follow_symlinks=False):
                paths += (f"{entry.name}/{child.name}" for child in Path(entry.path).iterdir())
            else:
                paths.append(entry.name)
        return conversation_files(leaf, map(self.storage.served, paths))

    def _prune(self, directory: Path) -> None:
        """Remove `directory` and its parents up to the API root while they are empty."""
        self._directories.forget()
        while directory != self.api:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _summary_last(item: tuple[str, Path]) -> tuple[bool, str]:
    return item[0] == SUMMARY_FILE, item[0]


def _stale(existing: Iterable[str], produced: set[str]) -> Iterator[str]:
    """Yield the existing files of a recomputed conversation that it no longer has.

    An incremental run produces a list's pages from the first one that may have changed to the
    last one (see EngineSettings.conversations): a page before the first produced is unchanged,
    a page after the last is past the list's new end, and a list with no page produced is empty.
    """
    last: dict[str, int] = {}
    for name in produced:
        if name != SUMMARY_FILE:
            kind, start = _page_key(name)
            last[kind] = max(start, last.get(kind, -1))
    for name in existing:
        if name in produced:
            continue
        if name == SUMMARY_FILE:
            yield name  # the conversation has no message left
            continue
        kind, start = _page_key(name)
        if start > last.get(kind, -1):
            yield name


def _page_key(name: str) -> tuple[str, int]:
    """Return a page file's list and order (as `all.asc`) and its start."""
    list_name, order, start, _json = name.rpartition("/")[2].split(".")
    return f"{list_name}.{order}", int(start)
