"""A complete nginx configuration that serves a published tree as the read API (SPEC section 4).

The server computes each name's fan-out directories from the URL as `publish.paths.fanout` does
(the first four hexadecimal digits of the MD5 of the name's bytes, as nginx decodes them from the
path segment), checks `start`, `limit` and `order` with regular expressions, and answers from the
files alone. Every answer, the errors nginx raises itself included, is JSON.

By default the server is the authenticated API at the gateway's own paths,
`/v2/conversations/{participant}[/mt|/mo|/summary]`: nginx routes, refuses hostile paths and
methods, hashes the participant's name and compresses; the njs script `api.js`, shipped next to
this module, takes the owner from the Bearer token (the token store's files, read on every
request), the list's length from the conversation's summary, cuts any `start`/`limit`/`order`
slice from the ascending page files, and writes the Link header, the ETag and every error as an
RFC 9457 problem. With `owner_in_path` the server is
the unauthenticated URL space `/{owner}/v2/conversations/...` instead, answered from the files
alone, for an internal listener behind an authenticating proxy (and the tests).

The MD5 comes from Debian's `set_misc` module (`libnginx-mod-http-set-misc`, on the `ndk` module,
`libnginx-mod-http-ndk`), which the configuration loads itself: `set_md5` in each public
location, then a `map` cuts the digest's first digits. njs (`js_set` with `crypto.createHash`
over `r.rawVariables`) computes the same digest at the same cost: measured as nginx worker CPU
per request (medians of repeated runs over loopback), 16-18 us with either, 14 us with the four
regular-expression maps of the layout before; at 200-byte names, still 16-18 us, the maps 45 us.
The owner-in-path configuration needs no script, so it keeps set_misc, and the API hashes the
same way, so one rule finds a participant in every mode.

Tenant isolation: nginx decodes `%XX` once and resolves `.` and `..` segments before it matches a
location, so a raw path like `/acme/..%2Facm/...` would be served from owner `acm`. The
configuration therefore refuses, on the raw `$request_uri`, every path with a segment that is `.`
or `..` once decoded, or with an encoded slash; with `merge_slashes off` as well, the segments
nginx matches are then exactly the raw segments, each decoded once, so the owner served is always
the first raw segment.

From a bucket (`BucketOrigin`), nginx is a caching proxy in front of the bucket's HTTP endpoint
instead. The API's script then reads each file it needs as a subrequest to the internal location
`OBJECT_URI`, which proxies to the object through the cache; a missing object (403 or 404) is a
missing file. The owner-prefixed URL space computes the object's key with the same hash and maps,
and "past the end" asks whether the conversation's summary exists with `If-Match` on an ETag no
object has (412: it exists, so `[]`; 404: unknown participant).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from convsum.config import ALIGNMENT_MODULUS, DEFAULT_API_CACHE_CONTROL, DEFAULT_MAX_LIMIT
from convsum.errors import ConfigError
from convsum.publish.bucket import BUCKET_MANIFEST
from convsum.publish.paths import SUMMARY_FILE, conversation_file, page_group_digits
from convsum.publish.storage import GZIP_SUFFIX

# Debian's nginx module packages install here; set_misc needs ndk loaded before it.
MODULE_DIR = "/usr/lib/nginx/modules"
MODULES = ("ndk_http_module.so", "ngx_http_set_misc_module.so")
JS_MODULE = "ngx_http_js_module.so"  # libnginx-mod-http-js
API_SCRIPT = Path(__file__).resolve().with_name("api.js")
PAGINATION_TYPE = "/v2/problems/pagination-parameters-invalid"
_NOT_FOUND = '{"status":404,"error":"Not Found","message":"unknown participant"}'
_NO_LISTS = '{"status":404,"error":"Not Found","message":"this run published summaries only"}'
_NO_ROUTE = '{"status":404,"error":"Not Found","message":"no such endpoint"}'
_HOSTILE_MESSAGE = "the path must not hold a dot segment or an encoded slash"
METHODS = ("GET", "HEAD")
ERROR_URI = "/.convsum-error/"
OBJECT_URI = "/.convsum-object"  # api.js's OBJECT: an object of the bucket, for the script

# The statuses nginx can answer by itself, each with the JSON body that replaces its HTML page.
# 494 (request header too large) goes on the wire as 400, as nginx does by default.
ERROR_PAGES: dict[int, tuple[int, str, str]] = {
    400: (400, "Bad Request", "malformed request"),
    403: (403, "Forbidden", "forbidden"),
    404: (404, "Not Found", "no such endpoint"),
    405: (405, "Method Not Allowed", f"only {' and '.join(METHODS)} are served"),
    408: (408, "Request Timeout", "the request took too long to arrive"),
    413: (413, "Content Too Large", "request body too large"),
    414: (414, "URI Too Long", "request URI too long"),
    416: (416, "Range Not Satisfiable", "range not satisfiable"),
    429: (429, "Too Many Requests", "too many requests"),
    494: (400, "Bad Request", "request header too large"),
    500: (500, "Internal Server Error", "internal server error"),
    501: (501, "Not Implemented", "not implemented"),
    502: (502, "Bad Gateway", "bad gateway"),
    503: (503, "Service Unavailable", "service unavailable"),
    504: (504, "Gateway Timeout", "gateway timeout"),
    505: (505, "HTTP Version Not Supported", "HTTP version not supported"),
}

# Raw request paths refused before routing (matched case-insensitively on `$request_uri`, up to
# its query): a dot segment in any single-decoded spelling, an encoded slash, and overlong UTF-8
# (`%c0%ae` is `.` to a lax decoder; no servable name's UTF-8 holds these bytes).
HOSTILE_PATH_PATTERNS = (
    r"^[^?]*/(?:\.|%2e){1,2}(?:[/?#]|$)",
    r"^[^?]*%2f",
    r"^[^?]*%(?:c0|c1|e0%[89]|f0%8)",
)

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


def quote(text: str) -> str:
    """Return `text` as one nginx double-quoted token that the parser reads back unchanged.

    Inside quotes nginx unescapes a backslash before `\\`, `"`, `'`, `t`, `r` and `n` and takes
    every other byte as it is. Newlines are escaped too, so the token also fits on a comment
    line. `$` is left alone: see `quote_path`.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def quote_path(path: Path) -> str:
    """Return `path` as a quoted token for a directive that interpolates variables (`root`).

    Such directives have no escape for `$`, so each `$` becomes `${cs_dollar}`, a `geo` variable
    whose value is a literal `$` (geo values are never interpolated). Bytes that are not UTF-8
    stay as surrogate escapes; write the text with `surrogateescape` to get them back.
    """
    return quote_value(str(path))


