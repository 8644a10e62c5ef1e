"""The output root: build a new tree beside the served one, then switch to it atomically.

Layout of an output root:

    .convsum                      marks the directory as an output root (see `OutputRoot`)
    .lock                         held (flock) by the one run writing this root
    current -> trees/<run id>     the published tree (a symbolic link, swapped with rename(2))
    trees/<run id>/api/...        the served API tree (see publish/paths.py)
    trees/<run id>/manifest.json  written last, with report.json and files.txt beside it
    trees/<run id>/state/         its state store (see incremental/catalog.py)
    trees/<run id>/tables/        the queryable tables (see reporting/tables.py)
    trees/<run id>/.readers       held shared (flock) by each query reading the tree
    trees/.<run id>.partial/      a tree being built; never served, removed if a run dies
    tokens/                       the API's token store (see tokens.py): no run touches it
    .work-<run id>/               staging inputs, engine spill files and the new files of an
                                  incremental run

A full run builds a new tree beside the served one: a reader following `current` sees either the
old tree or the new one, whole, and the switch is one rename of a symbolic link. An incremental
run updates the served tree file by file instead (see publish/update.py).

convsum deletes only what it can prove it made: a tree or work directory holding its `.convsum`
mark. It writes into an existing directory only if that directory is empty or marked, so a
mistyped `--out` never removes anyone's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from convsum import interrupts
from convsum.errors import PublishError, RunLockedError
from convsum.publish import durable
from convsum.publish.paths import conversation_file
from convsum.publish.storage import Storage

CURRENT = "current"
TREES = "trees"
API = "api"
FILE_LIST = "files.txt"
LOCK = ".lock"
MARK = ".convsum"
READERS = ".readers"
_MADE_CACHE = 4096


class Directories:
    """Make the parent directories of files under a root, each once.

    Creating directories costs more than creating files on most file systems, so each directory
    is made once; the cache is bounded, and a forgotten one costs one mkdir.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[str] = set()

    def make_parent(self, relative: str) -> None:
        """Make sure the directory of `relative` (a path under the root) exists."""
        directory = relative.rpartition("/")[0]
        if directory not in self._made:
            if len(self._made) > _MADE_CACHE:
                self._made.clear()
            (self.root / directory).mkdir(parents=True, exist_ok=True)
            self._made.add(directory)

    def forget(self) -> None:
        """Forget what was made (after directories were removed)."""
        self._made.clear()


def _part_list(root: Path, part: str) -> Path:
    """The unsorted list of the paths that writer `part` (none: the tree's own) wrote."""
    return root / (f"{FILE_LIST}.unsorted-{part}" if part else f"{FILE_LIST}.unsorted")


class TreeWriter:
    """Write the files of one new tree and record every path written."""

    def __init__(self, root: Path, storage: Storage, part: str = "") -> None:
        """Write under `root`, stored as `storage` says; `part` names a second writer of the
        same tree (the Spark engine's executors), whose list the first one adopts (`adopt`)."""
        self.root = root
        self.storage = storage
        self.api = root / API
        self.api.mkdir(parents=True, exist_ok=True)
        self.files = 0
        self.bytes = 0
        self._list_path = _part_list(root, part)
        self._list = self._list_path.open("w", encoding="utf-8")
        self._directories = Directories(self.api)

    @property
    def shared(self) -> TreeWriter:
        """This tree, which other writers (`part`) may write into for it to adopt."""
        return self

    def write(self, conversation: str, name: str, body: bytes) -> None:
        """Write `body` as file `name` of a conversation (paths from publish.paths);
        count the bytes stored, list the path served."""
        relative = conversation_file(conversation, name)
        self._directories.make_parent(relative)
        stored = self.storage.encode(body)
        with (self.api / self.storage.stored(relative)).open("wb") as handle:
            handle.write(stored)
        self.files += 1
        self.bytes += len(stored)
        self._list.write(relative + "\n")

    def adopt(self, part: str, files: int, size: int) -> None:
        """Count as written here the `files` files (`size` bytes) that writer `part` wrote."""
        listed = _part_list(self.root, part)
        with listed.open(encoding="utf-8") as written:
            shutil.copyfileobj(written, self._list)
        listed.unlink()
        self.files += files
        self.bytes += size

    def close(self) -> Path:
        """Finish writing; return the unsorted list of written paths."""
        self._list.close()
        return self._list_path

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._list.close()


