"""The read API served from a bucket answers exactly as the one served from the local tree."""

from __future__ import annotations

import http.client
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


def _answer(base: str, method: str, path: str) -> tuple[int, str | None, bytes]:
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, path)
        reply = connection.getresponse()
        return reply.status, reply.headers["Content-Type"], reply.read()
    finally:
        connection.close()


def test_http_bucket_answers_every_request_as_the_tree_does(s3: S3Server, tmp_path: Path) -> None:
    inputs, out = published(tmp_path)
    messages = pq.read_table(inputs / "messages").to_pylist()
    conversations = sorted(
        {(m["owner"], m[side]) for m in messages for side in ("sender", "recipient")}
    )
    # The others first, while nginx's cache is empty: each of them reaches the bucket.
    requests = OTHERS + [
        ("GET", f"/{quote(owner, safe='')}/v2/conversations/{quote(name, safe='')}{suffix}"
                + (f"?{query}" if query else ""))
        for owner, name in conversations
        for suffix in SUFFIXES
        for query in (QUERIES if suffix != "/summary" else [""])
    ]  # fmt: skip
    with (
        nginx_serving(out, tmp_path / "nginx-tree") as tree,
        nginx_serving(out, tmp_path / "nginx-bucket", s3) as bucket,
    ):
        for method, path in requests:
            assert _answer(bucket, method, path) == _answer(tree, method, path), (method, path)
    assert len(requests) > 500
