"""The output root: convsum writes only into its own roots and deletes only what it made."""

from __future__ import annotations

from pathlib import Path

import pytest

from convsum.config import RunConfig
from convsum.errors import PublishError
from convsum.publish.tree import MARK
from convsum.run import run_job
from tests.conftest import (
    MESSAGE_TYPES,
    STATUS_TYPES,
    RunTree,
    message,
    snapshot,
    status,
    write_parquet,
)


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    m = write_parquet(tmp_path / "in" / "messages.parquet", [message("m1")], MESSAGE_TYPES)
    s = write_parquet(tmp_path / "in" / "statuses.parquet", [status("m1", 201)], STATUS_TYPES)
    return RunConfig(messages=str(m), statuses=str(s), out=str(tmp_path / "out"))


def test_tree_foreign_directory_is_refused_and_left_alone(config: RunConfig) -> None:
    out = Path(config.out)
    (out / "trees" / "keepme").mkdir(parents=True)
    (out / "trees" / "keepme" / "f").write_text("x")
    before = snapshot(out)
    with pytest.raises(PublishError, match=f"{out}: not empty and not a convsum output root"):
        run_job(config)
    assert snapshot(out) == before


def test_tree_empty_directory_becomes_an_output_root(config: RunConfig) -> None:
    Path(config.out).mkdir()
    run_job(config)
    assert (Path(config.out) / MARK).is_file()
    assert (Path(config.out) / "current" / MARK).is_file()


def test_tree_unmarked_directory_in_trees_survives_every_run(config: RunConfig) -> None:
    out = Path(config.out)
    run_job(config)
    (out / "trees" / "keepme").mkdir()
    (out / "trees" / "keepme" / "f").write_text("x")
    (out / ".work-keepme").mkdir()
    (out / ".work-keepme" / "f").write_text("x")
    (out / ".work-empty").mkdir()  # as a run killed before marking it leaves one
    first = (out / "current").readlink()
    run_job(config, full=True)
    assert (out / "current").readlink() != first
    assert not (out / first).exists()  # the replaced tree was convsum's own: removed
    assert (out / "trees" / "keepme" / "f").read_text() == "x"
    assert (out / ".work-keepme" / "f").read_text() == "x"
    assert not (out / ".work-empty").exists()


def test_tree_root_published_before_marks_is_adopted(config: RunConfig) -> None:
    out = Path(config.out)
    run_job(config)
    served = out / (out / "current").readlink()
    for mark in (out / MARK, served / MARK):
        mark.unlink()
    (out / "trees" / "old-unmarked").mkdir()
    run_job(config, full=True)
    assert (out / MARK).is_file()
    assert not served.exists()  # marked on adoption, then replaced by the full run
    assert (out / "trees" / "old-unmarked").is_dir()


@pytest.mark.parametrize("size", [2_100, 65_536])
def test_tree_names_of_any_length_are_published(run_tree: RunTree, size: int) -> None:
    long_sender, long_owner = "S" * size, "o\x01" * (size // 2)
    tree = run_tree(
        [message("m1", sender=long_sender), message("m2", owner=long_owner)],
        [status("m1", 201)],
    )
    assert tree.summary(long_sender)["totalMessageCount"] == 1  # type: ignore[index]
    assert tree.ids(long_sender) == ["m1"]
    assert tree.summary("46700000001", owner=long_owner)["totalMessageCount"] == 1  # type: ignore[index]
    assert max(len(path.encode()) for path in tree.files()) < 600
