"""One run of the job: inputs -> engine -> published tree, manifest and run report.

A run is full or incremental. A full run reads every input file and builds a new tree (with its
state store) beside the served one, then switches to it. An incremental run reads only the input
files its state store has not seen, recomputes the conversations they touch, and rewrites only
those conversations' files that changed, in the served tree. It falls back to a full run when the
state cannot be trusted: no state, `--full`, another configuration or version, or an input file
that changed or disappeared since it was read.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import pyarrow.parquet as pq

from convsum import __version__
from convsum.config import RunConfig
from convsum.engines import EngineSettings, get_engine
from convsum.engines.base import Pages, Summaries, memory_budget, tally
from convsum.errors import InputError, PublishError, first_line
from convsum.incremental.catalog import STATE, Catalog
from convsum.incremental.plan import Plan, decide, fingerprint, update_scope
from convsum.incremental.tallies import Tally, files_to_write, merge, write_conversations
from convsum.inputs import Source, StagedInputs, list_inputs, stage_inputs
from convsum.log import RunLog
from convsum.publish.manifest import (
    MANIFEST,
    REMOVED_LIST,
    REPORT,
    WRITTEN_LIST,
    describe_inputs,
    published_run_id,
    sort_file_list,
    update_file_list,
    write_json,
)
from convsum.publish.pages import Writer, publish_stream
from convsum.publish.paths import LAYOUT_VERSION, conversation_path
from convsum.publish.storage import Storage
from convsum.publish.tree import API, FILE_LIST, OutputRoot, TreeWriter
from convsum.publish.update import TreeUpdate
from convsum.reporting.tables import (
    RunRecord,
    Written,
    publish_tables,
    unchanged_tables,
    write_tables,
)
from convsum.results import DataCounts, Facts, FileCounts, RunReport, as_dict


def new_run_id() -> str:
    """Return a sortable, unique run id: UTC start time and a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_job(config: RunConfig, log: RunLog | None = None, full: bool = False) -> RunReport:
    """Run the job described by `config`; return the run report.

    Nothing is published unless every stage succeeds. `full` forces a full rebuild.
    """
    log = log or RunLog(config.log_format)
    root = OutputRoot(Path(config.out))
    with root.locked():
        run_id = new_run_id()
        log.run_id = run_id
        root.remove_stale(keep=root.published())  # what a killed run left behind
        with log.stage("list") as stage:
            sources = list_inputs(config)
            stage.set(files=len(sources))
        published = root.published()
        state_dir = published / STATE if published else None
        state = Catalog.open(state_dir) if state_dir and Catalog.exists(state_dir) else None
        try:
            unreadable = state is None and state_dir is not None and Catalog.exists(state_dir)
            plan = decide(config, state, sources, full, unreadable)
            reason = {"reason": plan.reason} if plan.reason else {}
            log.event("mode", mode="full" if plan.full else "incremental", **reason)
            with _writing(config.out):
                if state is not None and (plan.full or published is None):
                    state.close()
                    state = None
                work = root.prepare(run_id)
                try:
                    storage = Storage(config.gzip)
                    target = (
                        _InPlace(published, state, work, storage)
                        if state is not None and published is not None
                        else _NewTree(config, root, run_id, storage)
                    )
                    return _run(config, target, run_id, work, plan, log)
                finally:
                    root.discard(work)
        finally:
            if state is not None:
                state.close()


@dataclass
class _Placed:
    """What publishing the files changed: the report's file counts, and the manifest's."""

    report: FileCounts
    files: int
    changes: dict[str, int] | None = None  # the change lists of an update (None: a new tree)


@dataclass(frozen=True)
class _Affected:
    """What a run derives: the rows its lists and tables come from, and for an update the
    conversations and UTC days it recomputes and the touched ids' rows now and before."""

    rows: StagedInputs
    conversations: Path | None = None  # None: every conversation (a full run)
    days: list[date] | None = None  # None: every day
    # The touched ids' rows (now, before); None: a full run, where every row is new.
    touched: tuple[StagedInputs, StagedInputs] | None = None


