"""End to end: the authenticated API at the gateway's paths, served by a real nginx with the
generated configuration and its njs script, read the way a client reads it."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import random
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
from hypothesis import given, settings

from convsum.publish.nginx import OBJECT_URI
from convsum.publish.paths import (
    SUMMARY_FILE,
    conversation_file,
    is_servable,
    name_segments,
    page_file,
)
from convsum.publish.paths import conversation_path as stored_conversation
from convsum.publish.tree import MARK
from convsum.tokens import add_token, import_tokens, revoke_token, token_hash
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, T0, message, status, write_parquet
from tests.support import reference
from tests.support.names import ODD_NAMES, SERVABLE_NAMES, TRAVERSALS
from tests.support.nginx import SOURCES, STORED, nginx_serving, run_options
from tests.support.processes import BIN

pytestmark = pytest.mark.http

SHARED = "46700000001"  # a participant every owner has, with different data each
BULK = "46700000009"  # a conversation of many pages
ODD = [n for n in ODD_NAMES if is_servable(n)]
# Owners whose names are prefixes of each other, one that no URL path could name, and one with
# a conversation of 43 pages.
OWNERS = ("acm", "acme", "ac/me", "bulk")
LIMITS = (1, 7, 50, 100, 1000)
PROBLEM = "application/problem+json"
# A body that holds what a message boundary in a page looks like, once JSON-escaped.
TRICKY_BODY = ': },{"id":"x" ,{"id":\\'


def store_token(out: Path, owner: str, token: str) -> Path:
    """Store `token` for `owner` in the token store; return the file the server reads."""
    import_tokens(out, [f"{owner}\t{token}"])
    entry = out / "tokens" / "owners" / token_hash(token)
    assert entry.read_text() == "/".join(name_segments(owner))
    return entry


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every owner's conversations: lengths around the page size, ties of `created`, a list
    with no mo, odd names, and one conversation of 2,120 messages."""
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    counts = {"acm": (1, 49, 50, 51), "acme": (2, 7, 101, 120), "ac/me": (3, 50, 99)}
    for owner, lengths in counts.items():
        for k, length in enumerate(lengths):
            for i in range(length):
                mo = rng.random() < 0.4 and k != 0  # the first list of each owner has no mo
                other = f"4671{k}{owner.encode().hex()}"
                rows.append(
                    message(
                        f"{owner}-{k}-{i}",
                        owner=owner,
                        sender=other if mo else SHARED,
                        recipient=SHARED if mo else other,
                        direction="mo" if mo else "mt",
                        segments=1 + i % 3,
                        body=f"{owner} {k} {i}" + TRICKY_BODY,
                        created=T0 + timedelta(seconds=rng.randrange(length)),
                    )
                )
    for i, name in enumerate(ODD):
        rows.append(message(f"odd-{i}", owner="acme", sender="Acme", recipient=name))
    for i in range(2120):
        mo = i % 3 == 0
        rows.append(
            message(
                f"bulk-{i:05d}",
                owner="bulk",
                sender="Bulk1" if not mo else BULK,
                recipient=BULK if not mo else "Bulk1",
                direction="mo" if mo else "mt",
                created=T0 + timedelta(seconds=i // 2),
            )
        )
    statuses = [status(str(r["id"]), (201, 102, 402)[n % 3]) for n, r in enumerate(rows) if n % 5]
    return rows, statuses


@dataclass
class Api:
    base: str
    out: Path
    tokens: dict[str, str]  # owner -> token
    lists: dict[tuple[str, str, str], list[dict[str, Any]]]  # (owner, participant, list)
    summaries: dict[tuple[str, str], dict[str, Any]]

    def participants(self, owner: str) -> set[str]:
        return {p for o, p in self.summaries if o == owner}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def links(self) -> dict[str, str]:
        """rel -> path and query of the Link header's URLs."""
        found = re.findall(r'<([^>]+)>; rel="(\w+)"', self.headers.get("Link", ""))
        return {rel: url for url, rel in found}


class Client:
    """One keep-alive connection to the server, as a client library holds it."""

    def __init__(self, base: str, token: str | None) -> None:
        address = urlsplit(base)
        self.base, self.token = base, token
        self.connection = http.client.HTTPConnection(address.hostname or "", address.port)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.connection.request("GET", path, headers={**sent, **(headers or {})})
        reply = self.connection.getresponse()
        return Reply(reply.status, reply.headers, reply.read())

    def follow(self, url: str) -> Reply:
        """GET an absolute URL of a Link header, which must point back at this server."""
        assert url.startswith(self.base + "/v2/conversations/"), url
        return self.get(url.removeprefix(self.base))

    def close(self) -> None:
        self.connection.close()


def conversation_path(participant: str, list_name: str = "all") -> str:
    suffix = "" if list_name == "all" else f"/{list_name}"
    return f"/v2/conversations/{quote(participant, safe='')}{suffix}"


@pytest.fixture(scope="module", params=STORED)
def api(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API of a multi-owner tree, served from the output root or from a bucket, stored as
    served or gzip-compressed."""
    tmp = tmp_path_factory.mktemp("api")
    rows, statuses = _rows()
    write_parquet(tmp / "in" / "messages" / "m.parquet", rows, MESSAGE_TYPES)
    write_parquet(tmp / "in" / "statuses" / "s.parquet", statuses, STATUS_TYPES)
    inputs = ["--messages", tmp / "in" / "messages", "--statuses", tmp / "in" / "statuses"]
    out = tmp / "out"
    run = [BIN / "convsum", "run", *inputs, "--out", out, *run_options(request.param)]
    subprocess.run(run, check=True, capture_output=True)
    tokens = {owner: f"tok-{i}-{hashlib.sha256(owner.encode()).hexdigest()[:24]}"
              for i, owner in enumerate(OWNERS)}  # fmt: skip
    for owner, token in tokens.items():
        store_token(out, owner, token)
    summaries, lists = reference.conversations(rows, statuses)
    s3 = request.getfixturevalue("s3") if request.param.startswith("bucket") else None
    with nginx_serving(out, tmp / "nginx", s3, options=()) as base:
        yield Api(base, out, tokens, lists, summaries)


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    c = Client(api.base, api.tokens["acme"])
    yield c
    c.close()


def _walk(client: Client, participant: str, list_name: str, limit: int, order: str) -> list[Any]:
    """Read a list from start=0 to its end by rel="next", checking each page's Link header."""
    url = f"{client.base}{conversation_path(participant, list_name)}?limit={limit}&order={order}"
    seen: list[Any] = []
    while True:
        reply = client.follow(url)
        assert (reply.status, reply.headers["Content-Type"]) == (200, "application/json"), reply
        page = reply.json()
        assert 0 < len(page) <= limit or seen == page == []
        seen += page
        if "next" not in reply.links:
            return seen
        url = reply.links["next"]


def _expected(api: Api, owner: str, participant: str, list_name: str, order: str) -> list[Any]:
    messages = api.lists.get((owner, participant, list_name), [])
    return messages if order == "ASC" else messages[::-1]


@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize("limit", LIMITS)
def test_http_api_client_following_next_reads_every_list_whole(
    api: Api, limit: int, order: str
) -> None:
    for owner in OWNERS:
        client = Client(api.base, api.tokens[owner])
        try:
            for participant in sorted(api.participants(owner)):
                for list_name in ("all", "mt", "mo"):
                    expected = _expected(api, owner, participant, list_name, order)
                    if limit == 1 and len(expected) > 120:
                        continue  # one request a message: the short lists say it all
                    got = _walk(client, participant, list_name, limit, order)
                    assert got == expected, (owner, participant, list_name)
        finally:
            client.close()


@pytest.mark.parametrize("order", ["asc", "DESC", "Desc"])
@pytest.mark.parametrize("limit", [1, 7, 50, 1000])
def test_http_api_last_then_prev_reads_the_list_backwards(api: Api, limit: int, order: str) -> None:
    client = Client(api.base, api.tokens["bulk"])
    expected = _expected(api, "bulk", BULK, "all", order.upper())
    n = len(expected)
    first = client.get(f"{conversation_path(BULK)}?limit={limit}&order={order}")
    url, pages = first.links["last"], []
    assert f"start={(n - 1) // limit * limit}&" in url
    for _ in range(40 if limit == 1 else n):
        reply = client.follow(url)
        pages.insert(0, reply.json())
        if "prev" not in reply.links:
            break
        url = reply.links["prev"]
    client.close()
    got = [m for page in pages for m in page]
    assert got == (expected if limit > 1 else expected[-40:])


@pytest.mark.parametrize("list_name", ["all", "mt", "mo"])
def test_http_api_any_offset_is_that_slice(api: Api, list_name: str) -> None:
    rng = random.Random(list_name)
    client = Client(api.base, api.tokens["bulk"])
    for _ in range(60):
        order = rng.choice(["ASC", "DESC", "asc", "desc"])
        expected = _expected(api, "bulk", BULK, list_name, order.upper())
        start, limit = rng.randrange(len(expected) + 60), rng.randrange(1, 1001)
        query = f"start={start}&limit={limit}&order={order}"
        reply = client.get(f"{conversation_path(BULK, list_name)}?{query}")
        assert reply.json() == expected[start : start + limit], query
    client.close()


def test_http_api_link_header_is_the_gateways(api: Api, client: Client) -> None:
    reply = client.get(f"{conversation_path(SHARED)}?start=10&limit=20&order=desc")
    n = len(api.lists[("acme", SHARED, "all")])
    base = f"{api.base}/v2/conversations/{SHARED}?start="
    assert reply.headers["Link"] == ", ".join(
        [
            f'<{base}0&limit=20&order=DESC>; rel="first"',
            f'<{base}0&limit=20&order=DESC>; rel="prev"',
            f'<{base}30&limit=20&order=DESC>; rel="next"',
            f'<{base}{(n - 1) // 20 * 20}&limit=20&order=DESC>; rel="last"',
        ]
    )


def test_http_api_last_page_has_no_next_and_first_no_prev(client: Client, api: Api) -> None:
    n = len(api.lists[("acme", SHARED, "all")])
    first = client.get(f"{conversation_path(SHARED)}?limit={n}")
    assert sorted(first.links) == ["first", "last"]
    assert first.links["last"].endswith("?start=0&limit=" + f"{n}&order=ASC")


def test_http_api_link_uses_the_host_the_client_asked(client: Client) -> None:
    reply = client.get(conversation_path(SHARED), {"Host": "api.example:8443"})
    assert reply.links["first"] == (
        f"http://api.example:8443/v2/conversations/{SHARED}?start=0&limit=50&order=ASC"
    )


def test_http_api_untrusted_forwarded_headers_are_ignored(client: Client) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    reply = client.get(conversation_path(SHARED), forwarded)
    assert reply.links["first"].startswith(f"{client.base}/v2/")


def test_http_api_trusted_proxy_forwarded_headers_make_the_links(api: Api, tmp_path: Path) -> None:
    options = ("--trusted-proxy", "127.0.0.0/8", "--trusted-proxy", "::1")
    with nginx_serving(api.out, tmp_path / "nginx", options=options) as base:
        client = Client(base, api.tokens["acme"])
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example, inner"}
        reply = client.get(conversation_path(SHARED), headers)
        client.close()
    assert reply.links["first"] == (
        f"https://api.example/v2/conversations/{SHARED}?start=0&limit=50&order=ASC"
    )


def test_http_api_start_past_the_end_is_an_empty_list(api: Api, client: Client) -> None:
    n = len(api.lists[("acme", SHARED, "all")])
    reply = client.get(f"{conversation_path(SHARED)}?start={n}&limit=7")
    assert (reply.status, reply.json()) == (200, [])
    assert sorted(reply.links) == ["first", "last", "prev"]


def test_http_api_list_of_a_direction_the_participant_lacks_is_empty(api: Api) -> None:
    client = Client(api.base, api.tokens["acm"])
    lacking = next(
        p for o, p in api.summaries if o == "acm" and not api.lists.get(("acm", p, "mo"))
    )
    reply = client.get(conversation_path(lacking, "mo"))
    client.close()
    assert (reply.status, reply.json()) == (200, [])
    assert reply.links["last"].endswith("?start=0&limit=50&order=ASC")


def test_http_api_summary_is_the_token_owners(api: Api) -> None:
    for owner, token in api.tokens.items():
        client = Client(api.base, token)
        for participant in api.participants(owner):
            reply = client.get(conversation_path(participant, "summary"))
            assert (reply.status, reply.headers["Content-Type"]) == (200, "application/json")
            assert reply.json() == api.summaries[(owner, participant)], (owner, participant)
        client.close()


def _assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert (reply.status, reply.headers["Content-Type"]) == (status, PROBLEM), reply
    body: dict[str, Any] = reply.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def test_http_api_no_owner_reads_another_owners_participant(api: Api) -> None:
    for owner, token in api.tokens.items():
        client = Client(api.base, token)
        others = {p for o, p in api.summaries if o != owner} - api.participants(owner)
        assert others
        for participant in sorted(others):
            for suffix in ("all", "mt", "mo", "summary"):
                reply = client.get(conversation_path(participant, suffix))
                _assert_problem(reply, 404)
        client.close()


@pytest.mark.parametrize(
    ("header", "challenge"),
    [
        (None, "Bearer"),
        ("Bearer nope", 'Bearer error="invalid_token"'),
        ("Bearer ", 'Bearer error="invalid_token"'),
        ("Basic YWNtZTphY21l", 'Bearer error="invalid_token"'),
        ("PREFIX", 'Bearer error="invalid_token"'),
        ("LONGER", 'Bearer error="invalid_token"'),
        ("UPPER", 'Bearer error="invalid_token"'),
        ("HASH", 'Bearer error="invalid_token"'),
    ],
)
@pytest.mark.parametrize("suffix", ["all", "summary"])
def test_http_api_without_a_valid_token_is_401(
    api: Api, header: str | None, challenge: str, suffix: str
) -> None:
    token = api.tokens["acme"]
    entry = store_token(api.out, "acme", token).name
    header = {"PREFIX": f"Bearer {token[:-1]}", "LONGER": f"Bearer {token}x",
              "UPPER": f"Bearer {token.upper()}", "HASH": f"Bearer {entry}"}.get(
        header or "", header)  # fmt: skip
    client = Client(api.base, None)
    sent = {"Authorization": header} if header else {}
    reply = client.get(conversation_path(SHARED, suffix), sent)
    client.close()
    _assert_problem(reply, 401)
    assert reply.headers["WWW-Authenticate"] == challenge


def test_http_api_token_scheme_is_case_insensitive(api: Api) -> None:
    client = Client(api.base, None)
    reply = client.get(conversation_path(SHARED), {"Authorization": f"bearer {api.tokens['acm']}"})
    client.close()
    assert reply.status == 200


def test_http_api_revoked_token_is_refused_without_a_reload(api: Api) -> None:
    info, token = add_token(api.out, "acm")
    client = Client(api.base, token)
    assert client.get(conversation_path(SHARED, "summary")).status == 200
    revoke_token(api.out, info.id)
    reply = client.get(conversation_path(SHARED, "summary"))
    client.close()
    _assert_problem(reply, 401)


@pytest.mark.parametrize(("owner", "other"), [("acme", "acm"), ("acm", "acme"), ("bulk", "acm")])
@pytest.mark.parametrize(("template", "_body"), TRAVERSALS)
def test_http_api_traversal_with_a_token_never_reaches_another_owner(
    api: Api, owner: str, other: str, template: str, _body: Any
) -> None:
    """The owner-prefixed spellings, with the token's API path in front of them."""
    fanout = "/".join(name_segments(SHARED)[:2])
    path = template.format(a=f"v2/conversations/{SHARED}", b="/".join(name_segments(other)))
    path = path.replace("v2/conversations/46700000001", f"v2/conversations/{fanout}/{SHARED}")
    client = Client(api.base, api.tokens[owner])
    reply = client.get(path)
    client.close()
    own = api.summaries.get((owner, SHARED))
    if reply.status == 200:
        assert reply.json() == own, path
    else:
        _assert_problem(reply, reply.status)
        assert reply.status in (400, 404), path


def test_http_api_owner_prefixed_paths_are_not_served(api: Api, client: Client) -> None:
    reply = client.get(f"/acme/v2/conversations/{SHARED}/summary")
    _assert_problem(reply, 404)


BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=-5", "limit"),
    ("limit=abc", "limit"),
    ("limit=1001", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("limit=1&limit=2", "limit"),
    ("start=-1", "start"),
    ("start=abc", "start"),
    ("start=1e3", "start"),
    ("order=sideways", "order"),
    ("order=", "order"),
]


@pytest.mark.parametrize("suffix", ["all", "mo"])
@pytest.mark.parametrize(("query", "name"), BAD_QUERIES)
def test_http_api_bad_parameter_is_one_400_naming_it(
    client: Client, query: str, name: str, suffix: str
) -> None:
    body = _assert_problem(client.get(f"{conversation_path(SHARED, suffix)}?{query}"), 400)
    assert body["title"] == "Pagination parameters invalid"
    assert body["detail"].startswith(f"{name} must be ")
    assert [p["name"] for p in body["invalid-params"]] == [name]


def test_http_api_bad_parameters_are_all_named(client: Client) -> None:
    body = _assert_problem(client.get(f"{conversation_path(SHARED)}?start=x&order=up"), 400)
    assert [p["name"] for p in body["invalid-params"]] == ["start", "order"]
    assert "ASC or DESC" in body["detail"] and "from 0" in body["detail"]


def test_http_api_max_limit_is_accepted(client: Client) -> None:
    assert client.get(f"{conversation_path(SHARED)}?limit=1000").status == 200


def test_http_api_problem_type_is_documented(client: Client) -> None:
    body = _assert_problem(client.get(f"{conversation_path(SHARED)}?limit=0"), 400)
    help_page = client.get(body["type"])
    assert help_page.status == 200 and b"limit" in help_page.body


def test_http_api_unknown_route_and_method_are_problems(api: Api, client: Client) -> None:
    _assert_problem(client.get("/v2/conversations"), 404)
    # The script's way to the bucket is internal: no client reaches an object through it.
    _assert_problem(client.get(f"{OBJECT_URI}?key=manifest.json"), 404)
    client.connection.request("DELETE", conversation_path(SHARED))
    reply = client.connection.getresponse()
    assert (reply.status, reply.headers["Content-Type"], reply.headers["Allow"]) == (
        405,
        PROBLEM,
        "GET, HEAD",
    )
    assert orjson.loads(reply.read())["status"] == 405


def test_http_api_gzip_for_a_client_that_accepts_it(client: Client) -> None:
    plain = client.get(f"{conversation_path(SHARED)}?limit=100")
    packed = client.get(f"{conversation_path(SHARED)}?limit=100", {"Accept-Encoding": "gzip"})
    assert plain.headers.get("Content-Encoding") is None
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert "Accept-Encoding" in packed.headers["Vary"]


def test_http_api_etag_answers_304_when_it_matches(client: Client) -> None:
    path = f"{conversation_path(SHARED)}?start=3&limit=9&order=desc"
    first = client.get(path)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'W/"[0-9a-f]{32}"', etag)
    again = client.get(path, {"If-None-Match": etag})
    assert (again.status, again.body, again.headers["ETag"]) == (304, b"", etag)
    assert client.get(path).headers["ETag"] == etag
    other = client.get(path, {"If-None-Match": 'W/"0000"'})
    assert (other.status, other.body) == (200, first.body)


def test_http_api_answers_depend_on_the_token_so_caches_are_private(
    api: Api, client: Client
) -> None:
    mine = client.get(conversation_path(SHARED, "summary"))
    theirs = Client(api.base, api.tokens["acm"])
    other = theirs.get(conversation_path(SHARED, "summary"))
    theirs.close()
    assert mine.headers["ETag"] != other.headers["ETag"]
    assert mine.headers["Cache-Control"] == "private, max-age=60"
    assert "Authorization" in mine.headers["Vary"]
    assert client.get(conversation_path("46000000000")).headers["Cache-Control"] == "no-store"


def test_http_api_health_names_the_run_served(api: Api) -> None:
    manifest = orjson.loads((api.out / "current" / "manifest.json").read_bytes())
    reply = Client(api.base, None).get("/v2/health")
    assert (reply.status, reply.headers["Content-Type"]) == (200, "application/json")
    assert reply.json() == {
        "status": "ok",
        "run_id": manifest["run_id"],
        "started_at": manifest["started_at"],
        "newest_input": manifest["newest_input"],
    }


@pytest.mark.parametrize("name", [n for n in ODD if n])
def test_http_api_every_servable_name_is_reachable(client: Client, api: Api, name: str) -> None:
    reply = client.get(conversation_path(name, "summary"))
    assert (reply.status, reply.json()) == (200, api.summaries[("acme", name)]), name
    assert client.get(conversation_path(name)).json() == api.lists[("acme", name, "all")]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """nginx serving a tree that a test writes file by file, with one owner's token."""
    tmp = tmp_path_factory.mktemp("api-files")
    out = tmp / "out"
    (out / "current").mkdir(parents=True)
    layout = {"run_id": "r", "started_at": "t", "layout": {"page_size": 50, "orders": ["asc"]}}
    (out / "current" / "manifest.json").write_bytes(orjson.dumps(layout))
    (out / MARK).write_bytes(b"")  # an output root, as the token store asks
    store_token(out, "Zürich owner", "tok-files-0000000001")
    with nginx_serving(out, tmp / "nginx", options=()) as base:
        yield base, out / "current" / "api"


@settings(deadline=None)
@given(participant=SERVABLE_NAMES)
def test_http_api_finds_any_servable_name_where_the_writer_put_it(
    files: tuple[str, Path], participant: str
) -> None:
    base, root = files
    conversation = stored_conversation("Zürich owner", participant)
    page = [{"id": participant}, {"id": "2"}]
    (root / conversation).parent.mkdir(parents=True, exist_ok=True)
    summary_of_two = {
        "participant": participant,
        "totalMessageCount": 2,
        "totalSmsCount": 2,
        "mobileTerminatedMessages": {},
        "mobileOriginatedMessages": {},
    }
    (root / conversation_file(conversation, SUMMARY_FILE)).write_bytes(orjson.dumps(summary_of_two))
    page_path = root / conversation_file(conversation, page_file(50, "all", "asc", 0))
    page_path.write_bytes(orjson.dumps(page))
    client = Client(base, "tok-files-0000000001")
    summary = client.get(conversation_path(participant, "summary"))
    listed = client.get(conversation_path(participant) + "?order=DESC")
    client.close()
    assert (summary.status, summary.json()) == (200, summary_of_two)
    assert (listed.status, listed.json()) == (200, page[::-1])
    assert listed.links["last"].endswith("?start=0&limit=50&order=DESC")


def test_http_api_etag_changes_when_a_page_read_is_replaced(files: tuple[str, Path]) -> None:
    base, root = files
    conversation = stored_conversation("Zürich owner", "etag")
    (root / conversation).parent.mkdir(parents=True, exist_ok=True)
    summary = {"participant": "etag", "totalMessageCount": 2, "totalSmsCount": 2,
               "mobileTerminatedMessages": {}, "mobileOriginatedMessages": {}}  # fmt: skip
    (root / conversation_file(conversation, SUMMARY_FILE)).write_bytes(orjson.dumps(summary))
    page = root / conversation_file(conversation, page_file(50, "all", "asc", 0))
    client = Client(base, "tok-files-0000000001")
    seen = []
    for body in ([{"id": "1"}, {"id": "2"}], [{"id": "1"}, {"id": "3"}]):
        page.with_suffix(".new").write_bytes(orjson.dumps(body))
        page.with_suffix(".new").rename(page)  # as the writer replaces a file
        for path in (conversation_path("etag"), conversation_path("etag") + "?start=1"):
            reply = client.get(path)
            seen.append((reply.headers["ETag"], reply.json()))
    client.close()
    assert [body for _, body in seen] == [
        [{"id": "1"}, {"id": "2"}], [{"id": "2"}], [{"id": "1"}, {"id": "3"}], [{"id": "3"}]
    ]  # fmt: skip
    assert len({etag for etag, _ in seen}) == 4


def test_http_api_of_a_summaries_only_run_serves_summaries_and_says_why_lists_are_not(
    tmp_path: Path,
) -> None:
    write_parquet(tmp_path / "m.parquet", [message("m1", owner="acme")], MESSAGE_TYPES)
    write_parquet(tmp_path / "s.parquet", [status("m1", 201)], STATUS_TYPES)
    inputs = ["--messages", tmp_path / "m.parquet", "--statuses", tmp_path / "s.parquet"]
    out = tmp_path / "out"
    run = [BIN / "convsum", "run", *inputs, "--out", out, "--only", "summaries"]
    subprocess.run(run, check=True, capture_output=True)
    _, token = add_token(out, "acme")
    with nginx_serving(out, tmp_path / "nginx", options=()) as base:
        client = Client(base, token)
        assert client.get(conversation_path("46700000001", "summary")).status == 200
        for name in ("all", "mt", "mo"):
            reply = client.get(conversation_path("46700000001", name))
            _assert_problem(reply, 404)
            assert reply.json()["detail"] == "this run published summaries only"
        unknown = client.get(conversation_path("46799999999", "all"))
        assert unknown.json()["detail"] == "no such participant"
        client.close()


@pytest.mark.parametrize("source", SOURCES)
def test_http_api_pages_past_the_first_group_are_found(
    tmp_path: Path, request: pytest.FixtureRequest, source: str
) -> None:
    """At page size 1 a page group holds 100 starts: the first group's pages are in the
    conversation's directory, the next ones in `p1/`, `p2/` (publish.paths.page_file). Both the
    API and the page-aligned owner-prefixed space read across them."""
    rows = [message(f"m{i:03d}", created=T0 + timedelta(seconds=i)) for i in range(250)]
    write_parquet(tmp_path / "in" / "m.parquet", rows, MESSAGE_TYPES)
    write_parquet(tmp_path / "in" / "s.parquet", [status("m000", 201)], STATUS_TYPES)
    out = tmp_path / "out"
    inputs = [
        "--messages",
        tmp_path / "in" / "m.parquet",
        "--statuses",
        tmp_path / "in" / "s.parquet",
    ]
    run = [BIN / "convsum", "run", *inputs, "--out", out, "--page-size", "1", "--desc-pages"]
    subprocess.run(run, check=True, capture_output=True)
    store_token(out, "acme", "tok-page-groups-0001")
    s3 = request.getfixturevalue("s3") if source == "bucket" else None
    ids = [row["id"] for row in rows]
    path = conversation_path("46700000001")
    with nginx_serving(out, tmp_path / "nginx", s3, options=()) as base:
        client = Client(base, "tok-page-groups-0001")
        for query, expected in [
            ("start=98&limit=4", ids[98:102]),
            ("start=150&limit=3", ids[150:153]),
            ("start=199&limit=60", ids[199:250]),
            ("start=148&limit=3&order=DESC", ids[::-1][148:151]),
        ]:
            reply = client.get(f"{path}?{query}")
            assert reply.status == 200, (query, reply.body)
            assert [m["id"] for m in reply.json()] == expected, query
        client.close()
    with nginx_serving(out, tmp_path / "nginx-owner", s3) as base:
        client = Client(base, None)
        for start in (0, 99, 100, 249):
            page = client.get(f"/acme{path}?start={start}&limit=1")
            assert page.status == 200, (start, page.body)
            assert [m["id"] for m in page.json()] == [ids[start]], start
        client.close()
