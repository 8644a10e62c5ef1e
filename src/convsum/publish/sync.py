"""Sync the served tree to an S3-compatible bucket, resumably, in an order readers can trust.

A sync sends new and changed pages first, then summaries, then deletions, and last the bucket's
manifest (`manifest.json` under the prefix), which names the run the bucket now holds: a reader
of the bucket never finds a summary whose pages are missing.

Progress lives in the output root, never in a served tree: one SQLite database per destination
(`OUT/.sync/<destination id>.sqlite`) lists every object the bucket is known to hold, with the
MD5 of its body (the ETag S3 gives a one-part upload) and the size and modification time of the
file it was sent from, and the run whose manifest the bucket holds. A row is written only after
its request succeeded, so a sync killed at any moment is finished by the next one, and a sync of
a synced tree sends nothing.

Which files to look at: when the bucket holds the run this tree's incremental run followed, that
run's change lists (`written.txt`, `removed.txt`); otherwise (a full run, several runs since, or
a sync that never finished) every file of the tree. A file whose size and modification time match
the record is not read; one that differs is read and sent only if its MD5 differs too, so a full
rebuild sends only the files whose bytes changed.

The record trusts the bucket to keep what it was sent, except in a verifying sync (`verify`, and
every sync that looks at every file anyway): the prefix is listed first (one request per 1,000
objects) and the record made what the listing shows, each object's ETag standing for the MD5 of
its body, so that every file is read and compared with it. An object deleted or altered behind
the record's back is sent again, a stray one deleted.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from convsum import __version__
from convsum.errors import PublishError, SyncError
from convsum.log import RunLog
from convsum.publish.bucket import BUCKET_MANIFEST, DELETE_BATCH, Bucket, Destination
from convsum.publish.manifest import MANIFEST, REMOVED_LIST
from convsum.publish.paths import SUMMARY_FILE, check_layout, conversation_file
from convsum.publish.storage import Storage, storage_of
from convsum.publish.tree import API, FILE_LIST, OutputRoot, make_marked
from convsum.results import SyncReport

SYNC_DIR = ".sync"
CONNECTIONS = 32
_RECORD_EVERY = 2000  # rows per committed transaction of the record
_SUMMARY = conversation_file("", SUMMARY_FILE)  # how every summary's path ends
_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    path TEXT PRIMARY KEY,  -- relative to the prefix, as in files.txt
    md5 TEXT NOT NULL,      -- hexadecimal, as S3's ETag of a one-part upload ('': send again)
    size INTEGER,           -- of the file it was sent from (NULL: found by listing the bucket)
    mtime_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS synced (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    listed INTEGER NOT NULL,  -- the bucket was listed once, before anything was sent
    run_id TEXT,              -- the run whose manifest the bucket holds
    cache_control TEXT        -- the Cache-Control its objects were sent with
);
"""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Sent:
    """One file looked at: its record row, and whether its body was sent."""

    path: str
    md5: str
    size: int
    mtime_ns: int
    sent: bool


def sync_tree(
    out: Path, destination: Destination, cache_control: str, log: RunLog, verify: bool = False
) -> SyncReport:
    """Bring `destination` to the tree `out` serves; return what was done.

    With `verify`, list the bucket and repair what differs from the tree even when the record
    says the bucket holds it.

    Raises:
        SyncError: a request failed (the error names the object), the prefix holds objects
            that no sync of convsum put there, or a key would be longer than S3 takes (before
            any request).
        RunLockedError: a run is writing `out`.
    """
    root = OutputRoot(out)
    if root.published() is None:
        msg = f"{out}: no published tree to sync; run `convsum run --out {out}` first"
        raise SyncError(msg)
    with root.locked():
        tree = root.published()
        assert tree is not None  # the lock holds runs off, and a run never unpublishes
        manifest = orjson.loads((tree / MANIFEST).read_bytes())
        log.run_id = run_id = manifest["run_id"]
        destination.check_key_length(_longest_path(tree / FILE_LIST))
        bucket = Bucket(destination, CONNECTIONS)
        report = SyncReport(run_id, str(destination))
        with closing(_open_record(out, destination, bucket.endpoint)) as record:
            if verify or _synced(record) != (run_id, cache_control):
                report = _bring_up_to_date(
                    record, bucket, tree, manifest, cache_control, verify, log, report
                )
        log.event(
            "synced",
            destination=report.destination,
            sent=report.sent,
            unchanged=report.unchanged,
            deleted=report.deleted,
            bytes=report.bytes,
        )
        return report


