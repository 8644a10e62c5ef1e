"""One run of the job: inputs -> engine -> published tree, manifest and run report."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from convsum import __version__
from convsum.config import RunConfig
from convsum.engines import EngineSettings, get_engine
from convsum.engines.base import report_counts
from convsum.errors import PublishError
from convsum.inputs import StagedInputs, stage_inputs
from convsum.publish.manifest import (
    MANIFEST,
    REPORT,
    describe_inputs,
    sort_file_list,
    write_json,
)
from convsum.publish.pages import conversation_pages
from convsum.publish.paths import SUMMARY_FILE, conversation_dir, page_file
from convsum.publish.tree import API, FILE_LIST, OutputRoot, TreeWriter

Progress = Callable[[str], None]


class _Stages:
    """Wall time of each stage, in the order they ran."""

    def __init__(self, progress: Progress) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)


def new_run_id() -> str:
    """Return a sortable, unique run id: UTC start time and a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_job(config: RunConfig, progress: Progress = lambda _stage: None) -> dict[str, Any]:
    """Run the job described by `config`; return the run report.

    Nothing is published unless every stage succeeds: the new tree is built beside the served
    one and switched in at the end.
    """
    root = OutputRoot(Path(config.out))
    with root.locked():
        return _locked_run(config, root, progress)


def _locked_run(config: RunConfig, root: OutputRoot, progress: Progress) -> dict[str, Any]:
    run_id, started = new_run_id(), datetime.now(UTC)
    partial, work = root.prepare(run_id)
    stages = _Stages(progress)
    try:
        with stages.stage("read"):
            staged = stage_inputs(config, work)
        with _writing(config.out), TreeWriter(partial) as writer:
            counts = _derive_and_write(config, staged, work, writer, stages)
            with stages.stage("index"):
                removed = sort_file_list(writer.close(), partial, root.published())
        report = {
            "run_id": run_id,
            "rows_read": dict(staged.rows_read),
            "files_read": {role: len(paths) for role, paths in staged.files_read.items()},
            **counts,
            "files_written": writer.files,
            "files_removed": removed,
            "bytes_written": writer.bytes,
            "stages": dict(stages.seconds),
        }
        with _writing(config.out):
            write_json(partial / REPORT, report)
            write_json(partial / MANIFEST, _manifest(config, staged, report, writer, started))
            root.publish(partial, run_id)
    except BaseException:
        root.discard(partial, work)
        raise
    root.discard(work)
    return report


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


def _derive_and_write(
    config: RunConfig, staged: StagedInputs, work: Path, writer: TreeWriter, stages: _Stages
) -> dict[str, Any]:
    """Run the engine and write every page and summary; return the engine's counts."""
    engine = get_engine(config.engine, config.threads)
    settings = EngineSettings(work, config.threads, config.memory_limit)
    with ExitStack() as engine_scope:
        with stages.stage("derive"):
            derived = engine_scope.enter_context(engine.derive(staged, settings))
            counts = report_counts(derived.counts(), staged.rows_read)
        if config.only != "summaries":
            with stages.stage("pages"):
                for order in _orders(config):
                    rows = derived.conversation_rows(descending=order == "desc")
                    _write_pages(writer, rows, config.page_size, order)
        with stages.stage("summaries"):
            _write_summaries(writer, derived.summaries())
    return counts


def _manifest(
    config: RunConfig,
    staged: StagedInputs,
    report: dict[str, Any],
    writer: TreeWriter,
    started: datetime,
) -> dict[str, Any]:
    return {
        "run_id": report["run_id"],
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "convsum_version": __version__,
        "engine": config.engine,
        "inputs": describe_inputs(dict(staged.files_read)),
        "config": config.to_dict(),
        "layout": {
            "api_root": API,
            "page_size": config.page_size,
            "orders": list(_orders(config)),
        },
        "counts": {k: v for k, v in report.items() if k not in ("run_id", "stages")},
        "files": {"list": FILE_LIST, "count": writer.files, "bytes": writer.bytes},
    }


def _orders(config: RunConfig) -> tuple[str, ...]:
    """Return the orders whose pages this run writes (none with `only = "summaries"`)."""
    if config.only == "summaries":
        return ()
    return ("asc", "desc") if config.desc_pages else ("asc",)


def _write_pages(
    writer: TreeWriter, rows: Iterable[pa.RecordBatch], page_size: int, order: str
) -> None:
    last: tuple[str, str] | None = None
    directory = ""
    for page in conversation_pages(rows, page_size):
        if (page.owner, page.participant) != last:
            last = (page.owner, page.participant)
            directory = conversation_dir(page.owner, page.participant)
        writer.write(
            f"{directory}/{page_file(page_size, page.list_name, order, page.start)}", page.body
        )


def _write_summaries(writer: TreeWriter, batches: Iterable[pa.RecordBatch]) -> None:
    for batch in batches:
        owners, participants, bodies = (column.to_pylist() for column in batch.columns)
        for owner, participant, body in zip(owners, participants, bodies, strict=True):
            writer.write(f"{conversation_dir(owner, participant)}/{SUMMARY_FILE}", body.encode())
