"""The read API served from a bucket answers exactly as the one served from the local tree."""

from __future__ import annotations

import gzip
import http.client
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow.parquet as pq
import pytest

from tests.support.nginx import nginx_serving, published
from tests.support.s3server import S3Server

pytestmark = pytest.mark.http

SUFFIXES = ["", "/mt", "/mo", "/summary"]
QUERIES = ["", "start=50&limit=50&order=desc", "start=5000", "start=25", "limit=10"]
# Requests that are not a conversation's: unknown names, other routes, refused paths and methods.
OTHERS = [
    ("GET", "/ip1-100/v2/conversations/46000000000"),
    ("GET", "/ip1-100/v2/conversations/46000000000/summary"),
    ("GET", "/nobody/v2/conversations/46734487112/summary"),
    ("GET", "/"),
    ("GET", "/manifest.json"),
    ("GET", "/ip1-100/v2/conversations"),
    ("GET", "/ip1-100/v2/conversations/46734487112/all"),
    ("GET", "/ip1-100/..%2Fip1-100/v2/conversations/46734487112/summary"),
    ("GET", "/ip1-100/v2/conversations/46734487112/summary?versionId=1&acl"),
    ("HEAD", "/ip1-100/v2/conversations/46734487112/summary"),
    ("POST", "/ip1-100/v2/conversations/46734487112/summary"),
    ("DELETE", "/ip1-100/v2/conversations/46734487112"),
]


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str | None
    encoding: str | None
    vary: str | None
    body: bytes


def _exchange(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> _Reply:
    """An answer, as sent."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        body = reply.read()
        fields = (reply.headers[name] for name in ("Content-Type", "Content-Encoding", "Vary"))
        return _Reply(reply.status, *fields, body)
    finally:
        connection.close()


def _answer(
    base: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str | None, bytes]:
    """The status, type and body of an answer; a gzip-encoded body decoded."""
    reply = _exchange(base, method, path, headers)
    body = reply.body
    if reply.encoding == "gzip":
        assert headers, (method, path)  # only to a client that accepts it
        body = gzip.decompress(body)
    return reply.status, reply.content_type, body


def _requests(inputs: Path) -> list[tuple[str, str]]:
    """The others first, while nginx's cache is empty (each of them reaches the bucket), then
    every list and summary of every conversation."""
    messages = pq.read_table(inputs / "messages").to_pylist()
    conversations = sorted(
        {(m["owner"], m[side]) for m in messages for side in ("sender", "recipient")}
    )
    return OTHERS + [
        ("GET", f"/{quote(owner, safe='')}/v2/conversations/{quote(name, safe='')}{suffix}"
                + (f"?{query}" if query else ""))
        for owner, name in conversations
        for suffix in SUFFIXES
        for query in (QUERIES if suffix != "/summary" else [""])
    ]  # fmt: skip


def test_http_bucket_answers_every_request_as_the_tree_does(s3: S3Server, tmp_path: Path) -> None:
    inputs, out = published(tmp_path)
    requests = _requests(inputs)
    with (
        nginx_serving(out, tmp_path / "nginx-tree") as tree,
        nginx_serving(out, tmp_path / "nginx-bucket", s3) as bucket,
    ):
        for method, path in requests:
            assert _answer(bucket, method, path) == _answer(tree, method, path), (method, path)
    assert len(requests) > 500


def test_http_a_gzip_tree_and_its_bucket_answer_as_the_plain_tree_does(
    s3: S3Server, tmp_path: Path
) -> None:
    """Every client gets the plain tree's bytes, once decoded: gzip only if it accepts it."""
    inputs, plain = published(tmp_path)
    _, packed = published(tmp_path, "--gzip", out="gzip")
    stored = {path.suffix for path in (packed / "current" / "api").rglob("*") if path.is_file()}
    assert stored == {".gz"}
    requests = _requests(inputs)
    with (
        nginx_serving(plain, tmp_path / "nginx-plain") as reference,
        nginx_serving(packed, tmp_path / "nginx-gzip") as tree,
        nginx_serving(packed, tmp_path / "nginx-bucket", s3) as bucket,
    ):
        for method, path in requests:
            expected = _answer(reference, method, path)
            for base in (tree, bucket):
                assert _answer(base, method, path) == expected, (base, method, path)
                accepts = _answer(base, method, path, {"Accept-Encoding": "gzip"})
                assert accepts == expected, (base, method, path)
        # A client that accepts gzip gets the stored bytes as they are.
        summary = requests[-1][1]
        assert summary.endswith("/summary")
        for base in (tree, bucket):
            reply = _exchange(base, "GET", summary, {"Accept-Encoding": "gzip"})
            assert reply.encoding == "gzip", base
            assert reply.vary == "Accept-Encoding", base