class OutputRoot:
    """The output directory of a run target."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.trees = path / TREES
        self.current = path / CURRENT
        if self.current.exists() and not self.current.is_symlink():
            msg = f"{self.current} exists and is not a link to a tree; is {path} an output root?"
            raise PublishError(msg)

    def claim(self) -> None:
        """Mark the directory as an output root; refuse a non-empty one that is not marked.

        A root published before marks existed (a `current` link to a tree with a manifest) is
        marked, with its served tree; its other directories are never removed.
        """
        if (self.path / MARK).exists():
            return
        published = self.published()
        legacy = (
            published is not None
            and published.parent == self.trees
            and (published / "manifest.json").is_file()
        )
        if any(self.path.iterdir()) and not legacy:
            msg = (
                f"{self.path}: not empty and not a convsum output root (no {MARK} file); "
                "refusing to write there: choose a new or empty directory"
            )
            raise PublishError(msg)
        if published is not None and legacy:
            _mark(published)
        _mark(self.path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the output root's lock for a run; raise RunLockedError if another run holds it.

        The lock is flock(2) on `OUT/.lock`: the kernel releases it when the holder exits, even
        when it is killed, so a stale lock file never blocks the next run.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.claim()
            handle = (self.path / LOCK).open("a+")
        except OSError as exc:
            msg = f"{self.path}: cannot prepare the output root ({exc.strerror})"
            raise PublishError(msg) from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                msg = f"{self.path}: another run (pid {holder}) is writing this output root"
                raise RunLockedError(msg) from exc
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    def prepare(self, run_id: str) -> Path:
        """Create and return the work directory of a run."""
        try:
            self.trees.mkdir(parents=True, exist_ok=True)
            work = self.path / f".work-{run_id}"
            work.mkdir()
            _mark(work)
        except OSError as exc:
            msg = f"{self.path}: cannot prepare the output root ({exc.strerror})"
            raise PublishError(msg) from exc
        return work

    def partial(self, run_id: str) -> Path:
        """Create and return the directory in which a run builds a whole new tree."""
        partial = self.trees / f".{run_id}.partial"
        partial.mkdir()
        _mark(partial)
        return partial

    def published(self) -> Path | None:
        """Return the tree currently served, if any."""
        if not self.current.is_symlink():
            return None
        return self.path / self.current.readlink()

    def publish(self, partial: Path, run_id: str) -> Path:
        """Make a finished partial tree the served one; remove the trees it replaces."""
        final = self.trees / run_id
        durable.sync_filesystem(partial)  # every file of the tree, before anything points at it
        partial.rename(final)
        durable.sync_directory(self.trees)
        link = self.path / f".{CURRENT}.{run_id}"
        link.symlink_to(Path(TREES) / run_id)
        link.replace(self.current)
        durable.sync_directory(self.path)
        # Stopped after the switch, the run has still published: the next run removes the rest.
        with contextlib.suppress(KeyboardInterrupt):
            self.remove_stale(keep=final)
        return final

    def remove_stale(self, keep: Path | None) -> None:
        """Remove every marked tree, partial tree and work directory other than `keep`.

        An empty directory named like a partial tree or a work directory goes too: a run killed
        between making one and marking it leaves it, and removing it loses nothing.
        """
        trees = list(self.trees.iterdir()) if self.trees.exists() else []
        for child in [*trees, *self.path.glob(".work-*")]:
            if child != keep and _is_marked(child):
                with unread(child) as free:
                    if free:  # else a later run removes it, once its readers are done
                        shutil.rmtree(child, ignore_errors=True)
        for child in [*self.trees.glob(".*.partial"), *self.path.glob(".work-*")]:
            with contextlib.suppress(OSError):
                child.rmdir()  # only if empty
        for child in self.path.glob(f".{CURRENT}.*"):
            if child.is_symlink():
                child.unlink(missing_ok=True)

    def discard(self, *paths: Path) -> None:
        """Remove a failed run's partial tree and work directory (given the time it takes, if
        a stop signal ended the run)."""
        interrupts.removing()
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def reading(tree: Path) -> Iterator[None]:
    """Hold a tree for reading: no run removes any of its files until the block ends.

    Raises FileNotFoundError when the tree is gone (a run removed it before the hold began).
    """
    fd = os.open(tree / READERS, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def unread(tree: Path) -> Iterator[bool]:
    """Yield whether no reader holds `tree`; while True, no reader can begin to hold it.

    Never waits: a run leaves a held tree's files for a later run to remove.
    """
    try:
        fd = os.open(tree / READERS, os.O_RDONLY)
    except FileNotFoundError:
        yield True  # a tree nobody can read through convsum
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def make_marked(directory: Path) -> None:
    """Create `directory` (and its parents) and mark it as made by convsum."""
    directory.mkdir(parents=True, exist_ok=True)
    _mark(directory)


def remove_made(directory: Path) -> None:
    """Remove a directory that convsum made; refuse (PublishError) one it did not make."""
    if not directory.exists() and not directory.is_symlink():
        return
    if not _is_marked(directory):
        msg = (
            f"{directory}: exists and was not made by convsum (no {MARK} file); refusing to "
            "remove it: choose another directory"
        )
        raise PublishError(msg)
    shutil.rmtree(directory)


def _mark(directory: Path) -> None:
    (directory / MARK).write_bytes(b"made by convsum; removed by convsum when no longer needed\n")


def _is_marked(path: Path) -> bool:
    return not path.is_symlink() and path.is_dir() and (path / MARK).is_file()
