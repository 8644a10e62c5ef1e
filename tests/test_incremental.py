"""Incremental runs: after any sequence of nightly batches, the tree a full run gives."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsum.config import ENGINES, RunConfig
from convsum.errors import RebuildRefusedError
from convsum.log import RunLog
from convsum.publish.paths import (
    LAYOUT_VERSION,
    SUMMARY_FILE,
    conversation_file,
    conversation_files,
    conversation_path,
)
from convsum.results import RunReport
from convsum.run import run_job
from tests.conftest import (
    ALL_COLUMNS,
    LOCAL_ENGINES,
    MESSAGE_TYPES,
    WIDE_STATUS_TYPES,
    message,
    status,
    table_rows,
    write_parquet,
)
from tests.support.strategies import messages_strategy, statuses_strategy
from tests.support.trees import published


def stats(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every served file, by its served path (a gzip tree's without its
    `.gz`): a file rewritten in any way changes them."""
    api = out / "current" / "api"
    return {
        str(p.relative_to(api)).removesuffix(".gz"): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in api.rglob("*")
        if p.is_file()
    }


def _of(conversation: str, path: str) -> bool:
    """Whether a served path is a file of `conversation` (publish.paths.conversation_path)."""
    return any(conversation_files(conversation, [path]))


def _config(inputs: Path, out: Path, **options: Any) -> RunConfig:
    return RunConfig(
        messages=str(inputs / "messages"),
        statuses=str(inputs / "statuses"),
        out=str(out),
        **options,
    )


def _night(inputs: Path, night: int, messages: list[dict[str, Any]], statuses: list[Any]) -> None:
    """Land one night's partitions (none for an empty batch, except on the first night)."""
    if messages or night == 0:
        path = inputs / "messages" / f"date=2024-01-{night + 1:02d}" / "part-0.parquet"
        write_parquet(path, messages, MESSAGE_TYPES)
    if statuses or night == 0:
        path = inputs / "statuses" / f"date=2024-01-{night + 1:02d}" / "part-0.parquet"
        write_parquet(path, statuses, WIDE_STATUS_TYPES)


