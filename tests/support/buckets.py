"""Trees to sync: days of inputs, the runs that publish them, and `convsum sync` to a bucket."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from convsum.cli import cli
from convsum.config import RunConfig
from convsum.results import RunReport
from convsum.run import run_job
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, at, message, status, write_parquet
from tests.support.s3server import S3Server

PREFIX = "api/v1"


def write_day(inputs: Path, day: int, participants: range) -> None:
    """One day's messages: three to each participant, and the replies of every third."""
    rows, statuses = [], []
    for p in participants:
        for k in range(3):
            id = f"d{day}-p{p}-{k}"
            created = at(day * 86_400 + p * 10 + k)
            rows.append(message(id, recipient=f"4670000{p:04d}", created=created))
            statuses.append(status(id, 201 if k else 101, created=created))
        if p % 3 == 0:
            rows.append(
                message(f"d{day}-r{p}", sender=f"4670000{p:04d}", recipient="Acme",
                        direction="mo", created=at(day * 86_400 + p * 10 + 5))
            )  # fmt: skip
    write_parquet(inputs / "messages" / f"day={day}" / "part.parquet", rows, MESSAGE_TYPES)
    write_parquet(inputs / "statuses" / f"day={day}" / "part.parquet", statuses, STATUS_TYPES)


def run(inputs: Path, out: Path, full: bool = False, gzip: bool = False) -> RunReport:
    roles = {role: str(inputs / role) for role in ("messages", "statuses")}
    return run_job(RunConfig(**roles, out=str(out), page_size=2, gzip=gzip), full=full)


def sync(s3: S3Server, out: Path, bucket: str, *args: str, **env: str) -> Result:
    return CliRunner().invoke(
        cli, ["sync", str(out), f"s3://{bucket}/{PREFIX}", "--report", *args], env=s3.env(**env)
    )


def served_files(out: Path) -> list[str]:
    """Every file of the served tree, as `files.txt` lists them."""
    return (out / "current" / "files.txt").read_text().splitlines()
