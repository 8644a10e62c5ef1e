"""The nginx configuration's pieces that can be checked without a server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from convsum.cli import cli
from convsum.config import ALIGNMENT_MODULUS
from convsum.errors import ConfigError
from convsum.publish.nginx import (
    API_SCRIPT,
    ERROR_PAGES,
    OBJECT_URI,
    BucketOrigin,
    TokenApi,
    check_listen,
    check_trusted_proxy,
    check_user,
    page_group_pattern,
    quote,
    quote_path,
    render,
    start_pattern,
)
from convsum.publish.paths import page_file
from tests.support.s3server import S3Server

PAGE_SIZES = [d for d in range(1, ALIGNMENT_MODULUS + 1) if ALIGNMENT_MODULUS % d == 0]


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_nginx_start_pattern_matches_exactly_the_multiples(page_size: int) -> None:
    pattern = re.compile(start_pattern(page_size))
    for n in [*range(0, 3 * ALIGNMENT_MODULUS + 7), 10**12, 10**12 + page_size, 10**12 + 1]:
        assert bool(pattern.match(str(n))) == (n % page_size == 0), n


@pytest.mark.parametrize("text", ["", "-50", "050", "00", "5e1", "50 ", "+50", "50.0", "abc"])
def test_nginx_start_pattern_rejects_non_canonical_numbers(text: str) -> None:
    assert not re.match(start_pattern(50), text)


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_nginx_page_group_agrees_with_page_file(page_size: int) -> None:
    pattern = re.compile(page_group_pattern(page_size))
    for start in [
        0,
        page_size,
        10 * page_size,
        99 * page_size,
        100 * page_size,
        10**7,
        10**9 + page_size,
    ]:
        if start % page_size:
            continue
        match = pattern.match(str(start))
        directory = f"p{match.group(1)}/" if match else ""  # the map's /p$1, else none
        assert page_file(page_size, "all", "asc", start) == f"{directory}all.asc.{start}.json"


def test_nginx_quote_escapes_what_the_parser_unescapes() -> None:
    assert quote("a b;c{d}'e\"f\\g\nh\ri\tj#$k") == '"a b;c{d}\'e\\"f\\\\g\\nh\\ri\\tj#$k"'


def test_nginx_quote_path_spells_dollar_through_a_variable() -> None:
    assert quote_path(Path("/srv/$uri/a")) == '"/srv/${cs_dollar}uri/a"'


@pytest.mark.parametrize(
    ("listen", "token"),
    [
        ("8080", "8080"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("*:80", "*:80"),
        ("[::1]:8080", "[::1]:8080"),
        ("localhost:8080", "localhost:8080"),
        ("api.example.com:443", "api.example.com:443"),
        ("unix:/run/a b;c$d.sock", "unix:/run/a b;c$d.sock"),
    ],
)
def test_nginx_check_listen_accepts_an_address(listen: str, token: str) -> None:
    assert check_listen(listen) == token


@pytest.mark.parametrize(
    "listen",
    [
        "",
        "0",
        "65536",
        "\uff18\uff10",  # fullwidth digits: str.isdigit() accepts them
        "8080 ssl",
        "80;",
        "127.0.0.1:80; user root",
        ":80",
        "::1:80",
        "[::1]",
        "[zz]:80",
        "300.1.1.1:80",
        "host name:80",
        "-a.example:80",
        "-abc:80",
        "1.2.3:80",
        "unix:relative.sock",
    ],
)
def test_nginx_check_listen_rejects_anything_else(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"expected PORT|is not an IP address"):
        check_listen(listen)


@pytest.mark.parametrize("user", ["root", "www-data", "_nginx", "svc.web"])
def test_nginx_check_user_accepts_a_user_name(user: str) -> None:
    assert check_user(user) == user


@pytest.mark.parametrize(
    "user", ["", "root;", "root; worker_processes 64", "a b", "$x", '"x"', "1st", "x" * 33]
)
def test_nginx_check_user_rejects_anything_else(user: str) -> None:
    with pytest.raises(ConfigError, match="is not a user name"):
        check_user(user)


def test_nginx_render_answers_every_error_status_in_json() -> None:
    conf = render(Path("/srv/api"), "8080", 50, ["asc"], None, api=None)
    pages = re.findall(r"error_page (\d+) =(\d+) (\S+);", conf)
    answers = dict(re.findall(r"location = (\S+) \{ internal;[^}]*? return \d+ '([^']*)'", conf))
    bodies = {int(code): (int(sent), orjson.loads(answers[uri])) for code, sent, uri in pages}
    assert {code: (sent, body["status"]) for code, (sent, body) in bodies.items()} == {
        **{code: (code, code) for code in (400, 403, 404, 405, 408, 413, 414, 416, 429)},
        494: (400, 400),
        **{code: (code, code) for code in (500, 501, 502, 503, 504, 505)},
    }


def _published(tmp_path: Path) -> Path:
    """Return an output root holding just the manifest `nginx-conf` reads."""
    (tmp_path / "current").mkdir(parents=True)
    layout = {"layout": {"page_size": 50, "orders": ["asc"]}}
    (tmp_path / "current" / "manifest.json").write_bytes(orjson.dumps(layout))
    return tmp_path


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--listen", "80; include /etc/passwd", "Invalid value for '--listen'"),
        ("--user", "root; worker_processes 64", "Invalid value for '--user'"),
    ],
)
def test_nginx_conf_cli_rejects_what_nginx_cannot_take_with_exit_2(
    tmp_path: Path, option: str, value: str, words: str
) -> None:
    result = CliRunner().invoke(cli, ["nginx-conf", str(_published(tmp_path)), option, value])
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert result.stdout == ""


def test_nginx_conf_cli_keeps_a_path_that_is_not_utf8(tmp_path: Path) -> None:
    root = _published(tmp_path / os.fsdecode(b"caf\xe9"))
    result = CliRunner().invoke(cli, ["nginx-conf", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert b'root "' + os.fsencode(root.resolve()) + b'/current/api";' in result.stdout_bytes


def _nginx_t(prefix: Path, conf: str) -> subprocess.CompletedProcess[str]:
    """Return what `nginx -t` says of the configuration `conf`, with `prefix` as its prefix."""
    (prefix / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
    )


@pytest.mark.http
def test_nginx_conf_with_hostile_paths_passes_nginx_t(tmp_path: Path) -> None:
    root = _published(tmp_path / "out a;b{c}\"d'e\\f#g\nh\tü $uri ${host} $")
    socket_path = f"unix:{tmp_path}/a b;c$d.sock"
    conf = render(root.resolve() / "current" / "api", socket_path, 50, ["asc"], "root", api=None)
    check = _nginx_t(tmp_path, conf)
    assert check.returncode == 0, check.stderr


@pytest.mark.http
def test_nginx_conf_from_a_bucket_passes_nginx_t(tmp_path: Path) -> None:
    origin = BucketOrigin.of("http://127.0.0.1:9000", "bucket", "api")
    check = _nginx_t(
        tmp_path, render(origin, "127.0.0.1:8080", 50, ["asc", "desc"], None, api=None)
    )
    assert check.returncode == 0, check.stderr


def test_nginx_render_loads_the_modules_that_hash_names() -> None:
    conf = render(Path("/srv/api"), "8080", 50, ["asc"], None, api=None)
    loaded = re.findall(r"^load_module (\S+);$", conf, re.MULTILINE)
    # set_misc is built on ndk, which must be loaded first.
    assert loaded == [
        "/usr/lib/nginx/modules/ndk_http_module.so",
        "/usr/lib/nginx/modules/ngx_http_set_misc_module.so",
    ]
    assert conf.index("load_module") < conf.index("events {")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--from", "s3://bucket/api"],  # no token store, and not --owner-in-path
        ["OUT", "--endpoint", "http://127.0.0.1:9000"],
        ["--from", "s3://Bad_Bucket/api"],
    ],
)
def test_nginx_conf_cli_takes_out_or_a_bucket_else_exit_2(tmp_path: Path, args: list[str]) -> None:
    out = str(_published(tmp_path))
    result = CliRunner().invoke(cli, ["nginx-conf", *[out if a == "OUT" else a for a in args]])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("endpoint", "destination"),
    [
        ("ftp://127.0.0.1:9000", "s3://bucket/api"),
        ("http://127.0.0.1:9000/path", "s3://bucket/api"),
        ("http://host name", "s3://bucket/api"),
        ("http://127.0.0.1:9000", "s3://bucket/a b"),
        ("http://127.0.0.1:9000", "s3://bucket/$uri"),
    ],
)
def test_nginx_bucket_origin_refuses_what_nginx_cannot_take(
    endpoint: str, destination: str
) -> None:
    _, _, bucket, prefix = destination.split("/", 3)
    with pytest.raises(ConfigError):
        BucketOrigin.of(endpoint, bucket, prefix)


def test_nginx_conf_from_a_bucket_without_a_sync_is_exit_1(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    args = ["nginx-conf", "--owner-in-path", "--from", f"s3://{bucket}/api"]
    result = CliRunner().invoke(cli, args, env=s3.env())
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: s3://{bucket}/api: no manifest.json; run `convsum sync` to it first\n"
    )


def test_nginx_render_from_a_bucket_never_forwards_the_query_or_credentials() -> None:
    origin = BucketOrigin.of("https://s3.eu-north-1.amazonaws.com", "bucket", "api/v1")
    conf = render(origin, "8080", 50, ["asc"], None, api=None)
    rewrites = re.findall(r'rewrite \^ "([^"]*)" break;', conf)
    assert len(rewrites) == 3
    assert all(r.startswith("/bucket/api/v1/") and r.endswith(".json?") for r in rewrites)
    assert 'proxy_set_header Authorization "";' in conf
    assert "proxy_pass https://s3.eu-north-1.amazonaws.com;" in conf
    assert "proxy_ssl_verify on;" in conf


def _token_api(root: Path) -> TokenApi:
    return TokenApi(tokens=root / "tokens" / "owners", manifest=root / "current" / "manifest.json")


@pytest.mark.http
def test_nginx_render_api_with_hostile_paths_passes_nginx_t(tmp_path: Path) -> None:
    root = _published(tmp_path / "out a;b{c}\"d'e\\f#g\nh\tü $uri ${host} $")
    api = TokenApi(
        tokens=root / "tokens" / "owners",
        manifest=root / "current" / "manifest.json",
        cache_control="private, max-age=5, x=$uri",
        trusted_proxies=("10.0.0.0/8", "fd00::1"),
    )
    conf = render(root.resolve() / "current" / "api", "127.0.0.1:8080", 50, ["asc"], None, api=api)
    check = _nginx_t(tmp_path, conf)
    assert check.returncode == 0, check.stderr


def test_nginx_render_api_imports_the_script_shipped_with_the_package() -> None:
    conf = render(Path("/srv/api"), "8080", 50, ["asc"], None, api=_token_api(Path("/srv")))
    assert re.findall(r'^    js_import api from "([^"]+)";$', conf, re.MULTILINE) == [
        str(API_SCRIPT)
    ]
    assert API_SCRIPT.is_file()
    loaded = re.findall(r"^load_module \S+/(\S+);$", conf, re.MULTILINE)
    assert loaded == ["ndk_http_module.so", "ngx_http_set_misc_module.so", "ngx_http_js_module.so"]


def test_nginx_render_api_answers_every_error_status_as_a_problem() -> None:
    conf = render(Path("/srv/api"), "8080", 50, ["asc"], None, api=_token_api(Path("/srv")))
    answers = re.findall(r"location = \S+ \{ internal;[^}]*? return \d+ '([^']*)'", conf)
    assert len(answers) == len(ERROR_PAGES)
    for body in map(orjson.loads, answers):
        assert list(body) == ["type", "title", "status", "detail"]
    assert "default_type application/problem+json;" in conf


def test_nginx_render_api_from_a_bucket_reads_objects_only_through_its_internal_location() -> None:
    origin = BucketOrigin.of("https://s3.eu-north-1.amazonaws.com", "bucket", "api/v1")
    conf = render(origin, "8080", 50, ["asc"], None, api=_token_api(Path("/srv")))
    assert "js_var $cs_bucket 1;" in conf
    assert "js_var $cs_manifest manifest.json;" in conf
    location = conf[conf.index(f"location = {OBJECT_URI} {{") :]
    location = location[: location.index("}")]
    assert "internal;" in location
    assert "set_unescape_uri $cs_object_key $arg_key;" in location
    # The `?` drops every argument: the bucket sees only the object's path.
    assert re.findall(r'rewrite \^ "([^"]*)" break;', conf) == ["/bucket/api/v1/$cs_object_key?"]
    assert "proxy_pass https://s3.eu-north-1.amazonaws.com;" in location
    assert 'proxy_set_header Authorization "";' in conf
    assert not re.search(r"^\s*root ", conf, re.M)  # nothing is read from a local tree


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "example.com", "", "1.2.3.4; allow all"])
def test_nginx_check_trusted_proxy_rejects_what_is_not_a_network(cidr: str) -> None:
    with pytest.raises(ConfigError, match="expected an IP address or a network"):
        check_trusted_proxy(cidr)


@pytest.mark.parametrize(
    "args",
    [
        ["--owner-in-path", "--max-limit", "10"],
        ["--owner-in-path", "--trusted-proxy", "10.0.0.0/8"],
        ["--trusted-proxy", "10.0.0.0/33"],
        ["--max-limit", "0"],
        ["--cache-control", "a\nb"],
    ],
)
def test_nginx_conf_cli_api_option_misuse_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["nginx-conf", str(_published(tmp_path)), *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


def test_nginx_conf_cli_serves_the_api_by_default_and_owner_in_path_on_request(
    tmp_path: Path,
) -> None:
    out = _published(tmp_path)
    api = CliRunner().invoke(cli, ["nginx-conf", str(out)], catch_exceptions=False).stdout
    internal = CliRunner().invoke(cli, ["nginx-conf", str(out), "--owner-in-path"]).stdout
    tokens = str(out.resolve() / "tokens" / "owners")
    assert 'location ~ "^/v2/conversations/' in api and f'js_var $cs_tokens "{tokens}";' in api
    assert "js_import" not in internal and "(?<cs_owner>[^/]+)/v2/conversations/" in internal