class _NewTree:
    """A full run's target: a new tree with its own state store, beside the served one."""

    def __init__(self, config: RunConfig, root: OutputRoot, run_id: str, storage: Storage) -> None:
        self.root, self.run_id = root, run_id
        self.previous = root.published()
        self.tree = root.partial(run_id)
        self.state = Catalog.create(self.tree / STATE, fingerprint(config), run_id)
        self.writer = TreeWriter(self.tree, storage)

    def unchanged(self, staged: StagedInputs) -> Facts | None:
        return None

    def affected(
        self, config: RunConfig, staged: StagedInputs, rows: StagedInputs, work: Path, log: RunLog
    ) -> _Affected:
        return _Affected(rows)

    def place(self, log: RunLog, affected: _Affected, counts: DataCounts) -> _Placed:
        with log.stage("index") as stage:
            removed = sort_file_list(self.writer.close(), self.tree, self.previous)
            stage.set(files=self.writer.files, removed=removed)
        files = FileCounts(
            conversations_changed=counts.participants,
            files_written=self.writer.files,
            files_unchanged=0,
            files_removed=removed,
            bytes_written=self.writer.bytes,
        )
        return _Placed(files, self.writer.files)

    def switch(self) -> None:
        self.state.close()
        self.root.publish(self.tree, self.run_id)

    def discard(self) -> None:
        self.writer.close()
        self.state.close()
        self.root.discard(self.tree)


class _InPlace:
    """An incremental run's target: the served tree, updated in place."""

    def __init__(self, tree: Path, state: Catalog, work: Path, storage: Storage) -> None:
        self.tree, self.state, self.previous = tree, state, tree
        self.writer = TreeUpdate(tree / API, work / "files", storage)
        state.remove_unlisted()

    def unchanged(self, staged: StagedInputs) -> Facts | None:
        """Return the served tree's facts if nothing can change: no new file, and no
        unfinished update."""
        if staged.files or self.state.pending():
            return None
        return self.state.facts()

    def affected(
        self, config: RunConfig, staged: StagedInputs, rows: StagedInputs, work: Path, log: RunLog
    ) -> _Affected:
        touched = work / "conversations.parquet"
        with log.stage("plan") as stage:
            orders, size = _orders(config), config.page_size
            found = update_scope(self.state, staged.files, work / "touched", touched, orders, size)
            derived = found.rows or rows
            stage.set(
                conversations=found.conversations, days=len(found.days),
                touched=found.after.rows_read["messages"], rows=derived.rows_read["messages"],
            )  # fmt: skip
        return _Affected(derived, touched, found.days, (found.after, found.before))

    def place(self, log: RunLog, affected: _Affected, counts: DataCounts) -> _Placed:
        update = self.writer
        with log.stage("swap") as stage:
            touched = affected.conversations
            changes = update.plan(_conversation_paths(touched) if touched else ())
            self.state.begin_update(touched, changes)
            update.apply()
            stage.set(files=update.files, removed=update.removed)
        with log.stage("index"):
            total, written, removed = update_file_list(self.tree, changes, self.state.unreported())
        files = FileCounts(
            conversations_changed=update.conversations_changed,
            files_written=update.files,
            files_unchanged=update.unchanged,
            files_removed=update.removed,
            bytes_written=update.bytes,
        )
        return _Placed(files, total, {"written": written, "removed": removed})

    def switch(self) -> None:
        pass

    def discard(self) -> None:
        pass


