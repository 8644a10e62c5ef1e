"""Power-loss safety: what a publication depends on is flushed before the step that shows it.

The file system calls that matter (writes, flushes, renames, the state commit) are recorded in
the order a run makes them, and the order is checked against the rule of publish/durable.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import convsum.run
from convsum.config import RunConfig
from convsum.incremental.catalog import Catalog
from convsum.publish import durable
from convsum.publish.tree import TreeWriter
from convsum.publish.update import TreeUpdate
from convsum.run import run_job
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, message, status, write_parquet

Calls = list[tuple[str, str]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Calls:
    """Record, in order, the calls a run makes that decide what survives a power loss."""
    out = tmp_path / "out"
    recorded: Calls = []

    def spy(owner: Any, name: str, label: Callable[..., str]) -> None:
        real = getattr(owner, name)

        def recording(*args: Any, **kwargs: Any) -> Any:
            what = label(*args)
            if what:
                recorded.append((name, what))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, recording)

    def under_out(path: Path) -> str:
        return str(Path(path).relative_to(out)) if Path(path).is_relative_to(out) else ""

    spy(durable, "sync_filesystem", under_out)
    spy(durable, "sync_directory", under_out)
    spy(Path, "rename", lambda src, dst: f"{under_out(src)} -> {under_out(Path(dst))}")
    spy(Path, "replace", lambda src, dst: f"{under_out(src)} -> {under_out(Path(dst))}")
    spy(TreeWriter, "write", lambda _self, conversation, name, _body: f"{conversation}/{name}")
    spy(TreeUpdate, "write", lambda _self, conversation, name, _body: f"{conversation}/{name}")
    spy(convsum.run, "write_json", lambda path, _value: under_out(path))
    spy(Catalog, "record", lambda _self, run_id, *_rest: run_id)
    return recorded


def _config(tmp_path: Path, night: int) -> RunConfig:
    """Night 1 has a message to 4671 and its status; night 2 adds one to 4672."""
    directory = tmp_path / "in"
    write_parquet(
        directory / "messages" / f"{night}.parquet",
        [message(f"m{night}", recipient=f"467{night}")],
        MESSAGE_TYPES,
    )
    write_parquet(
        directory / "statuses" / f"{night}.parquet", [status(f"m{night}", 201)], STATUS_TYPES
    )
    return RunConfig(
        messages=str(directory / "messages"),
        statuses=str(directory / "statuses"),
        out=str(tmp_path / "out"),
    )


def _last(calls: Calls, name: str, match: Callable[[str], bool] = bool) -> int:
    return max(i for i, (n, what) in enumerate(calls) if n == name and match(what))


def _first(calls: Calls, name: str, match: Callable[[str], bool] = bool) -> int:
    return min(i for i, (n, what) in enumerate(calls) if n == name and match(what))


def test_durable_full_run_flushes_the_tree_before_the_switch(tmp_path: Path, calls: Calls) -> None:
    run_job(_config(tmp_path, 1))
    last_file = max(_last(calls, "write"), _last(calls, "write_json"))
    flush = _first(calls, "sync_filesystem")
    into_trees = _first(calls, "rename", lambda w: ".partial -> trees/" in w)
    trees_dir = _first(calls, "sync_directory", lambda w: w == "trees")
    switch = _first(calls, "replace", lambda w: w.endswith("-> current"))
    root_dir = _first(calls, "sync_directory", lambda w: w == ".")
    assert last_file < flush < into_trees < trees_dir < switch < root_dir, calls


def test_durable_incremental_run_flushes_before_swaps_and_before_the_commit(
    tmp_path: Path, calls: Calls
) -> None:
    run_job(_config(tmp_path, 1))
    del calls[:]
    assert run_job(_config(tmp_path, 2)).mode == "incremental"
    staged = _last(calls, "write")
    flush_new = _first(calls, "sync_filesystem", lambda w: w.startswith(".work-"))
    swaps = [i for i, (n, w) in enumerate(calls) if n == "rename" and "/api/" in w]
    manifest = _last(calls, "write_json", lambda w: w.endswith("manifest.json"))
    flush_all = _last(calls, "sync_filesystem", lambda w: w.startswith("trees/"))
    commit = _first(calls, "record")
    assert swaps, calls
    assert staged < flush_new < min(swaps), calls
    assert max(swaps) < manifest < flush_all < commit, calls
