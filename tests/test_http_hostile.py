"""End to end against hostile clients: odd methods, broken requests, and paths that try to cross
from one owner's tree into another's, served from an output root whose path is hostile too."""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet
from tests.support.names import HOSTILE, MALFORMED, NO_ROUTE, SUMMARY, TRAVERSALS
from tests.support.nginx import SOURCES, Response, nginx_serving
from tests.support.processes import BIN

pytestmark = pytest.mark.http

# Every character nginx's configuration syntax gives a meaning to, and `$` forms that would name
# variables if they were interpolated.
HOSTILE_DIR = "out a;b{c}\"d'e\\f#g\nh\tü $uri ${host} $"
PARTICIPANT = "46700000001"
# Two owners whose names are prefixes of each other, with different data for one participant.
OWNERS = {"acm": 1, "acme": 2}
# A participant whose name a client may spell in several ways (see SPELLINGS).
SPELLED = "Zürich+1 %"

NOT_ALLOWED = {
    "status": 405,
    "error": "Method Not Allowed",
    "message": "only GET and HEAD are served",
}


def _summary(count: int) -> dict[str, Any]:
    return {
        "participant": PARTICIPANT,
        "totalMessageCount": count,
        "totalSmsCount": count,
        "mobileTerminatedMessages": {"201": {"messages": count, "sms": count}},
        "mobileOriginatedMessages": {},
    }


@pytest.fixture(scope="module", params=SOURCES)
def base(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hostile")
    rows = [
        message(f"{owner}-{i}", owner=owner, sender="Shop1", recipient=PARTICIPANT)
        for owner, count in OWNERS.items()
        for i in range(count)
    ]
    rows.append(message("spelled", owner="acm", sender="Shop1", recipient=SPELLED))
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
    s3 = request.getfixturevalue("s3") if request.param == "bucket" else None
    with nginx_serving(out, tmp / "nginx", s3) as url:
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


def _raw(base: str, request: bytes) -> tuple[int, str, Any]:
    """Send bytes no HTTP client would, and return the status, content type and parsed body."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname or "", address.port or 80), 10) as sock:
        sock.sendall(request)
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        return reply.status, reply.headers["Content-Type"], orjson.loads(reply.read())


def test_http_hostile_root_path_is_served(base: str) -> None:
    reply = _request(base, "GET", f"/acme/v2/conversations/{PARTICIPANT}/summary")
    assert (reply.status, reply.content_type, reply.json()) == (
        200,
        "application/json",
        _summary(OWNERS["acme"]),
    )


@pytest.mark.parametrize(("owner", "other"), [("acme", "acm"), ("acm", "acme")])
@pytest.mark.parametrize(("template", "body"), TRAVERSALS)
def test_http_hostile_traversal_never_reaches_another_owner(
    base: str, owner: str, other: str, template: str, body: dict[str, Any]
) -> None:
    reply = _request(base, "GET", template.format(a=owner, b=other))
    assert (reply.status, reply.content_type, reply.json()) == (
        body["status"],
        "application/json",
        body,
    )


# One name, as clients may send it: nginx hashes what it decodes, so each finds the same files.
SPELLINGS = [
    b"Z%C3%BCrich%2B1%20%25",
    b"Z%c3%bcrich%2b1%20%25",
    b"Z\xc3\xbcrich+1%20%25",
    b"%5A%C3%BC%72%69%63%68+%31%20%25",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_http_hostile_every_spelling_of_a_name_finds_it(base: str, spelling: bytes) -> None:
    path = b"/%61cm/v2/conversations/" + spelling + b"/summary"
    status, content_type, body = _raw(base, b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (status, content_type, body["participant"]) == (200, "application/json", SPELLED)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
@pytest.mark.parametrize(
    "path", [f"/acm/{SUMMARY}", "/acm/v2/conversations/46700000001", "/nowhere", "/acm/../x"]
)
def test_http_hostile_method_is_a_json_405_with_allow(base: str, method: str, path: str) -> None:
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
        reply = connection.getresponse()
        answer = (reply.status, reply.headers["Content-Type"], reply.headers["Allow"])
        assert (*answer, orjson.loads(reply.read())) == (
            405,
            "application/json",
            "GET, HEAD",
            NOT_ALLOWED,
        )
    finally:
        connection.close()


def test_http_hostile_head_answers_the_headers_of_get(base: str) -> None:
    get = _request(base, "GET", f"/acm/{SUMMARY}")
    head = _request(base, "HEAD", f"/acm/{SUMMARY}")
    assert (head.status, head.content_type, head.body) == (200, "application/json", b"")
    assert get.json() == _summary(OWNERS["acm"])


def test_http_hostile_range_answers_the_whole_page(base: str) -> None:
    whole = _request(base, "GET", f"/acm/{SUMMARY}")
    for ranges in ("bytes=0-9", "bytes=999999-"):
        part = _request(base, "GET", f"/acm/{SUMMARY}", {"Range": ranges})
        assert part == whole, ranges


HOST = b"Host: localhost\r\n"
ERROR_REQUESTS = [
    (b"GARBAGE\r\n\r\n", 400, MALFORMED),
    (b"get / HTTP/1.1\r\n" + HOST + b"\r\n", 400, MALFORMED),
    (b"GET / HTTP/1.1\r\n\r\n", 400, MALFORMED),
    (b"GET /acm%zz HTTP/1.1\r\n" + HOST + b"\r\n", 400, MALFORMED),
    (b"GET /acm/" + SUMMARY.encode() + b"%00 HTTP/1.1\r\n" + HOST + b"\r\n", 400, MALFORMED),
    (
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"x" * 9000 + b"\r\n\r\n",
        400,
        {"status": 400, "error": "Bad Request", "message": "request header too large"},
    ),
    (
        b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        {"status": 414, "error": "URI Too Long", "message": "request URI too long"},
    ),
    (
        b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 2000000\r\n\r\n",
        413,
        {"status": 413, "error": "Content Too Large", "message": "request body too large"},
    ),
    (
        b"GET / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        501,
        {"status": 501, "error": "Not Implemented", "message": "not implemented"},
    ),
    (
        b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
        505,
        {
            "status": 505,
            "error": "HTTP Version Not Supported",
            "message": "HTTP version not supported",
        },
    ),
    (b"GET /.convsum-error/500 HTTP/1.1\r\n" + HOST + b"\r\n", 404, NO_ROUTE),
    (
        b"GET http://x/acme/../acm/" + SUMMARY.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        HOSTILE,
    ),
]


@pytest.mark.parametrize(("request_bytes", "code", "body"), ERROR_REQUESTS)
def test_http_hostile_error_nginx_raises_is_json(
    base: str, request_bytes: bytes, code: int, body: dict[str, Any]
) -> None:
    assert _raw(base, request_bytes) == (code, "application/json", body)
