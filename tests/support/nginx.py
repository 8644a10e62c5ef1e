"""A real nginx with the generated configuration, serving a published tree or a bucket, and the
replies it gives a client."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from convsum.publish.nginx import MODULE_DIR, MODULES
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet
from tests.support.data import SAMPLES
from tests.support.names import ODD_NAMES
from tests.support.ports import free_port, listening
from tests.support.processes import BIN
from tests.support.s3server import S3Server


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def get(base: str, owner: str, participant: str, suffix: str = "", query: str = "") -> Response:
    """GET a conversation's endpoint, each name percent-encoded as a client would."""
    url = f"{base}/{quote(owner, safe='')}/v2/conversations/{quote(participant, safe='')}"
    url += suffix + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return Response(reply.status, reply.headers["Content-Type"], reply.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers["Content-Type"], error.read())


@dataclass
class Server:
    base: str
    root: Path
    messages: pa.Table

    def get(self, owner: str, participant: str, suffix: str = "", query: str = "") -> Response:
        return get(self.base, owner, participant, suffix, query)

    def expected_ids(self, owner: str, participant: str, direction: str | None = None) -> list[str]:
        t = self.messages
        mask = pc.and_(
            pc.equal(t["owner"], owner),
            pc.or_(pc.equal(t["sender"], participant), pc.equal(t["recipient"], participant)),
        )
        if direction:
            mask = pc.and_(mask, pc.equal(t["direction"], direction))
        rows = t.filter(mask).sort_by([("created", "ascending"), ("id", "ascending")])
        return rows["id"].to_pylist()

    def all_pages(
        self, owner: str, participant: str, suffix: str = "", order: str = "ASC"
    ) -> list[list[dict[str, Any]]]:
        pages, start = [], 0
        while True:
            reply = self.get(owner, participant, suffix, f"start={start}&order={order}")
            assert reply.status == 200, reply
            assert reply.content_type == "application/json"
            page = reply.json()
            if not page:
                return pages
            pages.append(page)
            start += 50


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if found is None:
        pytest.fail("nginx is not installed: .ci/run installs it (apt-get install nginx)")
    absent = [m for m in MODULES if not Path(MODULE_DIR, m).exists()]
    if absent:
        pytest.fail(
            f"nginx modules {absent} are not in {MODULE_DIR}: .ci/run installs them "
            "(apt-get install libnginx-mod-http-set-misc libnginx-mod-http-ndk)"
        )
    return found


SPEC_CREATED = datetime(2018, 10, 2, tzinfo=UTC)


def _odd_inputs(directory: Path) -> None:
    """Messages whose owners and participants have every kind of awkward name."""
    rows, statuses = [], []
    for i, name in enumerate(ODD_NAMES):
        if name == "":
            continue
        rows.append(message(f"odd-p{i}", owner="acme", sender="Acme", recipient=name, created=None))
        rows.append(message(f"odd-o{i}", owner=name, sender="Shop1", recipient="46734487112"))
        statuses.append(status(f"odd-p{i}", 201))
    for row in rows:
        row["created"] = SPEC_CREATED
        row["modified"] = None
    write_parquet(directory / "messages" / "odd.parquet", rows, MESSAGE_TYPES)
    write_parquet(directory / "statuses" / "odd.parquet", statuses, STATUS_TYPES)


def published(tmp: Path, *options: str, out: str = "out") -> tuple[Path, Path]:
    """Publish the API example and every awkward name under `tmp` (with `options` for the
    run, into `tmp/out`): (inputs, output root). The inputs are written once."""
    inputs = tmp / "in"
    if not inputs.exists():
        for name in ("messages", "statuses"):
            (inputs / name).mkdir(parents=True)
            shutil.copy(SAMPLES / "api_example" / f"{name}.parquet", inputs / name / "api.parquet")
        _odd_inputs(inputs)
    root = tmp / out
    run = [BIN / "convsum", "run", "--messages", inputs / "messages"]
    run += ["--statuses", inputs / "statuses", "--out", root, "--desc-pages", *options]
    subprocess.run(run, check=True, capture_output=True)
    return inputs, root


# Where nginx reads the tree: the output root, or a bucket it was synced to (nginx as a proxy).
SOURCES = ["tree", "bucket"]
# The same, of a tree stored gzip-compressed (`run --gzip`) as well.
STORED = [*SOURCES, "tree-gzip", "bucket-gzip"]


def run_options(source: str) -> list[str]:
    """The options of the run that publishes a tree for `source` (one of STORED)."""
    return ["--gzip"] if source.endswith("-gzip") else []


# The unauthenticated URL space /{owner}/v2/... that tests/test_http.py and its neighbours read
# (the authenticated API is tests/test_http_api.py's).
OWNER_IN_PATH = ("--owner-in-path",)


@contextmanager
def nginx_serving(
    out: Path, prefix: Path, s3: S3Server | None = None, options: tuple[str, ...] = OWNER_IN_PATH
) -> Iterator[str]:
    """Serve the output root `out` with a real nginx and the generated configuration; with
    `s3`, sync `out` to a new bucket of that server and serve the bucket instead. `options`
    go to `nginx-conf`: by default the owner-prefixed URL space (OWNER_IN_PATH)."""
    port = free_port()
    user = ["--user", "root"] if os.geteuid() == 0 else []
    source: list[str | Path] = [out, *options]
    env = None
    if s3 is not None:
        bucket, env = s3.new_bucket(public_prefix="api"), s3.env()
        sync = [BIN / "convsum", "sync", out, f"s3://{bucket}/api"]
        subprocess.run(sync, check=True, capture_output=True, env=env)
        source = [out, "--from", f"s3://{bucket}/api", *options]  # out: the token store
    conf = subprocess.run(
        [BIN / "convsum", "nginx-conf", *source, "--listen", f"127.0.0.1:{port}", *user],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    with nginx_running(conf, prefix, port) as base:
        yield base


@contextmanager
def nginx_running(conf: str, prefix: Path, port: int) -> Iterator[str]:
    """Run a real nginx with the configuration `conf` (listening on `port`) under `prefix`."""
    nginx = _nginx()
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if not listening(port, process, 10):
            process.terminate()
            err = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"nginx did not start: {err}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