def quote_value(text: str) -> str:
    """Return `text` as a quoted token for a directive that interpolates variables."""
    return quote(text).replace("$", "${cs_dollar}")


def check_user(user: str) -> str:
    """Return `user` if it is a plain user name (what nginx's `user` directive looks up)."""
    if not _USER.fullmatch(user):
        msg = f"{user!r} is not a user name (letters, digits, '_', '.', '-'; at most 32)"
        raise ConfigError(msg)
    return user


def check_listen(listen: str) -> str:
    """Return `listen` if nginx can listen there: PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH."""
    if listen.startswith("unix:/"):
        return listen
    host, colon, port = listen.rpartition(":")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        msg = f"{listen!r}: expected PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH"
        raise ConfigError(msg)
    if colon and not _valid_host(host):
        msg = f"{listen!r}: {host!r} is not an IP address, `*` or a host name"
        raise ConfigError(msg)
    return f"{host}{colon}{int(port)}"


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if host == "*":
        return True
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return bool(host.isascii() and _HOST_NAME.fullmatch(host))


def start_pattern(page_size: int) -> str:
    """Return a regular expression matching exactly the decimal multiples of `page_size`.

    The page size divides a power of ten 10**k (checked by config.check_page_size), so whether a
    number is a multiple depends only on its last k digits.
    """
    modulus = next(10**k for k in range(len(str(ALIGNMENT_MODULUS))) if 10**k % page_size == 0)
    width = len(str(modulus)) - 1
    residues = [str(r).zfill(width) for r in range(0, modulus, page_size)]
    small = [str(r) for r in range(0, modulus, page_size)]
    long_form = "[1-9][0-9]*" + (f"(?:{'|'.join(residues)})" if width else "")
    return f"^(?:{long_form}|{'|'.join(small)})$"


