"""Readers of the API while an incremental run rewrites it: every answer whole, old or new."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.support.data import DAYS, DEMO
from tests.support.nginx import Response, Server, nginx_serving
from tests.support.processes import BIN

pytestmark = pytest.mark.http


def _land(inputs: Path, days: tuple[str, ...]) -> None:
    for role in ("messages", "statuses"):
        for day in days:
            shutil.copytree(DEMO / role / day, inputs / role / day)


def _run(inputs: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            BIN / "convsum", "run", "--messages", inputs / "messages",
            "--statuses", inputs / "statuses", "--out", out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_http_readers_during_an_update_see_each_file_old_or_new_never_torn(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _land(inputs, DAYS[:1])
    first = _run(inputs, out)
    assert first.communicate()[1] is not None and first.returncode == 0
    table = ds.dataset(DEMO / "messages", partitioning="hive").to_table(
        columns=["owner", "sender", "recipient"]
    )
    pairs = sorted(
        {(o, p) for o, s, r in zip(*(c.to_pylist() for c in table.columns), strict=True)
         for p in (s, r)}
    )  # fmt: skip
    requests = [
        (owner, participant, suffix, query)
        for owner, participant in pairs
        for suffix, query in (("/summary", ""), ("", "start=0"), ("", "start=50"), ("/mt", ""))
    ]
    with nginx_serving(out, tmp_path / "nginx") as base:
        server = Server(base, tmp_path, table)
        old = {r: server.get(*r) for r in requests}
        _land(inputs, DAYS[1:])
        seen: list[tuple[tuple[str, str, str, str], Response]] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for request in requests:
                    seen.append((request, server.get(*request)))

        reader = threading.Thread(target=read)
        reader.start()
        update = _run(inputs, out)
        _, errors = update.communicate()
        stop.set()
        reader.join()
        assert update.returncode == 0, errors.decode()
        new = {r: server.get(*r) for r in requests}
    assert sum(old[r] != new[r] for r in requests) > len(requests) // 4, "too little changed"
    assert len(seen) > len(requests), "the readers did not overlap the update"
    for request, reply in seen:
        if reply.status == 200:
            reply.json()  # whole JSON, never a torn file
        assert reply in (old[request], new[request]), request
