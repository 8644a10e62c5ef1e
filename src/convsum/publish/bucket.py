"""An S3-compatible bucket: the few requests a sync makes, each failure one clear error.

Credentials, region and endpoint come from the usual AWS sources, which boto3 reads itself: the
environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_REGION`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`), `~/.aws/config` and
`~/.aws/credentials`, and an instance's or container's role. convsum never stores or logs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from convsum.config import DEFAULT_CACHE_CONTROL
from convsum.errors import ConfigError, SyncError

CONTENT_TYPE = "application/json"
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
_NO_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
)
# The error code in the XML body of a refused request, as <Code>AccessDenied</Code>, and the
# status of a refused request without one, in obstore's text.
_ERROR_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_STATUS = re.compile(r"status code: (\d{3} [A-Za-z ]{1,60})")
# S3's rules for a bucket name (the strict ones, which every S3-compatible store accepts).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


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
        return cls(parts.netloc, prefix)

    def key(self, path: str) -> str:
        """Return the object key of `path`, a path relative to the prefix."""
        return f"{self.prefix}/{path}" if self.prefix else path

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

    def __init__(self, destination: Destination, connections: int) -> None:
        import boto3  # imported here: they take a third of a second, and only a sync needs them
        from botocore.config import Config
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store

        self.destination = destination
        config = Config(
            max_pool_connections=connections,
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            session = boto3.Session()
            self._client: Any = session.client("s3", config=config)
            self.endpoint = str(self._client.meta.endpoint_url)
            credentials = Boto3CredentialProvider(session)
        except ValueError as exc:  # no credentials
            raise SyncError(f"{destination}: {_NO_CREDENTIALS}") from exc
        except Exception as exc:  # botocore raises many types for a bad profile or region
            raise SyncError(f"{destination}: cannot make an S3 client: {exc}") from exc
        self._store = S3Store(
            destination.bucket,
            endpoint=self.endpoint,
            region=self._client.meta.region_name or "us-east-1",
            credential_provider=credentials,
            client_options={
                "allow_http": self.endpoint.startswith("http:"),
                "connect_timeout": "10s",
                "timeout": "60s",
            },
            retry_config={"max_retries": 4, "retry_timeout": timedelta(seconds=60)},
        )

    def put(self, path: str, body: bytes, cache_control: str) -> None:
        """Upload one JSON object."""
        import obstore

        key = self.destination.key(path)
        with self._failing(key):
            obstore.put(
                self._store,
                key,
                body,
                attributes={"Content-Type": CONTENT_TYPE, "Cache-Control": cache_control},
            )

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

    @contextmanager
    def _failing(self, key: str) -> Iterator[None]:
        """Turn a failed request into one SyncError naming the object and the reason."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        from obstore.exceptions import BaseError

        try:
            yield
        except (BaseError, FileNotFoundError) as exc:  # obstore: a missing bucket is the latter
            raise SyncError(f"{self._url(key)}: {_store_reason(exc)}") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
            raise SyncError(f"{self._url(key)}: {reason}") from exc
        except NoCredentialsError as exc:
            raise SyncError(f"{self._url(key)}: {_NO_CREDENTIALS}") from exc
        except BotoCoreError as exc:
            raise SyncError(f"{self._url(key)}: {exc}") from exc


def _store_reason(exc: BaseException) -> str:
    """Return one line saying why obstore's request failed: the store's error code or status
    when it answered, else the first line of the error (the request, its retries and what
    failed)."""
    text = str(exc)
    code = _ERROR_CODE.search(text)
    if code:
        return code.group(1)
    status = _STATUS.search(text)
    if status:
        return f"HTTP {status.group(1).strip()}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.removeprefix("Generic S3 error: ")