def page_group_pattern(page_size: int) -> str:
    """Return a regular expression whose first group is a start's page group, matching only
    the starts outside the first group (whose pages have no group directory)."""
    return f"^([0-9]+)[0-9]{{{page_group_digits(page_size)}}}$"


def _fanout_maps(names: tuple[str, ...] = ("owner", "participant")) -> str:
    """Return the maps that cut each name's fan-out directories (`a/b`) from its MD5."""
    return "\n".join(
        f'    map $cs_{name}_md5 $cs_{name}_fanout {{ "~^(..)(..)" $1/$2; default ""; }}'
        for name in names
    )


def _hash_lines() -> str:
    """Return the directives, for each public conversation location, that hash both names.

    They run in the rewrite phase, in order with `if` and `rewrite`, so they come before the
    bucket's `rewrite` of the key; the named locations a request moves on to keep the values.
    """
    return "\n            ".join(
        f"set_md5 $cs_{name}_md5 $cs_{name};" for name in ("owner", "participant")
    )


def error_body(status: int, error: str, message: str, problem: bool) -> str:
    """Return the JSON body of an error: an RFC 9457 problem for the API, else the older form."""
    if problem:
        document = {"type": "about:blank", "title": error, "status": status, "detail": message}
        return orjson.dumps(document).decode()
    return orjson.dumps({"status": status, "error": error, "message": message}).decode()


def _error_pages(problem: bool) -> str:
    """Return the `error_page` lines and the internal locations that answer them in JSON.

    The pages are URIs, not named locations: nginx cannot redirect a request whose line it
    could not parse (no URI yet) to a named location, and would answer with its HTML 500.
    """
    lines = [_error_page_lines("        ")]
    for code, (sent, error, message) in ERROR_PAGES.items():
        body = error_body(sent, error, message, problem)
        allow = f' add_header Allow "{", ".join(METHODS)}" always;' if code == 405 else ""
        lines.append(
            f"        location = {ERROR_URI}{code} {{ internal;{allow} return {sent} '{body}'; }}"
        )
    return "\n".join(lines)


def _error_page_lines(indent: str, taken: tuple[int, ...] = ()) -> str:
    """Return the `error_page` directives of ERROR_PAGES but `taken`: a location that sets one
    of its own inherits none, so it repeats them."""
    return "\n".join(
        f"{indent}error_page {code} ={sent} {ERROR_URI}{code};"
        for code, (sent, _error, _message) in ERROR_PAGES.items()
        if code not in taken
    )


def _hostile_path_map() -> str:
    """Return the maps that say why a request is refused before routing, if it is."""
    rules = "".join(f'        "~*{pattern}" 1;\n' for pattern in HOSTILE_PATH_PATTERNS)
    methods = "|".join(METHODS)
    return (
        f"    map $request_uri $cs_hostile_path {{\n{rules}        default 0;\n    }}\n"
        f'    map "$request_method:$cs_hostile_path" $cs_refusal {{\n'
        f'        "~^(?:{methods}):0$" "";\n'
        f'        "~^(?:{methods}):" 400;\n'
        f"        default 405;\n    }}"
    )


# A bucket and prefix nginx can put in a URL as they are (the unreserved characters of RFC 3986).
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")
# Response headers of S3 and its look-alikes that say nothing to an API client.
_STORE_HEADERS = (
    "x-amz-id-2",
    "x-amz-request-id",
    "x-amzn-requestid",
    "x-amz-version-id",
    "x-amz-server-side-encryption",
    "x-amz-content-sha256",
    "x-amz-storage-class",
    "content-md5",
    "Accept-Ranges",
    "Set-Cookie",
    "Access-Control-Allow-Origin",
)
# Request headers never passed to the bucket: credentials meant for the proxy in front, and the
# conditions and ranges that the past-end probe sets itself.
_CLEARED_HEADERS = ("Authorization", "Cookie", "Range", "If-Range", "If-None-Match",
                    "If-Modified-Since", "If-Unmodified-Since", "If-Match")  # fmt: skip
# No object's ETag: a quoted MD5 is 32 hexadecimal digits.
_PROBE_ETAG = '"convsum-exists-probe"'


