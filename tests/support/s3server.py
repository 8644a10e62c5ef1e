"""A real S3-compatible HTTP server for the tests: moto's standalone server on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.ports import free_port, listening

BIN = Path(sys.executable).parent
# Credentials the server (`local_s3`) accepts; nothing real. The region keeps boto3 from looking
# further.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "convsum-local",
    "AWS_SECRET_ACCESS_KEY": "convsum-local-secret",
    "AWS_REGION": "us-east-1",
}


@contextmanager
def local_s3(log: Path) -> Iterator[str]:
    """Run moto's S3-compatible server (`moto_server`, of the test extra) on a free loopback
    port, logging to `log`; yield its URL."""
    server = Path(sys.executable).parent / "moto_server"
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
        try:
            if not listening(port, process, 30):
                msg = f"moto_server did not start: {log.read_text()}"
                raise RuntimeError(msg)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it can take long to free a million objects
                process.kill()
                process.wait()


def local_s3_client(endpoint: str) -> Any:
    """Return a boto3 client of the local S3 server at `endpoint` (see `local_s3`)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )


@dataclass(frozen=True)
class Stored:
    """One object as the server holds it."""

    body: bytes
    content_type: str
    cache_control: str
    content_encoding: str | None = None


@dataclass
class S3Server:
    endpoint: str

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment whose AWS settings point at this server (and nowhere else)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        config = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        return {**base, **CREDENTIALS, **config, "AWS_ENDPOINT_URL": self.endpoint, **extra}

    def client(self) -> Any:
        return local_s3_client(self.endpoint)

    def new_bucket(self, public_prefix: str | None = None) -> str:
        """Create an empty bucket; with `public_prefix`, anyone may read the objects under it."""
        name = f"convsum-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        if public_prefix is not None:
            self.policy(name, "Allow", "s3:GetObject", f"{public_prefix}/*")
        return name

    def policy(self, bucket: str, effect: str, action: str, keys: str) -> None:
        """Give `bucket` a policy of one statement, for everyone."""
        statement = {
            "Effect": effect,
            "Principal": "*",
            "Action": action,
            "Resource": f"arn:aws:s3:::{bucket}/{keys}",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.client().put_bucket_policy(Bucket=bucket, Policy=orjson.dumps(policy).decode())

    def objects(self, bucket: str, prefix: str) -> dict[str, Stored]:
        """Return every object under `prefix/`, by its key relative to the prefix."""
        client = self.client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/"
        ):
            for item in page.get("Contents", []):
                reply = client.get_object(Bucket=bucket, Key=item["Key"])
                out[item["Key"][len(prefix) + 1 :]] = Stored(
                    reply["Body"].read(),
                    reply["ContentType"],
                    reply.get("CacheControl", ""),
                    reply.get("ContentEncoding"),
                )
        return out


@contextmanager
def running_s3_server(workdir: Path) -> Iterator[S3Server]:
    """Start moto's server on a free loopback port (as the benchmark does); stop it at the end."""
    if not (BIN / "moto_server").exists():
        pytest.fail("moto_server is not installed: `make test` installs it (the test extra)")
    with local_s3(workdir / "moto.log") as endpoint:
        yield S3Server(endpoint)
