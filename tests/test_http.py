"""End to end: the installed `convsum`, a real nginx with the generated configuration, real HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings

from convsum.publish.nginx import BucketOrigin, render
from convsum.publish.paths import (
    SUMMARY_FILE,
    conversation_file,
    conversation_path,
    is_servable,
    page_file,
)
from convsum.publish.storage import Storage
from tests.support.data import SPEC_EXAMPLE
from tests.support.names import ODD_NAMES, SERVABLE_NAMES
from tests.support.nginx import (
    SOURCES,
    STORED,
    Response,
    Server,
    get,
    nginx_running,
    nginx_serving,
    published,
)
from tests.support.ports import free_port
from tests.support.s3server import S3Server

pytestmark = pytest.mark.http


@pytest.fixture(scope="module", params=SOURCES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http")
    inputs, out = published(tmp)
    s3 = request.getfixturevalue("s3") if request.param == "bucket" else None
    with nginx_serving(out, tmp / "nginx", s3) as base:
        yield Server(base, tmp, pq.read_table(inputs / "messages"))


def test_http_summary_is_the_spec_example(server: Server) -> None:
    reply = server.get("ip1-100", "46734487112", "/summary")
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert reply.json() == SPEC_EXAMPLE


@pytest.mark.parametrize("suffix", ["", "/mt", "/mo"])
def test_http_pages_list_the_whole_conversation_in_order(server: Server, suffix: str) -> None:
    pages = server.all_pages("ip1-100", "46734487112", suffix)
    assert all(len(page) == 50 for page in pages[:-1]) and 0 < len(pages[-1]) <= 50
    ids = [m["id"] for page in pages for m in page]
    assert ids == server.expected_ids("ip1-100", "46734487112", suffix[1:] or None)


def test_http_descending_pages_are_the_exact_reverse(server: Server) -> None:
    asc = [m for page in server.all_pages("ip1-100", "46734487112") for m in page]
    desc = [m for page in server.all_pages("ip1-100", "46734487112", order="DESC") for m in page]
    assert desc == list(reversed(asc))
    assert server.get("ip1-100", "46734487112", "", "order=desc").json() == desc[:50]


def test_http_default_and_explicit_limit_agree(server: Server) -> None:
    default = server.get("ip1-100", "46734487112")
    explicit = server.get("ip1-100", "46734487112", "", "start=0&limit=50&order=ASC")
    assert default.status == explicit.status == 200
    assert default.body == explicit.body
    assert len(default.json()) == 50


def test_http_start_past_the_end_is_an_empty_page(server: Server) -> None:
    reply = server.get("ip1-100", "46734487112", "", "start=5000")
    assert (reply.status, reply.content_type, reply.json()) == (200, "application/json", [])


@pytest.mark.parametrize(
    "query", ["start=25", "start=-50", "start=abc", "limit=10", "limit=51", "order=sideways"]
)
def test_http_unservable_pagination_is_a_json_400(server: Server, query: str) -> None:
    reply = server.get("ip1-100", "46734487112", "", query)
    assert (reply.status, reply.content_type) == (400, "application/json")
    assert reply.json()["status"] == 400


@pytest.mark.parametrize("suffix", ["", "/mt", "/mo", "/summary"])
def test_http_unknown_participant_is_a_json_404(server: Server, suffix: str) -> None:
    reply = server.get("ip1-100", "46000000000", suffix)
    assert (reply.status, reply.content_type) == (404, "application/json")
    assert reply.json()["status"] == 404


def test_http_participant_of_another_owner_is_not_found(server: Server) -> None:
    assert server.get("ip1-100", "46700000100", "/summary").status == 200
    for suffix in ("", "/mo", "/summary"):
        assert server.get("acme", "46700000100", suffix).status == 404
        assert server.get("nobody", "46700000100", suffix).status == 404


def test_http_list_of_a_direction_the_participant_lacks_is_empty(server: Server) -> None:
    t = server.messages
    mo_only = sorted(
        set(t.filter(pc.equal(t["direction"], "mo"))["sender"].to_pylist())
        - set(t.filter(pc.equal(t["direction"], "mt"))["recipient"].to_pylist())
    )[0]
    assert server.get("ip1-100", mo_only, "/mo").json()
    reply = server.get("ip1-100", mo_only, "/mt")
    assert (reply.status, reply.json()) == (200, [])


@pytest.mark.parametrize("name", [n for n in ODD_NAMES if is_servable(n)])
def test_http_every_servable_name_is_reachable(server: Server, name: str) -> None:
    as_participant = server.get("acme", name, "/summary")
    assert as_participant.status == 200, name
    assert as_participant.json()["participant"] == name
    assert [m["id"] for m in server.get("acme", name).json()] == server.expected_ids("acme", name)
    as_owner = server.get(name, "46734487112")
    assert as_owner.status == 200, name
    assert [m["owner"] for m in as_owner.json()] == [name]


@dataclass
class Origin:
    """nginx with the generated configuration, serving files that a test puts there one by one."""

    base: str
    put: Callable[[str, bytes], None]  # (path under the served root, body)


@pytest.fixture(scope="module", params=STORED)
def origin(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Origin]:
    """nginx serving files put as the tree or the bucket would store them (STORED)."""
    tmp = tmp_path_factory.mktemp("origin")
    port = free_port()
    source: Path | BucketOrigin
    storage = Storage(gzip=request.param.endswith("-gzip"))
    if request.param.startswith("tree"):
        source = root = tmp / "api"

        def put(path: str, body: bytes) -> None:
            stored = root / (path + storage.suffix)
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(storage.encode(body))

    else:
        s3: S3Server = request.getfixturevalue("s3")
        bucket, client = s3.new_bucket(public_prefix="api"), s3.client()
        source = BucketOrigin.of(s3.endpoint, bucket, "api")
        encoding = {"ContentEncoding": "gzip"} if storage.gzip else {}

        def put(path: str, body: bytes) -> None:
            client.put_object(
                Bucket=bucket, Key=f"api/{path}", Body=storage.encode(body),
                ContentType="application/json", **encoding,
            )  # fmt: skip

    user = "root" if os.geteuid() == 0 else None
    conf = render(source, f"127.0.0.1:{port}", 50, ["asc"], user, api=None)
    with nginx_running(conf, tmp / "nginx", port) as base:
        yield Origin(base, put)


@settings(deadline=None)
@given(owner=SERVABLE_NAMES, participant=SERVABLE_NAMES)
def test_http_server_finds_any_servable_name_where_the_writer_put_it(
    origin: Origin, owner: str, participant: str
) -> None:
    conversation = conversation_path(owner, participant)
    summary = orjson.dumps({"participant": participant, "owner": owner})
    page = orjson.dumps([owner, participant])
    origin.put(conversation_file(conversation, SUMMARY_FILE), summary)
    origin.put(conversation_file(conversation, page_file(50, "all", "asc", 0)), page)
    assert get(origin.base, owner, participant, "/summary") == Response(
        200, "application/json", summary
    )
    assert get(origin.base, owner, participant) == Response(200, "application/json", page)


def test_http_no_file_is_written_outside_the_output_root(server: Server) -> None:
    assert sorted(p.name for p in server.root.iterdir()) == ["in", "nginx", "out"]
    out = server.root / "out"
    synced = [".sync"] if (out / ".sync").exists() else []  # the record of a sync
    assert sorted(p.name for p in out.iterdir()) == [
        ".convsum",
        ".lock",
        *synced,
        "current",
        "history.jsonl",
        "trees",
    ]
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve()), path