@dataclass(frozen=True)
class BucketOrigin:
    """A bucket served through nginx: its endpoint, and the path of the prefix on it."""

    endpoint: str  # scheme://host[:port], path-style requests
    base: str  # /BUCKET or /BUCKET/PREFIX

    @classmethod
    def of(cls, endpoint: str, bucket: str, prefix: str) -> BucketOrigin:
        """Return the origin, or raise ConfigError for what nginx cannot take as it is."""
        parts = urlsplit(endpoint)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
            or not _valid_host(f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)
        ):
            msg = f"endpoint {endpoint!r}: expected http(s)://HOST or http(s)://HOST:PORT"
            raise ConfigError(msg)
        path = "/".join(p for p in (bucket, prefix) if p)
        if not _URL_SAFE.fullmatch(path):
            msg = (
                f"s3://{path}: to serve it through nginx, the bucket and prefix may hold only "
                "letters, digits and . _ ~ - (sync to such a prefix)"
            )
            raise ConfigError(msg)
        return cls(f"{parts.scheme}://{parts.netloc}", f"/{path}")

    def http_lines(self) -> str:
        """Return the proxy settings of the http block: the cache and what passes."""
        hidden = "".join(f"    proxy_hide_header {h};\n" for h in _STORE_HEADERS)
        tls = ""
        if self.endpoint.startswith("https:"):
            tls = (
                "    proxy_ssl_server_name on;\n    proxy_ssl_verify on;\n"
                "    proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;\n"
            )
        return (
            "    # The bucket's objects, cached: a 200 for as long as its Cache-Control says (set\n"
            "    # by `convsum sync`), a missing object for 10 s.\n"
            "    proxy_cache_path cache levels=1:2 keys_zone=convsum:16m max_size=1g "
            "inactive=1h use_temp_path=off;\n"
            "    proxy_cache convsum;\n"
            "    proxy_cache_key $uri;\n"
            "    proxy_cache_valid 403 404 10s;\n"
            "    proxy_cache_lock on;\n"
            "    proxy_cache_use_stale error timeout updating http_500 http_502 http_503 "
            "http_504;\n"
            "    proxy_http_version 1.1;\n"
            "    proxy_intercept_errors on;\n"
            "    recursive_error_pages on;\n"
            f"{_cleared()}{hidden}{tls}"
        )

    def object_location(self) -> str:
        """Return the internal location through which the API's script reads an object (see
        `_object_location`): nginx escapes the rewritten path again for the bucket, and the
        bucket's status reaches the script as it is (403 or 404: no such object)."""
        indent = "\n            "
        proxied = f"{indent}proxy_intercept_errors off;{indent}proxy_pass {self.endpoint};"
        return _object_location(self.base, proxied)

    def fetch(self, key: str, missing: str) -> str:
        """Return a location's directives that answer with the object `key` (a path under the
        prefix, with variables), or go to the named location `missing` when there is none."""
        # The `?` drops the request's arguments: the bucket must never see `versionId` & co.
        return (
            f'rewrite ^ "{self.base}/{key}?" break;\n'
            f"            error_page 403 404 = {missing};\n"
            f"{_error_page_lines(' ' * 12, (403, 404, 412))}\n"
            f"            proxy_pass {self.endpoint};"
        )


def _cleared(probe: bool = False) -> str:
    lines = "".join(
        f'    proxy_set_header {h} "";\n'
        for h in _CLEARED_HEADERS
        if not (probe and h == "If-Match")
    )
    return lines + (f"    proxy_set_header If-Match '{_PROBE_ETAG}';\n" if probe else "")