def _bring_up_to_date(
    record: sqlite3.Connection,
    bucket: Bucket,
    tree: Path,
    manifest: dict[str, Any],
    cache_control: str,
    verify: bool,
    log: RunLog,
    report: SyncReport,
) -> SyncReport:
    """Send what the bucket lacks, in order, then its manifest; return `report` with the counts.

    A sync that looks at every file of the tree (after a full run, or when the change lists do
    not apply) verifies the bucket too: after a full run it reads every file anyway, so the
    listing is all it costs.
    """
    with log.stage("plan") as stage:
        _set_cache_control(record, cache_control)
        follows = not verify and _follows(record, manifest)
        listed = _list(record, bucket, verify=not follows)
        deletions = _plan(record, tree, manifest, follows)
        stage.set(files=_count(record, "todo"), deletions=len(deletions))
        if listed:
            stage.set(listed=listed)
    sent = {"sent": 0, "bytes": 0, "unchanged": 0}
    storage = storage_of(manifest["layout"])
    for name, summaries in (("pages", False), ("summaries", True)):
        with log.stage(name) as stage:
            _send(record, bucket, tree / API, storage, summaries, cache_control, stage.add)
        for key in sent:
            sent[key] += stage.counts.get(key, 0)
    with log.stage("deletions") as stage:
        _delete(record, bucket, deletions, stage.add)
    with log.stage("manifest"):
        body = _bucket_manifest(manifest)
        bucket.put(BUCKET_MANIFEST, body, cache_control)
        record.execute("UPDATE synced SET run_id = ?", (manifest["run_id"],))
        record.commit()
    return replace(
        report,
        listed=listed,
        sent=sent["sent"],
        bytes=sent["bytes"],
        unchanged=sent["unchanged"],
        deleted=len(deletions),
    )


