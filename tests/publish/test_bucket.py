"""The bucket's edges: no credential in an error, the endpoint nginx-conf reads from, key length."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from convsum.cli import cli
from convsum.publish import bucket as bucket_module
from convsum.publish.bucket import MAX_PREFIX_BYTES, Destination, redact
from convsum.publish.nginx import BucketOrigin, render
from convsum.publish.paths import LAYOUT_VERSION
from tests.support.buckets import PREFIX, run, served_files, sync, write_day
from tests.support.ports import free_port
from tests.support.s3server import S3Server

# Credentials the local server takes as well as its own (it checks no signature), each with
# what a token file with CRLF line endings leaves at its end.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0001",
}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output root with a published tree of one day."""
    inputs = tmp_path / "in"
    write_day(inputs, 1, range(0, 6))
    run(inputs, tmp_path / "out")
    return tmp_path / "out"


def _events(result: Result) -> list[dict[str, Any]]:
    """The JSON log's events, without their time and run id."""
    events = [orjson.loads(line) for line in result.stderr.splitlines()]
    volatile = ("ts", "level", "run_id", "version")
    return [{k: v for k, v in e.items() if k not in volatile} for e in events]


def _leaked(result: Result, *secrets: str) -> list[str]:
    """Return those of `secrets` that the output shows."""
    return [s for s in secrets if s in result.output]


def _malformed(destination: str, variable: str) -> str:
    return (
        f"{destination}: {variable} holds a control or non-ASCII character (a CR from a file "
        "with CRLF line endings?), which no request can carry; set it again without (its value "
        "is not shown)"
    )


@pytest.mark.parametrize("variable", sorted(SECRETS))
@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_bucket_sync_with_a_credential_holding_a_line_end_names_it_without_its_value(
    s3: S3Server, out: Path, variable: str, ending: str
) -> None:
    bucket = s3.new_bucket()
    credentials = {**SECRETS, variable: SECRETS[variable] + ending}
    result = sync(s3, out, bucket, "--log-format", "json", **credentials)
    assert result.exit_code == 1, result.output
    message = _malformed(f"s3://{bucket}/{PREFIX}", variable)
    assert _events(result) == [{"event": "error", "message": message, "exit_code": 1}]
    assert _leaked(result, *SECRETS.values()) == []
    assert s3.objects(bucket, PREFIX) == {}


def test_bucket_sync_text_log_of_a_malformed_token_shows_no_credential(
    s3: S3Server, out: Path
) -> None:
    bucket = s3.new_bucket()
    token = SECRETS["AWS_SESSION_TOKEN"] + "\r"
    result = sync(s3, out, bucket, **{**SECRETS, "AWS_SESSION_TOKEN": token})
    assert result.exit_code == 1, result.output
    message = _malformed(f"s3://{bucket}/{PREFIX}", "AWS_SESSION_TOKEN")
    assert result.stderr.splitlines() == [f"Error: {message}"]
    assert _leaked(result, *SECRETS.values()) == []