def _answers(source: Path | BucketOrigin, conversation: str, page: str) -> dict[str, str]:
    """Return how the tree answers: a summary, a page, and a known participant with no page."""
    summary = conversation_file(conversation, SUMMARY_FILE)
    if isinstance(source, Path):
        known = "\n            ".join(
            f"if (-f $document_root{summary}{suffix}) {{ return 200 '[]'; }}"
            for suffix in ("", GZIP_SUFFIX)
        )
        return {
            "summary": _static(summary, "@unknown"),
            "page": _static(page, "@past_end"),
            "past_end": f"""{known}
            return 404 '{_NOT_FOUND}';""",
            "extra": "",
        }
    probe = _cleared(probe=True).replace("    proxy_set_header", "            proxy_set_header")
    return {
        "summary": source.fetch(summary.lstrip("/"), "@unknown"),
        "page": source.fetch(page.lstrip("/"), "@past_end"),
        "past_end": f"""# Is the conversation known? Its summary exists (412) or not (403, 404).
            proxy_cache off;
{probe.rstrip()}
            error_page 412 = @empty_page;
            {source.fetch(summary.lstrip("/"), "@unknown")}""",
        "extra": """
        location @empty_page {
            return 200 '[]';
        }
""",
    }


# A tree stores each file as it is served or gzip-compressed (publish/storage.py), and either
# way is served: the gzip_static handler sends FILE.gz when there is one, to every client, and
# the gunzip filter decodes it for a client that does not accept gzip, and for the API's reads.
# A missing file is an answer (`@unknown`, `@past_end`), not an error to log.
_STORAGE = "        gzip_static always;\n        gunzip on;\n        log_not_found off;\n"


def _object_location(base: str, proxied: str = "") -> str:
    """Return the internal location through which the API's script reads a file of the tree
    through nginx, decoded if it is stored gzip-compressed: a local `.gz` file (`base` empty),
    or a bucket's object under `base` (with the `proxied` directives).

    The script asks for `OBJECT_URI?key=PATH`, the path percent-encoded; set_misc decodes it.
    A file of any size that a page can have fits in memory.
    """
    return f"""
        location = {OBJECT_URI} {{
            internal;
            subrequest_output_buffer_size 64m;
            set_unescape_uri $cs_object_key $arg_key;
            rewrite ^ "{base}/$cs_object_key?" break;{proxied}
        }}
"""


def _static(path: str, missing: str) -> str:
    """Return a location's directives that answer with the tree's file `path` (with variables),
    stored as it is or as `path.gz` (publish/storage.py), or go to `missing` when there is none.

    Not `try_files`, which tests only the name as served: the static handlers find the file in
    either form (see `_STORAGE`).
    """
    return (
        f'rewrite ^ "{path}" break;\n'
        f"            error_page 404 = {missing};\n"
        f"{_error_page_lines(' ' * 12, (404,))}"
    )


@dataclass(frozen=True)
class TokenApi:
    """The authenticated API's settings: the token store, the manifest and the server's limits."""

    tokens: Path  # OUT/tokens/owners: one file per active token, named by its SHA-256
    manifest: Path  # OUT/current/manifest.json, for the health endpoint (from a directory)
    max_limit: int = DEFAULT_MAX_LIMIT
    cache_control: str = DEFAULT_API_CACHE_CONTROL
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-Proto/-Host are believed


def check_trusted_proxy(cidr: str) -> str:
    """Return `cidr` as nginx's `geo` takes it (an address or a network), or raise ConfigError."""
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError as exc:
        msg = f"{cidr!r}: expected an IP address or a network such as 10.0.0.0/8 or fd00::/8"
        raise ConfigError(msg) from exc


def _api_http_lines(api: TokenApi) -> str:
    """Return the http block's lines of the API: the script, compression, trusted proxies."""
    cidrs = [check_trusted_proxy(cidr) for cidr in api.trusted_proxies]
    proxies = "".join(f"        {cidr} 1;\n" for cidr in cidrs)
    return f"""    js_import api from {quote(str(API_SCRIPT))};
    # The script's answers are compressed for clients that accept it (the ETag is weak).
    gzip on;
    gzip_types application/json application/problem+json;
    gzip_min_length 512;
    gzip_proxied any;
    # Clients whose X-Forwarded-Proto and X-Forwarded-Host make the Link header's URLs.
    geo $cs_trusted_proxy {{
        default 0;
{proxies}    }}
"""