def _open_record(out: Path, destination: Destination, endpoint: str) -> sqlite3.Connection:
    """Open (or create) the record of what `destination`, at `endpoint`, holds."""
    name = hashlib.sha256(f"{endpoint}\n{destination}".encode()).hexdigest()[:32]
    try:
        make_marked(out / SYNC_DIR)
        record = sqlite3.connect(out / SYNC_DIR / f"{name}.sqlite", isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        msg = f"{out / SYNC_DIR}: cannot open the sync record ({exc})"
        raise PublishError(msg) from exc
    record.execute("PRAGMA journal_mode = WAL")
    record.executescript(_SCHEMA)
    record.execute("INSERT OR IGNORE INTO synced VALUES (1, 0, NULL, NULL)")
    record.execute("BEGIN")
    return record


def _synced(record: sqlite3.Connection) -> tuple[str | None, str | None]:
    """Return the run the bucket holds and the Cache-Control its objects were sent with."""
    run_id, cache_control = record.execute("SELECT run_id, cache_control FROM synced").fetchone()
    return run_id, cache_control


def _count(record: sqlite3.Connection, table: str) -> int:
    return int(record.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _list(record: sqlite3.Connection, bucket: Bucket, verify: bool) -> int:
    """List the bucket before the first upload to it, and in a verifying sync; return how many
    objects the listing found (0 when there was none).

    The record becomes what the listing shows, in one transaction: each object with its ETag
    for its MD5 and no file it was sent from (so that the file is read and compared), none that
    the bucket lacks; an object whose headers are stale ('') stays so. So a sync from another
    machine, or from an output root made anew, sends only what differs and deletes the rest.

    Raises:
        SyncError: at the first listing, the prefix holds objects but no manifest of convsum's.
    """
    first = not record.execute("SELECT listed FROM synced").fetchone()[0]
    if not (first or verify):
        return 0
    seen = {"objects": 0, "manifest": 0}

    def held(found: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        for path, etag in found:
            seen["objects"] += 1
            if path == BUCKET_MANIFEST:
                seen["manifest"] = 1
            else:
                yield path, etag

    record.execute("CREATE TEMP TABLE found (path TEXT PRIMARY KEY, etag TEXT) WITHOUT ROWID")
    record.executemany("INSERT OR REPLACE INTO found VALUES (?, ?)", held(bucket.listing()))
    if first and seen["objects"] and not seen["manifest"]:
        record.rollback()
        msg = (
            f"{bucket.destination}: holds {seen['objects']} objects but no {BUCKET_MANIFEST} of "
            "convsum's; refusing to replace them: sync to an empty prefix"
        )
        raise SyncError(msg)
    record.execute("DELETE FROM held WHERE path NOT IN (SELECT path FROM found)")
    record.execute(
        "INSERT INTO held SELECT path, etag, NULL, NULL FROM found WHERE true "
        "ON CONFLICT (path) DO UPDATE SET size = NULL, mtime_ns = NULL, "
        "md5 = CASE held.md5 WHEN '' THEN '' ELSE excluded.md5 END"
    )
    record.execute("DROP TABLE found")
    record.execute("UPDATE synced SET listed = 1, run_id = NULL")
    record.commit()
    record.execute("BEGIN")
    return seen["objects"]


def _set_cache_control(record: sqlite3.Connection, cache_control: str) -> None:
    """Record the Cache-Control of this sync; when another one was used before, forget every
    object's body (a header cannot change without sending the body again)."""
    recorded = _synced(record)[1]
    if recorded == cache_control:
        return
    if recorded is not None:
        record.execute("UPDATE held SET md5 = '', size = NULL, mtime_ns = NULL")
        record.execute("UPDATE synced SET run_id = NULL")
    record.execute("UPDATE synced SET cache_control = ?", (cache_control,))
    record.commit()
    record.execute("BEGIN")


def _follows(record: sqlite3.Connection, manifest: dict[str, Any]) -> bool:
    """Return whether the tree's run is an incremental one after the run the bucket holds."""
    changes = manifest.get("changes", {})
    previous = changes.get("previous_run_id")
    return not changes.get("full") and previous is not None and previous == _synced(record)[0]


def _plan(
    record: sqlite3.Connection, tree: Path, manifest: dict[str, Any], follows: bool
) -> list[str]:
    """Fill `todo` with the files to look at (with what the record holds of each), the run's
    change list if it `follows` the run the bucket holds, else every file of the tree; return
    the paths to delete."""
    changes = manifest.get("changes", {})
    record.execute("CREATE TEMP TABLE listed (path TEXT PRIMARY KEY) WITHOUT ROWID")
    listed = tree / (changes["written"] if follows else FILE_LIST)
    record.executemany("INSERT OR IGNORE INTO listed VALUES (?)", ((p,) for p in _lines(listed)))
    record.execute(
        "CREATE TEMP TABLE todo AS SELECT l.path, h.md5, h.size, h.mtime_ns "
        "FROM listed l LEFT JOIN held h USING (path) ORDER BY l.path"
    )
    if follows:
        removed = tree / changes.get("removed", REMOVED_LIST)
        held = "SELECT 1 FROM held WHERE path = ?"
        gone = [p for p in _lines(removed) if record.execute(held, (p,)).fetchone()]
    else:
        unlisted = "SELECT path FROM held WHERE path NOT IN (SELECT path FROM listed) ORDER BY 1"
        gone = [row[0] for row in record.execute(unlisted)]
    return gone


def _longest_path(file_list: Path) -> str:
    """Return the longest path (in bytes) of a tree's file list."""
    with file_list.open("rb") as lines:
        longest = max(lines, key=len, default=b"")
    return longest.rstrip(b"\n").decode("utf-8", "surrogateescape")


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="\n") as lines:
        for line in lines:
            yield line.rstrip("\n")


def _send(
    record: sqlite3.Connection,
    bucket: Bucket,
    api: Path,
    storage: Storage,
    summaries: bool,
    cache_control: str,
    count: Callable[..., None],
) -> None:
    """Send the files of `todo` that the bucket lacks: the summaries, or everything else.

    Each goes under its served path with the bytes stored: gzip-compressed ones with
    `Content-Encoding: gzip`.
    """
    where = "=" if summaries else "<>"
    rows = record.execute(
        f"SELECT path, md5, size, mtime_ns FROM todo WHERE substr(path, -{len(_SUMMARY)}) "
        f"{where} ? ORDER BY path",
        (_SUMMARY,),
    )

    def send(row: tuple[str, str | None, int | None, int | None]) -> _Sent | None:
        path, md5, size, mtime_ns = row
        stored = api / storage.stored(path)
        try:
            stat = stored.stat()
            if md5 is not None and (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns):
                return None  # as sent before
            body = stored.read_bytes()
        except OSError as exc:
            msg = f"{stored}: cannot read a file of the tree ({exc.strerror})"
            raise SyncError(msg) from exc
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        sent = digest != md5
        if sent:
            bucket.put(path, body, cache_control, storage.content_encoding)
        return _Sent(path, digest, stat.st_size, stat.st_mtime_ns, sent)

    _record_each(record, _concurrently(send, rows), count)


def _record_each(
    record: sqlite3.Connection, results: Iterable[_Sent | None], count: Callable[..., None]
) -> None:
    """Record each file looked at, committing every _RECORD_EVERY rows."""
    pending: list[_Sent] = []
    try:
        for result in results:
            if result is None:
                count(unchanged=1)
                continue
            pending.append(result)
            if result.sent:
                count(sent=1, bytes=result.size)
            else:
                count(unchanged=1)
            if len(pending) >= _RECORD_EVERY:
                _commit_sent(record, pending)
    finally:
        _commit_sent(record, pending)  # what succeeded before a failure stays recorded


def _commit_sent(record: sqlite3.Connection, pending: list[_Sent]) -> None:
    record.executemany(
        "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
        [(s.path, s.md5, s.size, s.mtime_ns) for s in pending],
    )
    record.commit()
    record.execute("BEGIN")
    pending.clear()


def _delete(
    record: sqlite3.Connection, bucket: Bucket, paths: list[str], count: Callable[..., None]
) -> None:
    def delete(batch: tuple[str, ...]) -> tuple[str, ...]:
        bucket.delete(list(batch))
        return batch

    batches = (tuple(paths[i : i + DELETE_BATCH]) for i in range(0, len(paths), DELETE_BATCH))
    for batch in _concurrently(delete, batches):
        record.executemany("DELETE FROM held WHERE path = ?", ((p,) for p in batch))
        record.commit()
        record.execute("BEGIN")
        count(deleted=len(batch))


def _concurrently(work: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """Yield `work(item)` for each item, as they finish, CONNECTIONS at a time.

    Only a bounded number of items is in flight, so a million files never become a million
    futures. The first failure stops the submissions; what is in flight finishes first.
    """
    with ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="convsum-sync") as pool:
        running: set[Future[R]] = set()
        for item in items:
            running.add(pool.submit(work, item))
            if len(running) >= 2 * CONNECTIONS:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                yield from _results(done, running)
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from _results(done, running)


def _results(done: set[Future[R]], running: set[Future[R]]) -> Iterator[R]:
    failed = next((f for f in done if f.exception() is not None), None)
    for future in done:
        if future.exception() is None:
            yield future.result()
    if failed is not None:
        for future in running:
            future.cancel()
        wait(running)
        for future in running:
            if not future.cancelled() and future.exception() is None:
                yield future.result()
        failed.result()  # raises


def _bucket_manifest(manifest: dict[str, Any]) -> bytes:
    """Return the bucket's manifest: the run it holds and its layout, not the local paths."""
    layout = manifest["layout"]
    document = {
        "run_id": manifest["run_id"],
        "started_at": manifest["started_at"],
        "newest_input": manifest.get("newest_input"),
        "convsum_version": __version__,
        "layout": {
            "version": layout.get("version", 1),
            "page_size": layout["page_size"],
            "orders": layout["orders"],
            "gzip": storage_of(layout).gzip,
        },
        "files": manifest["files"]["count"],
        "counts": manifest["counts"],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def read_layout(bucket: Bucket) -> dict[str, Any]:
    """Return the layout recorded in the bucket's manifest (for the nginx configuration)."""
    body = bucket.get(BUCKET_MANIFEST)
    if body is None:
        msg = f"{bucket.destination}: no {BUCKET_MANIFEST}; run `convsum sync` to it first"
        raise SyncError(msg)
    layout: dict[str, Any] = orjson.loads(body)["layout"]
    remedy = "run `convsum run` on the output root, then `convsum sync` to this bucket"
    check_layout(layout, f"{bucket.destination}/{BUCKET_MANIFEST}", remedy)
    return layout
