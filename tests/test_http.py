"""End to end: the installed `convsum`, a real nginx with the generated configuration, real HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsum.bench import free_port, listening
from convsum.publish.nginx import MODULE_DIR, MODULES, BucketOrigin, render
from convsum.publish.paths import SUMMARY_FILE, conversation_dir, is_servable, page_file
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet
from tests.publish.test_paths import ODD_NAMES
from tests.s3server import S3Server
from tests.test_golden import SAMPLES, SPEC_EXAMPLE

pytestmark = pytest.mark.http
BIN = Path(sys.executable).parent


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


def published(tmp: Path) -> tuple[Path, Path]:
    """Publish the API example and every awkward name under `tmp`: (inputs, output root)."""
    inputs = tmp / "in"
    for name in ("messages", "statuses"):
        (inputs / name).mkdir(parents=True)
        shutil.copy(SAMPLES / "api_example" / f"{name}.parquet", inputs / name / "api.parquet")
    _odd_inputs(inputs)
    out = tmp / "out"
    run = [BIN / "convsum", "run", "--messages", inputs / "messages"]
    run += ["--statuses", inputs / "statuses", "--out", out, "--desc-pages"]
    subprocess.run(run, check=True, capture_output=True)
    return inputs, out


# Where nginx reads the tree: the output root, or a bucket it was synced to (nginx as a proxy).
SOURCES = ["tree", "bucket"]
# The unauthenticated URL space /{owner}/v2/... that the tests of this module and their
# neighbours read (the authenticated API is tests/test_http_api.py's).
OWNER_IN_PATH = ("--owner-in-path",)


@pytest.fixture(scope="module", params=SOURCES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http")
    inputs, out = published(tmp)
    s3 = request.getfixturevalue("s3") if request.param == "bucket" else None
    with nginx_serving(out, tmp / "nginx", s3) as base:
        yield Server(base, tmp, pq.read_table(inputs / "messages"))


@contextmanager
def nginx_serving(
    out: Path, prefix: Path, s3: S3Server | None = None, options: tuple[str, ...] = OWNER_IN_PATH
) -> Iterator[str]:
    """Serve the output root `out` with a real nginx and the generated configuration; with
    `s3`, sync `out` to a new bucket of that server and serve the bucket instead. `options`
    go to `nginx-conf`: by default the owner-prefixed URL space that these tests read."""
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


# Any name one URL path segment can hold: short ones of any characters, long ones up to the
# 200-byte limit, and ones made of what URL decoders treat apart.
def _in_a_segment(max_codepoint: int | None = None) -> st.SearchStrategy[str]:
    return st.characters(
        max_codepoint=max_codepoint, exclude_categories=("Cc", "Cs"), exclude_characters="/"
    )


SERVABLE_NAMES = st.one_of(
    st.text(_in_a_segment(), min_size=1, max_size=50),  # 4 bytes a character at most
    st.text(_in_a_segment(0x7F), min_size=150, max_size=200),
    st.text("%+;=&?#\\ .~-_aé😀", min_size=1, max_size=50),
).filter(is_servable)


@dataclass
class Origin:
    """nginx with the generated configuration, serving files that a test puts there one by one."""

    base: str
    put: Callable[[str, bytes], None]  # (path under the served root, body)


@pytest.fixture(scope="module", params=SOURCES)
def origin(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Origin]:
    tmp = tmp_path_factory.mktemp("origin")
    port = free_port()
    source: Path | BucketOrigin
    if request.param == "tree":
        source = root = tmp / "api"

        def put(path: str, body: bytes) -> None:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(body)

    else:
        s3: S3Server = request.getfixturevalue("s3")
        bucket, client = s3.new_bucket(public_prefix="api"), s3.client()
        source = BucketOrigin.of(s3.endpoint, bucket, "api")

        def put(path: str, body: bytes) -> None:
            client.put_object(
                Bucket=bucket, Key=f"api/{path}", Body=body, ContentType="application/json"
            )

    user = "root" if os.geteuid() == 0 else None
    conf = render(source, f"127.0.0.1:{port}", 50, ["asc"], user, api=None)
    with nginx_running(conf, tmp / "nginx", port) as base:
        yield Origin(base, put)


@settings(deadline=None)
@given(owner=SERVABLE_NAMES, participant=SERVABLE_NAMES)
def test_http_server_finds_any_servable_name_where_the_writer_put_it(
    origin: Origin, owner: str, participant: str
) -> None:
    directory = conversation_dir(owner, participant)
    summary = orjson.dumps({"participant": participant, "owner": owner})
    page = orjson.dumps([owner, participant])
    origin.put(f"{directory}/{SUMMARY_FILE}", summary)
    origin.put(f"{directory}/{page_file(50, 'all', 'asc', 0)}", page)
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
        "trees",
    ]
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve()), path
