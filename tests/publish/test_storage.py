"""A tree stored gzip-compressed: the same files as a plain one once decoded, from every engine."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from convsum.config import RunConfig
from convsum.publish.storage import Storage, storage_of
from convsum.run import run_job
from tests.conftest import LOCAL_ENGINES

DEMO = Path(__file__).resolve().parents[2] / "sample_data" / "demo"


def test_storage_gzip_is_gzip_the_same_bytes_every_time() -> None:
    body = b'[{"id":"m1","body":"' + "h\u00e9j ".encode() * 500 + b'"}]'
    stored = Storage(gzip=True).encode(body)
    assert gzip.decompress(stored) == body == Storage(gzip=True).decode(stored)
    assert stored == Storage(gzip=True).encode(body)
    assert stored[4:8] == b"\0\0\0\0"  # no modification time: the bytes do not depend on when
    assert len(stored) < len(body) // 10
    assert Storage().encode(body) == body == Storage().decode(body)


def test_storage_paths_and_the_layout_that_records_it() -> None:
    assert Storage(gzip=True).served("a/summary.json.gz") == "a/summary.json"
    assert Storage(gzip=True).stored("a/summary.json") == "a/summary.json.gz"
    assert Storage().served("a/summary.json") == Storage().stored("a/summary.json")
    assert (Storage(gzip=True).content_encoding, Storage().content_encoding) == ("gzip", None)
    assert storage_of({"version": 3}) == Storage()  # a tree from before the setting
    assert storage_of({"gzip": True}) == Storage(gzip=True)
    assert storage_of({"gzip": False}) == Storage()


def _tree(out: Path, engine: str, gzip: bool) -> tuple[dict[str, bytes], list[str], int]:
    """Every stored file of a demo run by its path, its file list, and the bytes reported."""
    config = RunConfig(
        messages=str(DEMO / "messages"), statuses=str(DEMO / "statuses"), out=str(out),
        engine=engine, desc_pages=True, gzip=gzip,
    )  # fmt: skip
    report = run_job(config)
    api = out / "current" / "api"
    files = {str(p.relative_to(api)): p.read_bytes() for p in api.rglob("*") if p.is_file()}
    listed = (out / "current" / "files.txt").read_text().splitlines()
    return files, listed, report.files.bytes_written


@pytest.mark.parametrize("engine", LOCAL_ENGINES)
def test_storage_a_gzip_tree_decodes_to_the_plain_tree(tmp_path: Path, engine: str) -> None:
    plain, plain_list, plain_bytes = _tree(tmp_path / "plain", "duckdb", gzip=False)
    stored, listed, stored_bytes = _tree(tmp_path / "gzip", engine, gzip=True)
    assert listed == plain_list  # the served paths
    assert sorted(stored) == sorted(f"{path}.gz" for path in plain)
    assert {path.removesuffix(".gz"): gzip.decompress(b) for path, b in stored.items()} == plain
    assert stored_bytes == sum(map(len, stored.values())) < plain_bytes // 3
    assert plain_bytes == sum(map(len, plain.values()))