def _api_server(
    source: Path | BucketOrigin, page_size: int, orders: list[str], api: TokenApi, refuse: str
) -> str:
    """Return the server block's settings and locations of the API."""
    if not 1 <= api.max_limit <= 10**9:
        msg = f"max limit {api.max_limit}: expected 1 to 1000000000"
        raise ConfigError(msg)
    bucket = isinstance(source, BucketOrigin)
    objects = source.object_location() if isinstance(source, BucketOrigin) else _object_location("")
    settings = {
        "cs_tokens": quote_value(str(api.tokens)),
        "cs_bucket": "1" if bucket else "0",
        "cs_manifest": BUCKET_MANIFEST if bucket else quote_value(str(api.manifest)),
        "cs_page_size": str(page_size),
        "cs_lists": "1" if orders else "0",  # no orders: the run published summaries only
        "cs_page_group_digits": str(page_group_digits(page_size)),
        "cs_max_limit": str(api.max_limit),
        "cs_cache_control": quote_value(api.cache_control),
    }
    variables = "".join(f"        js_var ${name} {value};\n" for name, value in settings.items())
    no_route = error_body(404, "Not Found", "no such endpoint", problem=True)
    participant = "(?<cs_participant>[^/]+)"
    return f"""{variables}
        location ~ "^/v2/conversations/{participant}(?:/(?<cs_endpoint>mt|mo|summary))?$" {{
            {refuse}
            set_md5 $cs_participant_md5 $cs_participant;
            js_content api.conversation;
        }}

        location = /v2/health {{
            {refuse}
            js_content api.health;
        }}

        location = {PAGINATION_TYPE} {{
            {refuse}
            default_type text/plain;
            return 200 {quote(_PAGINATION_HELP.format(max_limit=api.max_limit))};
        }}

        location / {{
            {refuse}
            return 404 '{no_route}';
        }}
{objects}"""


_PAGINATION_HELP = """Pagination parameters invalid

A list takes start (a whole number from 0, default 0), limit (a whole number from 1 to \
{max_limit}, default 50) and order (ASC or DESC in any case, default ASC), each at most once.
The detail and the invalid-params of the problem name each parameter that is not so.
"""


def _owner_in_path_server(
    source: Path | BucketOrigin, page_size: int, orders: list[str], refuse: str
) -> str:
    """Return the server block's locations of the owner-prefixed URL space, from files alone."""
    desc = "desc" if "desc" in orders else '""'
    owner_dir = "$cs_owner_fanout/$cs_owner"
    participant_dir = "$cs_participant_fanout/$cs_participant"
    conversation = f"/{owner_dir}/v2/conversations/{participant_dir}"
    orders_text = "ASC or DESC" if desc == "desc" else "ASC"
    bad_request = (
        '{"status":400,"error":"Bad Request","message":"start must be a multiple of '
        f'{page_size}, limit {page_size}, order {orders_text}"}}'
    )
    name = "(?<cs_owner>[^/]+)/v2/conversations/(?<cs_participant>[^/]+)"
    page = conversation_file(conversation, "$cs_page_group$cs_list.$cs_order.$cs_start.json")
    answers = _answers(source, conversation, page)
    list_answer = answers["page"] if orders else f"return 404 '{_NO_LISTS}';"
    hashes = _hash_lines()
    return f"""        location ~ "^/{name}/summary$" {{
            {refuse}
            {hashes}
            {answers["summary"]}
        }}

        location ~ "^/{name}(?:/(?<cs_list_suffix>mt|mo))?$" {{
            {refuse}
            if ($cs_bad_request) {{
                return 400 '{bad_request}';
            }}
            {hashes}
            {list_answer}
        }}

        # A known participant with no page there (past the end, or none of that direction).
        location @past_end {{
            {answers["past_end"]}
        }}
{answers["extra"]}
        location @unknown {{
            return 404 '{_NOT_FOUND}';
        }}

        location / {{
            {refuse}
            return 404 '{_NO_ROUTE}';
        }}
"""


def _pagination_maps(page_size: int, orders: list[str]) -> str:
    """Return the maps that check the pagination a tree of pages can answer by itself."""
    desc = "desc" if "desc" in orders else '""'
    return f"""    map $cs_list_suffix $cs_list {{ "" all; default $cs_list_suffix; }}
    # Pagination the tree can answer: page-aligned `start`, `limit` equal to the page size.
    map $arg_start $cs_start {{ "" 0; "~{start_pattern(page_size)}" $arg_start; default ""; }}
    map $arg_limit $cs_limit_ok {{ "" 1; "{page_size}" 1; default 0; }}
    map $arg_order $cs_order {{ "" asc; "~*^asc$" asc; "~*^desc$" {desc}; default ""; }}
    # A page's group directory: its start without the last digits, none for the first group
    # (publish.paths.page_file).
    map $cs_start $cs_page_group {{ "~{page_group_pattern(page_size)}" p$1/; default ""; }}
    map "$cs_start:$cs_limit_ok:$cs_order" $cs_bad_request {{
        "~^[0-9]+:1:(asc|desc)$" 0;
        default 1;
    }}
"""


