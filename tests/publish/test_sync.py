"""`convsum sync` against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import gzip
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from convsum.cli import cli
from convsum.config import DEFAULT_CACHE_CONTROL
from convsum.publish.paths import LAYOUT_VERSION
from tests.support.buckets import PREFIX, run, served_files, sync, write_day
from tests.support.ports import free_port
from tests.support.processes import signalling_itself
from tests.support.s3server import S3Server, running_s3_server

pytestmark = pytest.mark.slow  # left out of make test-fast

STAGES = ("plan", "pages", "summaries", "deletions", "manifest")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """Inputs of two days and the output root published from them: (inputs, out)."""
    inputs = tmp_path / "in"
    write_day(inputs, 1, range(0, 12))
    write_day(inputs, 2, range(8, 16))
    run(inputs, tmp_path / "out")
    return inputs, tmp_path / "out"


@pytest.fixture
def synced(s3: S3Server, tree: tuple[Path, Path]) -> tuple[Path, Path, str]:
    """The tree of `tree`, synced to a new bucket: (inputs, out, bucket)."""
    inputs, out = tree
    bucket = s3.new_bucket()
    _report(sync(s3, out, bucket))
    return inputs, out, bucket


def _report(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


def _manifest(out: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads((out / "current" / "manifest.json").read_bytes())
    return manifest


def _assert_bucket_is_the_tree(
    s3: S3Server, bucket: str, out: Path, cache_control: str = DEFAULT_CACHE_CONTROL
) -> None:
    """The bucket holds the served tree, object for object, and the manifest of its run."""
    stored = s3.objects(bucket, PREFIX)
    manifest = stored.pop("manifest.json")
    api = out / "current" / "api"
    files = served_files(out)
    local = _manifest(out)
    gzip = local["layout"]["gzip"]
    suffix = ".gz" if gzip else ""
    assert sorted(stored) == sorted(files)
    assert {p: s.body for p, s in stored.items()} == {
        p: (api / (p + suffix)).read_bytes() for p in files
    }
    assert {(s.content_type, s.cache_control) for s in [*stored.values(), manifest]} == {
        ("application/json", cache_control)
    }
    assert {s.content_encoding for s in stored.values()} == {"gzip" if gzip else None}
    assert manifest.content_encoding is None
    document = orjson.loads(manifest.body)
    assert document == {
        "run_id": local["run_id"],
        "started_at": local["started_at"],
        "newest_input": local["newest_input"],
        "convsum_version": local["convsum_version"],
        "layout": {"version": LAYOUT_VERSION, "page_size": 2, "orders": ["asc"], "gzip": gzip},
        "files": len(files),
        "counts": local["counts"],
    }


def test_sync_first_sync_copies_the_tree_object_for_object(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    _, out = tree
    bucket = s3.new_bucket()
    report = _report(sync(s3, out, bucket, "--cache-control", "public, max-age=60"))
    files = len(served_files(out))
    assert (report["sent"], report["unchanged"], report["deleted"]) == (files, 0, 0)
    assert report["run_id"] == _manifest(out)["run_id"]
    _assert_bucket_is_the_tree(s3, bucket, out, "public, max-age=60")


def test_sync_of_a_synced_tree_sends_nothing(s3: S3Server, synced: tuple[Path, Path, str]) -> None:
    _, out, bucket = synced
    report = _report(sync(s3, out, bucket))
    assert (report["sent"], report["deleted"], report["bytes"]) == (0, 0, 0)


def test_sync_with_another_cache_control_sends_every_object_again(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    _, out, bucket = synced
    _killed_at(s3, out, bucket, "summaries", "--cache-control", "no-cache")
    report = _report(sync(s3, out, bucket, "--cache-control", "no-cache"))
    files = len(served_files(out))
    assert 0 < report["sent"] < files  # the pages sent before the kill are not sent again
    _assert_bucket_is_the_tree(s3, bucket, out, "no-cache")


def test_sync_nightly_sends_only_what_the_run_changed(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    inputs, out, bucket = synced
    before = _manifest(out)["run_id"]
    write_day(inputs, 3, range(14, 18))
    assert run(inputs, out).mode == "incremental"
    changes = _manifest(out)["changes"]
    assert changes["previous_run_id"] == before
    result = sync(s3, out, bucket, "--log-format", "json")
    report = _report(result)
    assert 0 < report["sent"] == changes["written_count"]
    plan = next(e for e in _events(result) if e.get("stage") == "plan" and "counts" in e)
    assert plan["counts"]["files"] == changes["written_count"]  # the change list, not the tree
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_after_a_rebuild_deletes_what_the_run_removed(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    inputs, out, bucket = synced
    for role in ("messages", "statuses"):
        (inputs / role / "day=2" / "part.parquet").unlink()
    assert run(inputs, out).mode == "full"
    removed = _manifest(out)["changes"]["removed_count"]
    report = _report(sync(s3, out, bucket))
    assert report["deleted"] == removed > 0
    assert report["sent"] < len(served_files(out))
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_after_an_identical_rebuild_sends_nothing(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    inputs, out = tree
    bucket = s3.new_bucket()
    first = _report(sync(s3, out, bucket))
    assert run(inputs, out, full=True).mode == "full"
    report = _report(sync(s3, out, bucket))
    assert (report["sent"], report["unchanged"], report["deleted"]) == (0, first["sent"], 0)
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_of_a_gzip_tree_sends_its_stored_bytes_under_the_served_paths(
    s3: S3Server, tree: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, plain = tree
    out = tmp_path / "gzip"
    run(inputs, out, gzip=True)
    bucket = s3.new_bucket()
    first = _report(sync(s3, out, bucket))
    assert first["sent"] == len(served_files(out))
    _assert_bucket_is_the_tree(s3, bucket, out)  # Content-Encoding: gzip, the .gz bytes
    decoded = {p: gzip.decompress(s.body) for p, s in s3.objects(bucket, PREFIX).items()
               if p != "manifest.json"}  # fmt: skip
    api = plain / "current" / "api"
    assert decoded == {p: (api / p).read_bytes() for p in served_files(plain)}
    # A nightly run rewrites only what changed: the bucket gets only those objects again.
    write_day(inputs, 3, range(14, 18))
    assert run(inputs, out, gzip=True).mode == "incremental"
    written = _manifest(out)["changes"]["written_count"]
    assert 0 < _report(sync(s3, out, bucket))["sent"] == written < first["sent"]
    _assert_bucket_is_the_tree(s3, bucket, out)


def _events(result: Result) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def _killed_at(s3: S3Server, out: Path, bucket: str, stage: str, *args: str) -> None:
    """Run `convsum sync`, which SIGKILLs itself once it logs the start of `stage`."""
    command = [*signalling_itself(stage), "sync", str(out), f"s3://{bucket}/{PREFIX}"]
    command += ["--log-format", "json", *args]
    done = subprocess.run(command, capture_output=True, env=s3.env(), timeout=30, check=False)
    assert done.returncode == -signal.SIGKILL, f"the sync ended before {stage}: {done.stderr!r}"


@pytest.mark.parametrize("stage", STAGES)
def test_sync_killed_at_a_stage_then_rerun_leaves_the_bucket_equal_to_the_tree(
    s3: S3Server, synced: tuple[Path, Path, str], stage: str
) -> None:
    inputs, out, bucket = synced
    # A rebuild that changes files, adds some and removes others: every stage has work.
    for role in ("messages", "statuses"):
        (inputs / role / "day=2" / "part.parquet").unlink()
    write_day(inputs, 4, range(20, 24))
    assert run(inputs, out).mode == "full"
    _killed_at(s3, out, bucket, stage)
    report = _report(sync(s3, out, bucket))
    assert report["run_id"] == _manifest(out)["run_id"]
    _assert_bucket_is_the_tree(s3, bucket, out)
    assert _report(sync(s3, out, bucket))["sent"] == 0


def test_sync_killed_then_a_nightly_run_then_rerun_includes_the_run(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    inputs, out = tree
    bucket = s3.new_bucket()
    _killed_at(s3, out, bucket, "summaries")
    held = _held(out)
    assert len(held) > 0  # the pages sent before the kill are recorded
    write_day(inputs, 3, range(14, 18))
    assert run(inputs, out).mode == "incremental"
    _report(sync(s3, out, bucket))
    _assert_bucket_is_the_tree(s3, bucket, out)


def _record(out: Path) -> Path:
    (record,) = (out / ".sync").glob("*.sqlite")
    return record


def _held(out: Path) -> list[str]:
    with sqlite3.connect(_record(out)) as con:
        return [row[0] for row in con.execute("SELECT path FROM held")]


def _synced_run(out: Path) -> str | None:
    with sqlite3.connect(_record(out)) as con:
        row = con.execute("SELECT run_id FROM synced").fetchone()
    return row[0] if row else None


def test_sync_to_an_unreachable_endpoint_is_one_line_exit_1_and_claims_nothing(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    _, out = tree
    closed = f"http://127.0.0.1:{free_port()}"
    result = sync(s3, out, "convsum-nowhere", AWS_ENDPOINT_URL=closed)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()[-1:]
    assert line.startswith(f"Error: s3://convsum-nowhere/{PREFIX}/"), line
    assert "Could not connect to the endpoint URL" in line
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert (_held(out), _synced_run(out)) == ([], None)


def test_sync_when_the_endpoint_goes_away_names_the_object_and_claims_nothing(
    tree: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, out = tree
    with running_s3_server(tmp_path) as server:
        bucket = server.new_bucket()
        synced = _report(sync(server, out, bucket))["run_id"]
        env = server.env()
    write_day(inputs, 3, range(14, 18))
    assert run(inputs, out).mode == "incremental"
    result = CliRunner().invoke(cli, ["sync", str(out), f"s3://{bucket}/{PREFIX}"], env=env)
    assert result.exit_code == 1, result.output
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"Error: s3://{bucket}/{PREFIX}/"), line
    assert "error sending request" in line
    assert "Traceback" not in result.output
    assert _synced_run(out) == synced  # the bucket still holds, as far as anyone is told, that run


def test_sync_to_a_missing_bucket_names_the_object_and_the_reason(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    _, out = tree
    result = sync(s3, out, "convsum-no-such-bucket")
    assert result.exit_code == 1, result.output
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"Error: s3://convsum-no-such-bucket/{PREFIX}/"), line
    assert "NoSuchBucket" in line


def test_sync_refused_by_the_store_is_exit_1_naming_the_object(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    _, out, bucket = synced  # listed once, so the next requests are uploads
    first = sorted(served_files(out))[0]
    api = out / "current" / "api"
    (api / first).write_bytes((api / first).read_bytes() + b" ")
    s3.policy(bucket, "Deny", "s3:PutObject", "*")
    (out / "current" / "manifest.json").write_bytes(
        orjson.dumps({**_manifest(out), "run_id": "forced-resync"})
    )
    result = sync(s3, out, bucket)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith(f"Error: s3://{bucket}/{PREFIX}/{first}: ")


def test_sync_stopped_by_a_refused_summary_resumes_with_the_summaries(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    inputs, out, bucket = synced
    write_day(inputs, 3, range(14, 18))
    assert run(inputs, out).mode == "incremental"
    written = (out / "current" / "written.txt").read_text().splitlines()
    summaries = [p for p in written if p.endswith(".summary.json")]
    s3.policy(bucket, "Deny", "s3:PutObject", f"{PREFIX}/*.summary.json")
    result = sync(s3, out, bucket)
    assert result.exit_code == 1, result.output
    line = result.stderr.splitlines()[-1]
    assert line.endswith(".summary.json: HTTP 403 Forbidden"), line
    assert _synced_run(out) != _manifest(out)["run_id"]
    assert set(written) - set(summaries) <= set(_held(out))  # the pages went first
    s3.client().delete_bucket_policy(Bucket=bucket)
    report = _report(sync(s3, out, bucket))
    assert report["sent"] == len(summaries)
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_refuses_a_prefix_holding_objects_it_did_not_put(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    _, out = tree
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/someone-elses.txt", Body=b"mine")
    result = sync(s3, out, bucket)
    assert result.exit_code == 1, result.output
    assert "holds 1 objects but no manifest.json of convsum's" in result.stderr
    assert set(s3.objects(bucket, PREFIX)) == {"someone-elses.txt"}


def test_sync_with_a_lost_record_sends_nothing_and_removes_strays(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    _, out, bucket = synced
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/zz/stray.json", Body=b"{}")
    _record(out).unlink()
    report = _report(sync(s3, out, bucket))
    assert (report["sent"], report["deleted"]) == (0, 1)
    _assert_bucket_is_the_tree(s3, bucket, out)


def _tamper(s3: S3Server, bucket: str, out: Path) -> dict[str, int]:
    """Behind the record's back, delete one object, alter another (same size, other bytes)
    and add a stray one; return the sizes of the two the tree must send again."""
    first, second = sorted(served_files(out))[:2]
    client = s3.client()
    client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{first}")
    body = (out / "current" / "api" / second).read_bytes()
    altered = body[:-1] + (b"x" if body[-1:] != b"x" else b"y")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/{second}", Body=altered)
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/zz/stray.json", Body=b"{}")
    return {p: len((out / "current" / "api" / p).read_bytes()) for p in (first, second)}


def test_sync_verify_repairs_a_deleted_an_altered_and_a_stray_object(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    _, out, bucket = synced
    resent = _tamper(s3, bucket, out)
    assert _report(sync(s3, out, bucket))["sent"] == 0  # a sync trusts its record
    report = _report(sync(s3, out, bucket, "--verify"))
    files = len(served_files(out))
    assert report == {
        "run_id": _manifest(out)["run_id"],
        "destination": f"s3://{bucket}/{PREFIX}",
        "listed": files + 1,  # the tree's objects but one, the stray and the manifest
        "sent": 2,
        "bytes": sum(resent.values()),
        "unchanged": files - 2,
        "deleted": 1,
    }
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_verify_of_an_intact_bucket_sends_nothing(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    _, out, bucket = synced
    report = _report(sync(s3, out, bucket, "--verify"))
    files = len(served_files(out))
    assert (report["listed"], report["sent"], report["unchanged"], report["deleted"]) == (
        files + 1,
        0,
        files,
        0,
    )


def test_sync_after_a_rebuild_repairs_a_deleted_an_altered_and_a_stray_object(
    s3: S3Server, synced: tuple[Path, Path, str]
) -> None:
    inputs, out, bucket = synced
    resent = _tamper(s3, bucket, out)
    assert run(inputs, out, full=True).mode == "full"  # the same files, rebuilt
    report = _report(sync(s3, out, bucket))
    assert (report["sent"], report["bytes"], report["deleted"]) == (2, sum(resent.values()), 1)
    _assert_bucket_is_the_tree(s3, bucket, out)


def test_sync_json_log_has_each_stage_and_the_synced_event(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    _, out = tree
    result = sync(s3, out, s3.new_bucket(), "--log-format", "json")
    events = _events(result)
    ends = [e["stage"] for e in events if e["event"] == "stage_end"]
    assert ends == list(STAGES)
    assert events[-1]["event"] == "synced"
    assert {e["run_id"] for e in events} == {_manifest(out)["run_id"]}


def test_sync_run_with_sync_to_ends_with_its_sync(s3: S3Server, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_day(inputs, 1, range(0, 10))
    bucket = s3.new_bucket()
    (tmp_path / "job.toml").write_text(
        'messages = "in/messages"\nstatuses = "in/statuses"\nout = "out"\npage_size = 2\n'
        f'sync_to = "s3://{bucket}/{PREFIX}"\ncache_control = "max-age=30"\n'
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "job.toml")], env=s3.env())
    assert result.exit_code == 0, result.output
    assert "synced (destination=" in result.stderr
    _assert_bucket_is_the_tree(s3, bucket, tmp_path / "out", "max-age=30")


def test_sync_run_with_a_bad_sync_to_is_exit_2_before_reading(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('messages = "m"\nout = "o"\nsync_to = "s3:/x"\n')
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "job.toml")])
    assert result.exit_code == 2, result.output
    assert "expected s3://BUCKET" in result.stderr


def test_sync_waits_for_no_run_a_run_holding_the_root_is_exit_75(
    s3: S3Server, tree: tuple[Path, Path]
) -> None:
    import fcntl

    _, out = tree
    with (out / ".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = sync(s3, out, s3.new_bucket())
    assert result.exit_code == 75, result.output


@pytest.mark.parametrize(
    "destination",
    [
        "http://bucket/x",
        "s3://",
        "s3://UPPER/x",
        "s3://b/x",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
    ],
)
def test_sync_cli_rejects_a_bad_destination_with_exit_2(
    tree: tuple[Path, Path], destination: str
) -> None:
    _, out = tree
    result = CliRunner().invoke(cli, ["sync", str(out), destination])
    assert result.exit_code == 2, result.output
    assert "expected s3://BUCKET" in result.stderr


@pytest.mark.parametrize("value", ["", "max-age=1\r\nX-Evil: 1", "max-age=\x00"])
def test_sync_cli_rejects_a_cache_control_that_is_no_header_value(
    tree: tuple[Path, Path], value: str
) -> None:
    _, out = tree
    result = CliRunner().invoke(cli, ["sync", str(out), "s3://bucket/x", "--cache-control", value])
    assert result.exit_code == 2, result.output