@settings(
    max_examples=max(10, settings.default.max_examples // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    messages=messages_strategy,
    statuses=statuses_strategy,
    nights=st.integers(1, 4),
    page_size=st.sampled_from([1, 2, 5]),
    lists=st.sampled_from(["asc", "asc and desc", "none"]),
    gzip=st.booleans(),
    data=st.data(),
)
def test_incremental_any_nightly_split_gives_the_full_run_tree(
    messages: list[dict[str, Any]],
    statuses: list[dict[str, Any]],
    nights: int,
    page_size: int,
    lists: str,
    gzip: bool,
    data: st.DataObject,
) -> None:
    rows = [{**m, "type": "SMS", "datacoding": "gsm", "currency": "SEK"} for m in messages]
    night_of = st.integers(0, nights - 1)
    message_nights = data.draw(st.lists(night_of, min_size=len(rows), max_size=len(rows)))
    status_nights = data.draw(st.lists(night_of, min_size=len(statuses), max_size=len(statuses)))
    # With summaries only, an update derives the touched ids' rows alone (state.py).
    options = {"page_size": page_size, "desc_pages": lists == "asc and desc", "gzip": gzip}
    if lists == "none":
        options["only"] = "summaries"
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        for night in range(nights):
            _night(
                inputs,
                night,
                [r for r, n in zip(rows, message_nights, strict=True) if n == night],
                [s for s, n in zip(statuses, status_nights, strict=True) if n == night],
            )
            fresh = Path(tmp) / f"full-{night}"
            full = run_job(_config(inputs, fresh, **options))
            reports = {}
            # Spark's updates: tests/engines/test_spark.py (its tasks run these engines' steps).
            for engine in LOCAL_ENGINES:
                out = Path(tmp) / f"out-{engine}"
                reports[engine] = run_job(_config(inputs, out, engine=engine, **options))
                assert reports[engine].mode == ("full" if night == 0 else "incremental")
                assert published(out) == published(fresh), f"night {night}, {engine}"
                assert table_rows(out, ALL_COLUMNS) == table_rows(fresh, ALL_COLUMNS)
                assert reports[engine].data == full.data
            # What each engine read, wrote, left unchanged and removed is the same too.
            first, *others = (replace(r, run_id="", stages={}) for r in reports.values())
            assert all(other == first for other in others), f"night {night}"


def test_incremental_nights_of_late_statuses_orphans_and_nothing(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    nights = [
        ([message("m1", recipient="4601"), message("m2", recipient="4602")], [status("m1", 101)]),
        ([], [status("m1", 201, created=_at(1)), status("m2", 402, created=_at(1))]),  # late
        ([], [status("m3", 101, created=_at(2))]),  # an orphan: m3 has not arrived
        ([], []),  # nothing landed
        ([message("m3", recipient="4601", created=_at(2))], []),  # the orphan's message
    ]
    for night, (messages, statuses) in enumerate(nights):
        _night(inputs, night, messages, statuses)
        report = run_job(_config(inputs, out, page_size=1))
        fresh = tmp_path / f"fresh-{night}"
        full = run_job(_config(inputs, fresh, page_size=1))
        assert published(out) == published(fresh), f"night {night}"
        assert report.data == full.data
    summary = orjson.loads(
        (
            out
            / "current"
            / "api"
            / conversation_file(conversation_path("acme", "4601"), SUMMARY_FILE)
        ).read_bytes()
    )
    assert summary["mobileTerminatedMessages"] == {
        "101": {"messages": 1, "sms": 1},
        "201": {"messages": 1, "sms": 1},
    }
    assert report.data.orphan_statuses == 0 and report.files_read["messages"] == 1


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_incremental_touches_only_the_changed_conversations(
    tmp_path: Path, engine: str, gzip: bool
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    first = [message(f"a{i}", recipient="4601", created=_at(i)) for i in range(5)]
    first += [message(f"b{i}", recipient="4602", created=_at(i)) for i in range(5)]
    first += [message("c0", sender="Bank", recipient="4603")]
    _night(inputs, 0, first, [status(f"a{i}", 201) for i in range(5)])
    run_job(_config(inputs, out, engine=engine, page_size=2, gzip=gzip))
    before = stats(out)
    # Night 1: a new message for 4601 and a late status for one of 4602's messages.
    _night(inputs, 1, [message("a5", recipient="4601", created=_at(9))], [status("b3", 402)])
    report = run_job(_config(inputs, out, engine=engine, page_size=2, gzip=gzip))
    after = stats(out)
    changed = {path for path in after if before.get(path) != after[path]}
    touched = {conversation_path("acme", p) for p in ("Acme", "4601", "4602")}
    assert changed, "nothing was rewritten"
    assert all(any(_of(d, path) for d in touched) for path in changed), changed
    untouched = [p for p in after if _of(conversation_path("acme", "4603"), p)]
    assert untouched and all(before[p] == after[p] for p in untouched)
    assert report.files_read == {"messages": 1, "statuses": 1}
    assert report.files_skipped == {"messages": 1, "statuses": 1}
    assert report.files.conversations_changed == 3
    assert report.files.files_written == len(changed)
    assert report.files.files_removed == 0
    # 4601's first two pages (a0 a1, a2 a3) and 4602's pages without b3 are equal: not written.
    assert report.files.files_unchanged > 0
    manifest = orjson.loads((out / "current" / "manifest.json").read_bytes())
    assert manifest["changes"]["full"] is False
    listed = (out / "current" / "files.txt").read_text().splitlines()
    assert manifest["files"]["count"] == len(listed) == len(after)
    written = (out / "current" / manifest["changes"]["written"]).read_text().splitlines()
    assert set(written) == {f"api/{p}".removeprefix("api/") for p in changed}
    fresh = tmp_path / "fresh"
    run_job(_config(inputs, fresh, engine=engine, page_size=2, gzip=gzip))
    assert published(out) == published(fresh)


def _planned_like_a_full_run(
    inputs: Path, out: Path, fresh: Path, **options: Any
) -> tuple[dict[str, int], RunReport]:
    """Run an update into `out`; check that it ends like a full run into `fresh` (files, tables,
    counts). Returns its `plan` stage's counts (what it derives again) and its report."""
    stream = io.StringIO()
    report = run_job(_config(inputs, out, **options), RunLog("json", stream))
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    (plan,) = [e["counts"] for e in events if e.get("stage") == "plan" and "counts" in e]
    full = run_job(_config(inputs, fresh, **options))
    assert published(out) == published(fresh)
    assert table_rows(out, ALL_COLUMNS) == table_rows(fresh, ALL_COLUMNS)
    assert report.data == full.data
    return plan, report


# With every engine: a summaries-only update is a path of the Spark engine's own (its driver
# writes the summaries of an update).
@pytest.mark.parametrize("engine", ENGINES)
def test_incremental_summaries_only_derives_the_touched_ids_and_days(
    tmp_path: Path, engine: str
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    day = 24 * 60
    first = [message(f"a{i}", recipient="4601", created=_at(i)) for i in range(4)]
    first += [message(f"b{i}", recipient="4602", created=_at(day + i)) for i in range(6)]
    _night(inputs, 0, first, [status(f"a{i}", 201) for i in range(4)])
    options = {"engine": engine, "only": "summaries"}
    run_job(_config(inputs, out, **options))
    # A late status for a0 (day 1) and a new message on day 3: day 2's six messages stay put.
    _night(inputs, 1, [message("c0", recipient="4601", created=_at(2 * day))], [status("a0", 402)])
    plan, report = _planned_like_a_full_run(inputs, out, tmp_path / "fresh", **options)
    assert plan == {"conversations": 2, "days": 2, "touched": 2, "rows": 5}
    assert report.data.messages == 11 and report.data.participants == 3


def test_incremental_ascending_pages_derive_from_the_last_unchanged_page(
    tmp_path: Path, engine: str
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    day = 24 * 60
    first = [message(f"a{i:02d}", recipient="4601", created=_at(i)) for i in range(20)]
    first += [message(f"b{i}", sender="4601", recipient="Acme", direction="mo", created=_at(21 + i))
              for i in range(3)]  # fmt: skip
    _night(inputs, 0, first, [status(f"a{i:02d}", 201) for i in range(20)])
    options = {"engine": engine, "page_size": 5}
    run_job(_config(inputs, out, **options))
    # One new message on day 2. The pages that may change: of 4601's 23 rows the last, 20-22
    # (b0 to b2); of its 20 mt rows the last, 15-19 (a15 to a19), which the new one follows;
    # of its 3 mo rows the last, 0-2 (b0 to b2). So the update derives again the 8 rows from a15
    # on, and the new one: no row of day 1 before a15.
    _night(inputs, 1, [message("c0", recipient="4601", created=_at(day))], [])
    plan, _report = _planned_like_a_full_run(inputs, out, tmp_path / "fresh", **options)
    assert plan == {"conversations": 2, "days": 1, "touched": 1, "rows": 9}


def test_incremental_late_duplicate_moves_a_message_and_removes_a_conversation(
    tmp_path: Path,
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1", recipient="4601")], [status("m1", 201)])
    run_job(_config(inputs, out))
    gone = conversation_path("acme", "4601")
    assert (out / "current" / "api" / conversation_file(gone, SUMMARY_FILE)).exists()
    # A later version of m1 (greater `modified`) went to another recipient.
    _night(inputs, 1, [message("m1", recipient="4602", modified=_at(60))], [])
    report = run_job(_config(inputs, out))
    assert not [p for p in stats(out) if _of(gone, p)]
    assert report.files.files_removed == 3  # 4601's summary and its one page of `all` and of `mt`
    removed = (out / "current" / "removed.txt").read_text().splitlines()
    assert all(_of(gone, path) for path in removed) and len(removed) == 3
    fresh = tmp_path / "fresh"
    run_job(_config(inputs, fresh))
    assert published(out) == published(fresh)


@pytest.mark.parametrize("change", ["changed", "removed"])
def test_incremental_changed_or_removed_input_rebuilds(tmp_path: Path, change: str) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1", recipient="4601")], [status("m1", 201)])
    _night(inputs, 1, [message("m2", recipient="4602")], [status("m2", 201)])
    run_job(_config(inputs, out))
    night1 = inputs / "messages" / "date=2024-01-02" / "part-0.parquet"
    if change == "changed":
        write_parquet(night1, [message("m2", recipient="4603")], MESSAGE_TYPES)
        os.utime(night1, ns=(1, 1))  # a different modification time, whatever the clock says
    else:
        night1.unlink()
    with pytest.raises(RebuildRefusedError, match=f"{night1}: {change} since it was read"):
        run_job(_config(inputs, out, rebuild=False))
    report = run_job(_config(inputs, out))
    assert report.mode == "full"
    assert str(night1) in report.rebuild_reason
    assert not [p for p in stats(out) if _of(conversation_path("acme", "4602"), p)]
    fresh = tmp_path / "fresh"
    run_job(_config(inputs, fresh))
    assert published(out) == published(fresh)


def test_incremental_other_settings_or_full_flag_rebuild(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1")], [status("m1", 201)])
    run_job(_config(inputs, out))
    assert run_job(_config(inputs, out, threads=1)).mode == "incremental"
    with pytest.raises(RebuildRefusedError, match="output settings"):
        run_job(_config(inputs, out, page_size=10, rebuild=False))
    assert run_job(_config(inputs, out, page_size=10)).mode == "full"
    assert run_job(_config(inputs, out, page_size=10), full=True).rebuild_reason == "--full"


def test_incremental_tree_of_another_layout_is_rebuilt_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1")], [status("m1", 201)])
    # A tree an earlier convsum wrote: its manifest, and the fingerprint of its state store.
    monkeypatch.setattr("convsum.run.LAYOUT_VERSION", 1)
    monkeypatch.setattr("convsum.incremental.plan.LAYOUT_VERSION", 1)
    run_job(_config(inputs, out))
    monkeypatch.undo()
    _night(inputs, 1, [message("m2", recipient="4602")], [status("m2", 201)])
    with pytest.raises(RebuildRefusedError, match="output settings"):
        run_job(_config(inputs, out, rebuild=False))
    report = run_job(_config(inputs, out))
    assert report.mode == "full"
    manifest = orjson.loads((out / "current" / "manifest.json").read_bytes())
    assert manifest["layout"]["version"] == LAYOUT_VERSION


def _at(minutes: int) -> Any:
    from tests.conftest import at

    return at(minutes * 60)


def test_incremental_disk_full_changes_nothing_and_the_next_run_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from convsum.errors import PublishError
    from convsum.publish.update import TreeUpdate

    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1", recipient="4601")], [status("m1", 201)])
    run_job(_config(inputs, out))
    before = published(out)
    _night(inputs, 1, [message("m2", recipient="4601", created=_at(5))], [status("m2", 201)])

    def full(self: TreeUpdate, conversation: str, name: str, body: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.scratch / "0"))

    with monkeypatch.context() as patch:
        patch.setattr(TreeUpdate, "write", full)
        with pytest.raises(PublishError, match="No space left on device"):
            run_job(_config(inputs, out))
    assert published(out) == before
    report = run_job(_config(inputs, out))
    assert report.files_read == {"messages": 1, "statuses": 1}  # the failed run recorded none
    fresh = tmp_path / "fresh"
    run_job(_config(inputs, fresh))
    assert published(out) == published(fresh)


def test_incremental_unreadable_state_store_rebuilds_or_is_refused(tmp_path: Path) -> None:
    from convsum.incremental.catalog import CATALOG, STATE

    inputs, out = tmp_path / "in", tmp_path / "out"
    _night(inputs, 0, [message("m1")], [status("m1", 201)])
    run_job(_config(inputs, out))
    (out / "current" / STATE / CATALOG).write_bytes(b"not a database")
    with pytest.raises(RebuildRefusedError, match=r"state store .* cannot be read"):
        run_job(_config(inputs, out, rebuild=False))
    report = run_job(_config(inputs, out))
    assert report.mode == "full" and "cannot be read" in report.rebuild_reason
    assert run_job(_config(inputs, out)).mode == "incremental"