def render(
    source: Path | BucketOrigin,
    listen: str,
    page_size: int,
    orders: list[str],
    user: str | None,
    *,
    api: TokenApi | None,
) -> str:
    """Return the nginx configuration text for the tree under `source`, a directory or a bucket.

    With `api`, the authenticated API at the gateway's paths; without, the owner-prefixed URL
    space that trusts its caller.

    Raises:
        ConfigError: `listen`, `user` or a setting of `api` cannot be written into the
            configuration.
    """
    listen = check_listen(listen)
    listen_token = quote(listen) if listen.startswith("unix:") else listen
    user_line = f"user {check_user(user)};\n" if user else ""
    problem = api is not None
    hostile = error_body(400, "Bad Request", _HOSTILE_MESSAGE, problem)
    # Checked in each public location rather than once in the server, so that the internal
    # redirects of error_page (which run the server's rewrites again) are never refused.
    refuse = (
        "if ($cs_refusal = 405) { return 405; }\n"
        f"            if ($cs_refusal = 400) {{ return 400 '{hostile}'; }}"
    )
    if isinstance(source, Path):
        shown, origin = quote(str(source)), f"        root {quote_path(source)};\n{_STORAGE}"
    else:
        shown, origin = quote(f"{source.endpoint}{source.base}"), "        gunzip on;\n"
    modules_used: tuple[str, ...]
    if api is None:  # a cache in front must not give a gzip answer to another client
        origin += "        gzip_vary on;\n"
        proxy = "" if isinstance(source, Path) else source.http_lines()
        extra_http = _pagination_maps(page_size, orders) + proxy
        body = _owner_in_path_server(source, page_size, orders, refuse)
        modules_used, needs = MODULES, "libnginx-mod-http-set-misc (and libnginx-mod-http-ndk)"
        fanout_maps = _fanout_maps()
        what = "the owner-prefixed URL space, unauthenticated"
    else:
        proxy = "" if isinstance(source, Path) else source.http_lines()
        extra_http = _api_http_lines(api) + proxy
        body = _api_server(source, page_size, orders, api, refuse)
        modules_used = (*MODULES, JS_MODULE)
        needs = "libnginx-mod-http-set-misc, -ndk and -js (njs)"
        fanout_maps = _fanout_maps(("participant",))
        what = "the authenticated API"
    modules = "".join(f"load_module {MODULE_DIR}/{module};\n" for module in modules_used)
    default_type = "application/problem+json" if problem else "application/json"
    return f"""# nginx configuration generated by convsum: serves {shown} as the read API
# ({what}).
# Start it as: nginx -p PREFIX -c THIS_FILE   (pid, logs and temp files live under PREFIX)
# Needs Debian's {needs} for the MD5 of a name.
{modules}{user_line}worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log warn;

events {{
    worker_connections 512;
}}

http {{
    access_log access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    types {{ application/json json; }}
    default_type {default_type};
    server_tokens off;
    etag on;
    # A byte range of a JSON page is not JSON: always answer the whole file.
    max_ranges 0;

    # A literal `$` for the root path (see convsum.publish.nginx.quote_path).
    geo $cs_dollar {{ default "$"; }}

    # Fan-out directories (convsum.publish.paths.fanout): digits 1-2 and 3-4 of each name's MD5.
{fanout_maps}

{extra_http}
    # Tenant isolation: nginx would resolve these before matching, and so could move a request
    # from the owner in its first segment to another.
{_hostile_path_map()}

    server {{
        listen {listen_token};
{origin}        # Keep one matched segment per raw segment: the owner is always the first raw one.
        merge_slashes off;

{_error_pages(problem)}

{body}    }}
}}
"""
