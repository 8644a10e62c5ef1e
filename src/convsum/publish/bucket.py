"""An S3-compatible bucket: the few requests a sync makes, each failure one clear error.

Credentials, region and endpoint come from the usual AWS sources, which boto3 reads itself: the
environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_REGION`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`), `~/.aws/config` and
`~/.aws/credentials`, and an instance's or container's role. convsum never stores or logs them:
a credential that no request header can carry (a CR from a file with CRLF line endings) is refused
before any request, by name, and every error's text is cleared of the resolved credentials and of
the user name, password and query of any URL in it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from convsum.config import DEFAULT_CACHE_CONTROL
from convsum.errors import ConfigError, SyncError

CONTENT_TYPE = "application/json"
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
BUCKET_MANIFEST = "manifest.json"  # never a tree path: those have at least six segments
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes
# The longest prefix that can hold even the shortest key a sync writes, PREFIX/manifest.json.
MAX_PREFIX_BYTES = MAX_KEY_BYTES - len(f"/{BUCKET_MANIFEST}")
_NO_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
)
# The error code in the XML body of a refused request, as <Code>AccessDenied</Code>, and the
# status of a refused request without one, in obstore's text.
_ERROR_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_STATUS = re.compile(r"status code: (\d{3} [A-Za-z ]{1,60})")
# S3's rules for a bucket name (the strict ones, which every S3-compatible store accepts).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A URL in an error's text, up to the quote, backtick, bracket or space that ends it there.
_URL = re.compile(
    r"(?P<start>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#\s'\"`<>]*)"
    r"(?P<path>[^?#\s'\"`<>]*)(?P<query>[?#][^\s'\"`<>]*)?"
)
_HIDDEN = "***"
# Shorter strings are not cleared from errors: they would blot out ordinary words, and no real
# key id, secret or token is that short.
_MIN_SECRET = 8
# Each credential boto3 resolves: the environment variable, and the setting of a profile.
_CREDENTIAL_NAMES = (
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ("AWS_SESSION_TOKEN", "aws_session_token"),
)


@dataclass(frozen=True)
class Destination:
    """Where a tree is synced: a bucket and a key prefix (no leading or trailing `/`)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Destination:
        """Return the destination an `s3://BUCKET/PREFIX` URL names (ConfigError if none)."""
        parts = urlsplit(url)
        prefix = parts.path.strip("/")
        segments = prefix.split("/") if prefix else []
        if (
            parts.scheme != "s3"
            or not _BUCKET_NAME.fullmatch(parts.netloc)
            or parts.query
            or parts.fragment
            or any(s in ("", ".", "..") for s in segments)
            or any(ord(c) < 32 or ord(c) == 127 for c in prefix)
        ):
            msg = (
                f"{url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX (a bucket name of 3 to 63 "
                "lowercase letters, digits, dots and hyphens; no empty, . or .. prefix segment)"
            )
            raise ConfigError(msg)
        if _bytes(prefix) > MAX_PREFIX_BYTES:
            msg = (
                f"s3://{parts.netloc}/...: the prefix is {_bytes(prefix)} bytes; S3 keys are at "
                f"most {MAX_KEY_BYTES}, so a prefix can have at most {MAX_PREFIX_BYTES} (for "
                f"PREFIX/{BUCKET_MANIFEST})"
            )
            raise ConfigError(msg)
        return cls(parts.netloc, prefix)

    def key(self, path: str) -> str:
        """Return the object key of `path`, a path relative to the prefix."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def check_key_length(self, longest: str) -> None:
        """Raise SyncError if the key of `longest`, the longest path to sync, is over S3's limit."""
        size = _bytes(self.key(longest))
        if size > MAX_KEY_BYTES:
            room = MAX_KEY_BYTES - _bytes(longest) - 1
            msg = (
                f"{self}: the key of {longest} would be {size} bytes, over S3's {MAX_KEY_BYTES}; "
                f"sync to a prefix of at most {room} bytes (this one has {_bytes(self.prefix)})"
            )
            raise SyncError(msg)

    def path(self, key: str) -> str:
        """Return the path relative to the prefix of an object key under it."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def check_cache_control(value: str) -> str:
    """Return `value` if it can be sent as a Cache-Control header (printable ASCII)."""
    if not value or not all(" " <= c <= "~" for c in value):
        msg = f"cache control {value!r}: expected a header value such as {DEFAULT_CACHE_CONTROL!r}"
        raise ConfigError(msg)
    return value


class Bucket:
    """The requests to one destination.

    Uploads and deletions, the bulk of a sync, go through obstore (Rust's object_store): a third
    of boto3's CPU time per small object, measured against the same server. boto3 resolves the
    credentials, region and endpoint the usual AWS way and makes the rare requests: listing
    the prefix and reading the bucket's manifest. Both clients are safe to share across threads.
    """

    def __init__(
        self, destination: Destination, connections: int, endpoint: str | None = None
    ) -> None:
        """Make the clients; `endpoint` overrides the AWS environment's (as `http://HOST:PORT`).

        Raises:
            SyncError: no credentials, a credential or endpoint no request can carry, or a
                profile or region boto3 cannot use.
        """
        import boto3  # imported here: they take a third of a second, and only a sync needs them
        from botocore.config import Config
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store

        self.destination = destination
        self._secrets: tuple[str, ...] = ()
        config = Config(
            max_pool_connections=connections,
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            session = boto3.Session()
            self._secrets = _credentials(session, destination)
            self._client: Any = session.client("s3", config=config, endpoint_url=endpoint)
            self.endpoint = _checked_endpoint(str(self._client.meta.endpoint_url), destination)
            self._store = S3Store(
                destination.bucket,
                endpoint=self.endpoint,
                region=self._client.meta.region_name or "us-east-1",
                credential_provider=Boto3CredentialProvider(session),
                client_options={
                    "allow_http": self.endpoint.startswith("http:"),
                    "connect_timeout": "10s",
                    "timeout": "60s",
                },
                retry_config={"max_retries": 4, "retry_timeout": timedelta(seconds=60)},
            )
        except SyncError:
            raise
        except Exception as exc:  # botocore raises many types for a bad profile or region
            msg = f"{destination}: cannot make an S3 client: {self._reason(exc)}"
            raise SyncError(msg) from exc

    def put(self, path: str, body: bytes, cache_control: str, encoding: str | None = None) -> None:
        """Upload one JSON object; `encoding` is its Content-Encoding (None: the JSON itself)."""
        import obstore

        key = self.destination.key(path)
        attributes = {"Content-Type": CONTENT_TYPE, "Cache-Control": cache_control}
        if encoding is not None:
            attributes["Content-Encoding"] = encoding
        with self._failing(key):
            obstore.put(self._store, key, body, attributes=attributes)

    def get(self, path: str) -> bytes | None:
        """Return an object's body, or None if there is no such object."""
        key = self.destination.key(path)
        with self._failing(key):
            try:
                reply = self._client.get_object(Bucket=self.destination.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            body: bytes = reply["Body"].read()
            return body

    def delete(self, paths: list[str]) -> None:
        """Delete objects, DELETE_BATCH to a request (a missing one is no error)."""
        import obstore

        keys = [self.destination.key(p) for p in paths]
        with self._failing(keys[0]):
            obstore.delete(self._store, keys)

    def listing(self) -> Iterator[tuple[str, str]]:
        """Yield (path, ETag) of every object under the prefix."""
        prefix = self.destination.key("")
        paginator = self._client.get_paginator("list_objects_v2")
        with self._failing(prefix):
            for page in paginator.paginate(Bucket=self.destination.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    path = self.destination.path(item["Key"])
                    yield path, item["ETag"].strip('"')

    def _url(self, key: str) -> str:
        return f"s3://{self.destination.bucket}/{key}"

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _reason(self, exc: BaseException) -> str:
        """Return the first line of `exc`'s text, without a credential."""
        lines = self._redact(str(exc)).strip().splitlines()
        return lines[0] if lines else type(exc).__name__

    @contextmanager
    def _failing(self, key: str) -> Iterator[None]:
        """Turn a failed request into one SyncError naming the object and the reason (without
        a credential in it)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        from obstore.exceptions import BaseError

        try:
            yield
        except (BaseError, FileNotFoundError) as exc:  # obstore: a missing bucket is the latter
            reason = _store_reason(self._redact(str(exc)), type(exc).__name__)
            raise SyncError(f"{self._url(key)}: {reason}") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
            raise SyncError(f"{self._url(key)}: {self._redact(reason)}") from exc
        except NoCredentialsError as exc:
            raise SyncError(f"{self._url(key)}: {_NO_CREDENTIALS}") from exc
        except BotoCoreError as exc:
            raise SyncError(f"{self._url(key)}: {self._reason(exc)}") from exc


def _store_reason(text: str, kind: str) -> str:
    """Return one line saying why obstore's request failed (`text`, of an error of type `kind`):
    the store's error code or status when it answered, else the first line of the error (the
    request, its retries and what failed)."""
    code = _ERROR_CODE.search(text)
    if code:
        return code.group(1)
    status = _STATUS.search(text)
    if status:
        return f"HTTP {status.group(1).strip()}"
    first = text.strip().splitlines()[0] if text.strip() else kind
    return first.removeprefix("Generic S3 error: ")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` without any of `secrets`, in any of the forms an error prints them, and
    without the user name, password and query string of any URL in it."""
    forms = {form for secret in secrets for form in _printed_forms(secret)}
    for form in sorted((f for f in forms if len(f) >= _MIN_SECRET), key=len, reverse=True):
        text = text.replace(form, _HIDDEN)
    return _URL.sub(_bare_url, text)


def _printed_forms(secret: str) -> Iterator[str]:
    """Yield `secret` as it is, escaped as Python's and JSON's reprs and percent-encoding escape
    it, and each run of its printable characters (what is left between escapes)."""
    yield secret
    yield repr(secret)[1:-1]
    yield repr(secret.encode("utf-8", "surrogateescape"))[2:-1]
    yield json.dumps(secret)[1:-1]
    yield quote(secret, safe="")
    yield from re.split(r"[^ -~]+", secret)


def _bare_url(url: re.Match[str]) -> str:
    authority = url["authority"]
    if "@" in authority:
        authority = f"{_HIDDEN}@{authority.rpartition('@')[2]}"
    query = f"?{_HIDDEN}" if url["query"] else ""
    return f"{url['start']}{authority}{url['path']}{query}"


def _credentials(session: Any, destination: Destination) -> tuple[str, ...]:
    """Return the credentials `session` resolves, to keep them out of errors.

    Raises:
        SyncError: there are none, or one holds what no request header can carry (named, its
            value not shown).
    """
    credentials = session.get_credentials()
    if credentials is None:
        raise SyncError(f"{destination}: {_NO_CREDENTIALS}")
    frozen = credentials.get_frozen_credentials()
    values = (frozen.access_key, frozen.secret_key, frozen.token)
    malformed = _unsendable(values, credentials.method)
    if malformed:
        msg = (
            f"{destination}: {malformed} holds a control or non-ASCII character (a CR from a "
            "file with CRLF line endings?), which no request can carry; set it again without "
            "(its value is not shown)"
        )
        raise SyncError(msg)
    return tuple(v for v in values if v)


def _unsendable(values: tuple[str | None, ...], method: str) -> str | None:
    """Return the name of the first credential (key id, secret, token) that is not printable
    ASCII, as the user set it: its environment variable, or its setting where boto3 found it."""
    for (variable, setting), value in zip(_CREDENTIAL_NAMES, values, strict=True):
        if value and not all(" " <= c <= "~" for c in value):
            if method != "env":
                return f"{setting} (of the {method} credentials)"
            if variable == "AWS_SESSION_TOKEN" and variable not in os.environ:
                return "AWS_SECURITY_TOKEN"  # the older name, which boto3 also reads
            return variable
    return None


def _checked_endpoint(endpoint: str, destination: Destination) -> str:
    """Return the endpoint boto3 resolved, if it holds no user name, password or query."""
    try:
        parts = urlsplit(endpoint)
        credentialed = parts.username is not None or bool(parts.query or parts.fragment)
    except ValueError:  # a malformed address: the first request says what is wrong
        return endpoint
    if credentialed:
        msg = (
            f"{destination}: the endpoint {redact(endpoint)} holds a user name, password or "
            "query string, which S3 does not take (requests are signed with the AWS "
            "credentials); give it as http(s)://HOST[:PORT]"
        )
        raise SyncError(msg)
    return endpoint


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))
