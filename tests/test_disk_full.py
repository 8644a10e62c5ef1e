"""A disk that fills up (no byte or no inode left) at any stage: one error line, exit 1.

The output root lives on a small tmpfs of its own (mounting one needs root, as CI has). The job
runs as a process; when it starts the stage under test it is stopped, the file system is filled
to the last byte or inode, and it is let go. It must end with exit 1 and one `error` event, with
no traceback; a full run publishes nothing, and once the disk has room again the next run ends in
exactly the tree of a clean run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from convsum.config import RunConfig
from convsum.run import run_job
from tests.support.data import DAYS, land
from tests.support.processes import CONVSUM, INCREMENTAL_STAGES
from tests.support.trees import published

FULL_STAGES = ("read", "derive", "pages", "summaries", "tables", "index", "state")
TMPFS_OPTIONS = "size=64m,nr_inodes=8192"

pytestmark = [
    pytest.mark.slow,  # left out of make test-fast
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI)"),
]


@pytest.fixture(scope="module")
def clean() -> Iterator[Callable[[str], dict[str, bytes]]]:
    """The tree of a clean run over all three days, by engine (each run once)."""
    trees: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def tree(engine: str) -> dict[str, bytes]:
            if engine not in trees:
                inputs, out = Path(tmp) / engine / "in", Path(tmp) / engine / "out"
                land(inputs, DAYS)
                inputs_of = {role: str(inputs / role) for role in ("messages", "statuses")}
                run_job(RunConfig(**inputs_of, out=str(out), engine=engine))
                trees[engine] = published(out)
            return trees[engine]

        yield tree


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a small tmpfs; unmount it afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=True)


def _fill(disk: Path, what: str) -> None:
    """Take every free byte, or every free inode, of the file system under `disk`."""
    filler = disk / "filler"
    filler.mkdir(exist_ok=True)
    if what == "bytes":
        with (filler / "bytes").open("wb", buffering=0) as handle:
            free = os.statvfs(disk)
            try:
                os.posix_fallocate(handle.fileno(), 0, free.f_bavail * free.f_frsize)
                while True:
                    handle.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        return
    for n in range(os.statvfs(disk).f_favail + 1):
        try:
            (filler / str(n)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return


def _run_filling_at(config: RunConfig, stage: str, what: str, full: bool) -> tuple[int, str]:
    """Run the job, fill the disk when it starts `stage`; return its exit code and stderr."""
    command = [
        CONVSUM, "run", "--messages", config.messages, "--statuses", str(config.statuses),
        "--out", config.out, "--engine", config.engine, "--log-format", "json",
        *(["--full"] if full else []),
    ]  # fmt: skip
    lines = []
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL) as process:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.decode())
            event = orjson.loads(line) if line.startswith(b"{") else {}  # a traceback is not
            if (event.get("event"), event.get("stage")) == ("stage_start", stage):
                process.send_signal(signal.SIGSTOP)
                try:
                    _fill(Path(config.out).parent, what)
                finally:
                    process.send_signal(signal.SIGCONT)
        code = process.wait()
    return code, "".join(lines)


def _case(
    tmp_path: Path,
    disk: Path,
    clean: Callable[[str], dict[str, bytes]],
    engine: str,
    stage: str,
    what: str,
    full: bool,
) -> tuple[Path, dict[str, bytes]]:
    """Publish the first day, land the others, run adding them with the disk filled at `stage`.

    Returns the output root and the tree before.
    """
    inputs, out = tmp_path / "in", disk / "out"
    config = RunConfig(
        messages=str(inputs / "messages"),
        statuses=str(inputs / "statuses"),
        out=str(out),
        engine=engine,
    )
    land(inputs, DAYS[:1])
    run_job(config)
    before = published(out)
    land(inputs, DAYS[1:])
    code, log = _run_filling_at(config, stage, what, full)
    assert all(line.startswith("{") for line in log.splitlines()), log
    events = [orjson.loads(line) for line in log.splitlines()]
    errors = [e for e in events if e["event"] == "error"]
    assert code == 1, log
    assert len(errors) == 1 and "No space left on device" in errors[0]["message"], log
    assert errors[0]["message"].startswith(f"{out}: cannot write the output"), log
    if full:
        assert published(out) == before
    for path in sorted((disk / "filler").iterdir()):
        path.unlink()
    run_job(config)
    assert published(out) == clean(engine)
    return out, before


def _engine_stages(stages: tuple[str, ...]) -> list[tuple[str, str]]:
    """DuckDB at every stage; Polars where it writes files of its own (its work directory)."""
    polars = ("derive", "pages", "summaries")
    return [("duckdb", s) for s in stages] + [("polars", s) for s in stages if s in polars]


@pytest.mark.parametrize(("engine", "stage"), _engine_stages(FULL_STAGES))
def test_disk_full_during_a_full_run(
    tmp_path: Path, disk: Path, clean: Callable[[str], dict[str, bytes]], engine: str, stage: str
) -> None:
    _case(tmp_path, disk, clean, engine, stage, "bytes", full=True)


@pytest.mark.parametrize(("engine", "stage"), _engine_stages(INCREMENTAL_STAGES))
def test_disk_full_during_an_incremental_run(
    tmp_path: Path, disk: Path, clean: Callable[[str], dict[str, bytes]], engine: str, stage: str
) -> None:
    _case(tmp_path, disk, clean, engine, stage, "bytes", full=False)


# The last stage only commits into files that exist: it needs bytes, not inodes.
@pytest.mark.parametrize("stage", INCREMENTAL_STAGES[:-1])
def test_disk_full_of_inodes_during_an_incremental_run(
    tmp_path: Path, disk: Path, clean: Callable[[str], dict[str, bytes]], stage: str
) -> None:
    _case(tmp_path, disk, clean, "duckdb", stage, "inodes", full=False)