def _run(
    config: RunConfig,
    target: _NewTree | _InPlace,
    run_id: str,
    work: Path,
    plan: Plan,
    log: RunLog,
) -> RunReport:
    """Read the new input files, derive, write the files and publish them into `target`.

    Nothing is published unless every stage succeeds: a new tree becomes the served one in one
    switch; an update swaps each changed conversation's files into the served tree, and the
    catalog commits last (see publish/update.py and incremental/).
    """
    started = datetime.now(UTC)
    state = target.state
    try:
        with log.stage("read") as stage:
            staged = stage_inputs(
                config, work, plan.new, prefix=f"{run_id}-", nested_known=state.nested_known()
            )
            stage.set(files=len(plan.new), skipped=sum(plan.skipped.values()), **staged.rows_read)
        newest = _newest(staged, None if plan.full else target.previous)
        _check_fresh(config, newest)
        totals = state.rows_read()
        for role, rows in staged.rows_read.items():
            totals[role] += rows
        state.adopt(staged.files, staged.messages, staged.statuses)
        every = StagedInputs(state.messages, state.statuses, totals, staged.files_read)
        affected = _Affected(every)
        facts = target.unchanged(staged)
        tally: Tally | None = None
        if facts is not None:  # a night without new files: the counts stand
            tables = unchanged_tables(target.tree)
        else:
            affected = target.affected(config, staged, every, work, log)
            facts, tally, tables = _derive_and_write(
                config, affected, state, run_id, work, target.writer, log, target.tree
            )
        counts = DataCounts.of(facts, totals)
        placed = target.place(log, affected, counts)
        report = RunReport(
            run_id=run_id,
            mode="full" if plan.full else "incremental",
            rebuild_reason=plan.reason or None,
            rows_read=dict(staged.rows_read),
            files_read={role: len(paths) for role, paths in staged.files_read.items()},
            files_skipped=dict(plan.skipped),
            newest_input=None if newest is None else _iso(newest),
            data=counts,
            files=placed.report,
            stages=dict(log.seconds),
        )
        write_json(target.tree / REPORT, as_dict(report))
        previous = published_run_id(target.previous)
        manifest = _manifest(config, plan.sources, report, placed, started, previous)
        write_json(target.tree / MANIFEST, manifest)
        with log.stage("state"):
            # Publishing the tables first flushes the files written so far; then it replaces
            # the snapshot, and the catalog commits last.
            publish_tables(target.tree, tables, target.previous, _history(config, report, started))
            state.record(run_id, staged.files, facts, tally)
        target.switch()
    except BaseException:
        target.discard()
        raise
    return report


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _newest(staged: StagedInputs, previous: Path | None) -> datetime | None:
    """The latest `created` of the rows staged now and, for an update, of those the tree's
    earlier runs read (its report says)."""
    found = [t for t in (staged.newest, _reported_newest(previous)) if t is not None]
    return max(found, default=None)


def _reported_newest(tree: Path | None) -> datetime | None:
    if tree is None:
        return None
    try:
        text = orjson.loads((tree / REPORT).read_bytes()).get("newest_input")
    except (FileNotFoundError, ValueError, AttributeError):
        return None
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def _check_fresh(config: RunConfig, newest: datetime | None) -> None:
    """Fail the run (exit 1, nothing published) when its newest input row is older than
    `max_input_age`: the logs have stopped arriving, and the served data would go stale."""
    if config.max_input_age is None:
        return
    from convsum.reporting.human import duration

    limit = duration(config.max_input_age)
    if newest is None:
        raise InputError(f"no input row at all, so none newer than max_input_age {limit}")
    age = (datetime.now(UTC) - newest).total_seconds()
    if age > config.max_input_age:
        msg = (
            f"the newest input row is from {_iso(newest)}, {duration(age)} ago: older than "
            f"max_input_age {limit} (have the logs stopped arriving?); nothing published"
        )
        raise InputError(msg)