def test_bucket_sync_with_a_malformed_credential_in_a_profile_names_its_setting(
    s3: S3Server, out: Path, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    secret = SECRETS["AWS_SECRET_ACCESS_KEY"] + "\u200b"  # pasted from a web page
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = {SECRETS['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {secret}\n",
        encoding="utf-8",
    )
    env: dict[str, str | None] = {
        **s3.env(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials")),
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
    }
    result = CliRunner().invoke(cli, ["sync", str(out), f"s3://{bucket}/{PREFIX}"], env=env)
    assert result.exit_code == 1, result.output
    setting = "aws_secret_access_key (of the shared-credentials-file credentials)"
    assert result.stderr.splitlines() == [
        f"Error: {_malformed(f's3://{bucket}/{PREFIX}', setting)}"
    ]
    assert _leaked(result, *SECRETS.values()) == []


def test_bucket_sync_error_of_a_request_never_shows_a_credential(
    s3: S3Server, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the check up front, the token reaches a request, whose error quotes it.
    monkeypatch.setattr(bucket_module, "_unsendable", lambda _values, _method: None)
    bucket = s3.new_bucket()
    token = SECRETS["AWS_SESSION_TOKEN"] + "\r"
    credentials = {**SECRETS, "AWS_SESSION_TOKEN": token}
    result = sync(s3, out, bucket, "--log-format", "json", **credentials)
    assert result.exit_code == 1, result.output
    message = (
        f"s3://{bucket}/{PREFIX}/: An HTTP Client raised an unhandled exception: "
        "Invalid header value b'***'"
    )
    assert _events(result)[-1] == {"event": "error", "message": message, "exit_code": 1}
    assert _leaked(result, *SECRETS.values()) == []


def test_bucket_sync_with_credentials_in_the_endpoint_url_shows_neither(
    s3: S3Server, out: Path
) -> None:
    bucket = s3.new_bucket()
    address = s3.endpoint.removeprefix("http://")
    endpoint = f"http://minio:pa55word-secret@{address}/?token=tok-secret-0001"
    result = sync(s3, out, bucket, "--log-format", "json", AWS_ENDPOINT_URL=endpoint)
    assert result.exit_code == 1, result.output
    message = (
        f"s3://{bucket}/{PREFIX}: the endpoint http://***@{address}/?*** holds a user name, "
        "password or query string, which S3 does not take (requests are signed with the AWS "
        "credentials); give it as http(s)://HOST[:PORT]"
    )
    assert _events(result) == [{"event": "error", "message": message, "exit_code": 1}]
    assert _leaked(result, "minio", "pa55word-secret", "tok-secret-0001") == []


def test_bucket_redact_clears_each_printed_form_of_a_secret_and_url_credentials() -> None:
    secret = "FwoG/token+value=\r"
    text = (
        f"raw {secret}|str {secret!r}|bytes {secret.encode()!r}|"
        f"json {orjson.dumps(secret).decode()}|"
        "percent FwoG%2Ftoken%2Bvalue%3D%0D|split FwoG/token+value=\\x0d|"
        "url https://s3.example.com/b?X-Amz-Security-Token=abc&x=1 "
        'quoted "http://u:p@h:9000/b/k?list-type=2" '
        "`https://key@h/#frag` keeps s3://b/k and http://h:1/a/b"
    )
    assert redact(text, [secret]) == (
        "raw ***|str '***'|bytes b'***'|json \"***\"|percent ***|split ***\\x0d|"
        "url https://s3.example.com/b?*** "
        'quoted "http://***@h:9000/b/k?***" '
        "`https://***@h/?***` keeps s3://b/k and http://h:1/a/b"
    )


def _nginx_conf_from(s3: S3Server, bucket: str, env: Mapping[str, str | None]) -> Result:
    """Run `nginx-conf` on the bucket's PREFIX through the server's endpoint, in `env`."""
    args = ["--owner-in-path", "--from", f"s3://{bucket}/{PREFIX}", "--endpoint", s3.endpoint]
    return CliRunner().invoke(cli, ["nginx-conf", *args], env=env)


@pytest.mark.parametrize("environment", [None, "dead port"])
def test_bucket_nginx_conf_from_a_bucket_reads_its_manifest_from_the_endpoint_given(
    s3: S3Server, out: Path, environment: str | None
) -> None:
    bucket = s3.new_bucket()
    assert sync(s3, out, bucket).exit_code == 0
    env: dict[str, str | None] = {**s3.env(), "AWS_ENDPOINT_URL": None}  # None: unset
    if environment == "dead port":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = _nginx_conf_from(s3, bucket, env)
    assert result.exit_code == 0, result.output
    origin = BucketOrigin.of(s3.endpoint, bucket, PREFIX)
    assert result.stdout == render(origin, "127.0.0.1:8080", 2, ["asc"], None, api=None)


def test_bucket_nginx_conf_with_credentials_in_endpoint_is_exit_2_without_them(
    out: Path,
) -> None:
    endpoint = "http://minio:pa55word-secret@127.0.0.1:9000"
    result = CliRunner().invoke(
        cli,
        ["nginx-conf", "--owner-in-path", "--from", "s3://convsum-x/api", "--endpoint", endpoint],
    )
    assert result.exit_code == 2, result.output
    assert "http://***@127.0.0.1:9000" in result.stderr
    assert _leaked(result, "minio", "pa55word-secret") == []


def _prefix_for_key_bytes(out: Path, key_bytes: int) -> str:
    """Return a prefix that makes the key of the tree's longest path `key_bytes` long."""
    longest = max(len(p.encode()) for p in served_files(out))
    return "a" * (key_bytes - longest - 1)


def test_bucket_sync_refuses_a_key_over_1024_bytes_before_any_request(
    s3: S3Server, out: Path
) -> None:
    prefix = _prefix_for_key_bytes(out, 1025)
    longest = max(served_files(out), key=lambda p: len(p.encode()))
    closed = f"http://127.0.0.1:{free_port()}"  # any request would fail otherwise
    result = CliRunner().invoke(
        cli, ["sync", str(out), f"s3://convsum-x/{prefix}"], env=s3.env(AWS_ENDPOINT_URL=closed)
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"Error: s3://convsum-x/{prefix}: the key of {longest} would be 1025 bytes, over "
        f"S3's 1024; sync to a prefix of at most {len(prefix) - 1} bytes (this one has "
        f"{len(prefix)})"
    )
    assert not (out / ".sync").exists()


def test_bucket_sync_takes_a_longest_key_of_1024_bytes(s3: S3Server, out: Path) -> None:
    prefix = _prefix_for_key_bytes(out, 1024)
    bucket = s3.new_bucket()
    result = CliRunner().invoke(cli, ["sync", str(out), f"s3://{bucket}/{prefix}"], env=s3.env())
    assert result.exit_code == 0, result.output
    assert sorted(s3.objects(bucket, prefix)) == sorted([*served_files(out), "manifest.json"])


@pytest.mark.parametrize("command", [["sync", "OUT"], ["nginx-conf", "OUT", "--from"]])
def test_bucket_prefix_that_cannot_hold_the_manifest_key_is_exit_2(
    out: Path, command: list[str]
) -> None:
    args = [str(out) if a == "OUT" else a for a in command]
    result = CliRunner().invoke(cli, [*args, f"s3://convsum-x/{'a' * 1011}"])
    assert result.exit_code == 2, result.output
    assert (
        "s3://convsum-x/...: the prefix is 1011 bytes; S3 keys are at most 1024, so a prefix "
        "can have at most 1010 (for PREFIX/manifest.json)"
    ) in result.stderr


def test_bucket_destination_takes_a_prefix_of_1010_bytes() -> None:
    assert MAX_PREFIX_BYTES == 1010
    destination = Destination.parse(f"s3://convsum-x/{'a' * 1010}")
    assert destination == Destination("convsum-x", "a" * 1010)


def test_bucket_nginx_conf_from_a_bucket_of_an_older_layout_says_to_run_and_sync(
    s3: S3Server, out: Path
) -> None:
    bucket = s3.new_bucket()
    assert sync(s3, out, bucket).exit_code == 0
    key = f"{PREFIX}/manifest.json"
    manifest = orjson.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["layout"]["version"] == LAYOUT_VERSION
    del manifest["layout"]["version"]  # as a sync of an earlier convsum wrote it
    s3.client().put_object(Bucket=bucket, Key=key, Body=orjson.dumps(manifest))
    result = _nginx_conf_from(s3, bucket, s3.env())
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert result.stderr == (
        f"Error: s3://{bucket}/{PREFIX}/manifest.json: a tree of layout 1, which this convsum "
        f"(layout {LAYOUT_VERSION}) cannot serve; run `convsum run` on the output root, then "
        "`convsum sync` to this bucket\n"
    )
