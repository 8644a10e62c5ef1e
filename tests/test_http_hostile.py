"""End to end against hostile input: an output root whose path nginx's syntax gives meaning to."""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet
from tests.test_http import BIN, Response, nginx_serving

pytestmark = pytest.mark.http

# Every character nginx's configuration syntax gives a meaning to, and `$` forms that would name
# variables if they were interpolated.
HOSTILE_DIR = "out a;b{c}\"d'e\\f#g\nh\tü $uri ${host} $"
PARTICIPANT = "46700000001"
# Two owners whose names are prefixes of each other, with different data for one participant.
OWNERS = {"acm": 1, "acme": 2}


def _summary(count: int) -> dict[str, Any]:
    return {
        "participant": PARTICIPANT,
        "totalMessageCount": count,
        "totalSmsCount": count,
        "mobileTerminatedMessages": {"201": {"messages": count, "sms": count}},
        "mobileOriginatedMessages": {},
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hostile")
    rows = [
        message(f"{owner}-{i}", owner=owner, sender="Shop1", recipient=PARTICIPANT)
        for owner, count in OWNERS.items()
        for i in range(count)
    ]
    write_parquet(tmp / "in" / "messages" / "m.parquet", rows, MESSAGE_TYPES)
    statuses = [status(str(row["id"]), 201) for row in rows]
    write_parquet(tmp / "in" / "statuses" / "s.parquet", statuses, STATUS_TYPES)
    inputs = ["--messages", tmp / "in" / "messages", "--statuses", tmp / "in" / "statuses"]
    subprocess.run(
        [BIN / "convsum", "run", *inputs, "--out", tmp / "out"],
        check=True,
        capture_output=True,
    )
    # Moved rather than published there: the run's own writer does not take every such path.
    out = (tmp / "out").rename(tmp / HOSTILE_DIR)
    with nginx_serving(out, tmp / "nginx") as url:
        yield url


def _request(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
    """Send `path` exactly as written (no normalising client in between)."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        return Response(reply.status, reply.headers["Content-Type"], reply.read())
    finally:
        connection.close()


def test_http_hostile_root_path_is_served(base: str) -> None:
    reply = _request(base, "GET", f"/acme/v2/conversations/{PARTICIPANT}/summary")
    assert (reply.status, reply.content_type, reply.json()) == (
        200,
        "application/json",
        _summary(OWNERS["acme"]),
    )