@contextmanager
def _writing(out: str) -> Iterator[None]:
    """Turn a failure to write the output (disk full, permissions) into one clear error."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out
        msg = (
            f"{out}: cannot write the output at {where} ({exc.strerror or exc}); nothing published"
        )
        raise PublishError(msg) from exc
    # The state store's catalog (a commit that cannot write its log fails as a transaction; a
    # checkpoint as "fatal" to the connection only, which the run drops), or DuckDB's spill files.
    except (duckdb.IOException, duckdb.TransactionException, duckdb.FatalException) as exc:
        msg = f"{out}: cannot write the output ({first_line(exc)}); nothing published"
        raise PublishError(msg) from exc


def _derive_and_write(
    config: RunConfig,
    affected: _Affected,
    state: Catalog,
    run_id: str,
    work: Path,
    writer: Writer,
    log: RunLog,
    tree: Path,
) -> tuple[Facts, Tally, Written]:
    """Run the engine; write every page and summary asked for, and the tables into `tree`.

    The facts and conversation tallies are the served tree's (none for a full run) plus those
    of the touched ids' rows now, less theirs before (for a full run, every row is touched and
    none was there before). The pages and the tables come from `affected.rows`. Returns the
    tree's facts, the new tallies and the table files written.
    """
    engine = get_engine(config.engine, config.threads, config.spark_master, config.spark)

    def settings(directory: Path, conversations: Path | None = None) -> EngineSettings:
        directory.mkdir(exist_ok=True)
        return EngineSettings(
            directory, config.threads, config.memory_limit, conversations=conversations,
            page_size=config.page_size,
        )  # fmt: skip

    with ExitStack() as engine_scope:
        with log.stage("derive") as stage:
            now, was = work / "tally-now.parquet", None
            if affected.touched is None:
                derived = engine_scope.enter_context(engine.derive(affected.rows, settings(work)))
                facts = tally(derived, now)
            else:
                after, before = affected.touched
                was = work / "tally-before.parquet"
                with engine.derive(after, settings(work / "after")) as changed:
                    facts_now = tally(changed, now)
                with engine.derive(before, settings(work / "before")) as changed:
                    facts_before = tally(changed, was)
                facts = (state.facts() or Facts()).plus(facts_now, facts_before)
                rows = settings(work / "rows", affected.conversations)
                derived = engine_scope.enter_context(engine.derive(affected.rows, rows))
            tallies = merge(state, now, was, affected.conversations, work)
            facts = replace(facts, owners=tallies.owners, participants=tallies.participants)
            stage.set(messages=facts.messages, participants=tallies.participants)
            summaries_total, pages_total = files_to_write(state, tallies, config.page_size)
        if config.only != "summaries":
            with log.stage("pages") as stage:
                if affected.touched is None:  # an update's pages start where its changes do
                    stage.expect(files=pages_total * len(_orders(config)))
                for order in _orders(config):
                    publish_stream(derived, writer, Pages(order), config.page_size, stage)
        with log.stage("summaries") as stage:
            stage.expect(files=summaries_total)
            summaries = Summaries(tallies.counts)
            publish_stream(derived, writer, summaries, config.page_size, stage)
        with log.stage("tables") as stage:
            tables = write_tables(
                derived.relations(), tree, work, run_id, affected.days,
                lambda target: write_conversations(state, tallies, target),
                memory_budget(config.memory_limit),
            )  # fmt: skip
            stage.set(files=sum(map(len, tables.files.values())))
    return facts, tallies, tables


def _history(config: RunConfig, report: RunReport, started: datetime) -> RunRecord:
    """Return the run's row of the `runs` table: its report and how it ran."""
    return RunRecord(report, config.engine, __version__, started)


def _manifest(
    config: RunConfig,
    sources: list[Source],
    report: RunReport,
    placed: _Placed,
    started: datetime,
    previous_run_id: str | None,
) -> dict[str, Any]:
    files, changes = placed.files, placed.changes
    full = changes is None
    return {
        "run_id": report.run_id,
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "newest_input": report.newest_input,
        "convsum_version": __version__,
        "engine": config.engine,
        "inputs": describe_inputs(sources),
        "config": config.to_dict(),
        "layout": {
            "version": LAYOUT_VERSION,
            "api_root": API,
            "page_size": config.page_size,
            "orders": list(_orders(config)),
            "gzip": config.gzip,
        },
        "counts": {
            k: v
            for k, v in as_dict(report).items()
            if k not in ("run_id", "newest_input", "stages")
        },
        "files": {"list": FILE_LIST, "count": files},
        # The files this run changed since the run `previous_run_id`, for a downstream sync
        # (publish/sync.py): after a full run every file is new.
        "changes": {
            "full": full,
            "written": FILE_LIST if full else WRITTEN_LIST,
            "written_count": files if full else (changes or {})["written"],
            "removed": REMOVED_LIST,
            "removed_count": report.files.files_removed if full else (changes or {})["removed"],
            "previous_run_id": previous_run_id,
        },
    }


def _orders(config: RunConfig) -> tuple[Literal["asc", "desc"], ...]:
    """Return the orders whose pages this run writes (none with `only = "summaries"`)."""
    if config.only == "summaries":
        return ()
    return ("asc", "desc") if config.desc_pages else ("asc",)


def _conversation_paths(conversations: Path) -> Iterator[str]:
    table = pq.read_table(conversations, columns=["owner", "participant"])
    owners, participants = (column.to_pylist() for column in table.columns)
    for owner, participant in zip(owners, participants, strict=True):
        yield conversation_path(owner, participant)
