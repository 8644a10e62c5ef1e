"""A small smoke run of the benchmark (its timings are not checked: that is `make bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.job import (
    Measurement,
    ensure_data,
    format_reports,
    format_sync,
    format_table,
    format_targets,
    run_bench,
    run_nightly,
    run_reports,
    run_sync,
    targets,
)

from convsum.reporting.reports import REPORTS

pytestmark = pytest.mark.slow  # left out of make test-fast


def test_bench_smoke_measures_every_run_and_both_floors(tmp_path: Path) -> None:
    results = run_bench(tmp_path / "data", 2_000, ["duckdb"], tmp_path / "work", threads=1)
    labels = [m.label for m in results]
    assert labels == [
        "duckdb summaries",
        "duckdb full",
        "duckdb full gzip",
        "bare query",
        "bare writer",
        "bare writer, two threads",
    ]
    assert all(m.wall > 0 and m.cpu > 0 and m.peak_mib > 10 for m in results)
    full, packed = results[1], results[2]
    assert packed.report["files_written"] == full.report["files_written"]
    assert 0 < packed.report["bytes_written"] < full.report["bytes_written"] // 3
    assert full.disk > 0 and packed.disk > 0
    assert [m.disk for m in results if m not in (full, packed)] == [0.0] * 4
    assert set(full.stages) == {
        "list",
        "read",
        "derive",
        "pages",
        "summaries",
        "tables",
        "index",
    }
    assert "pages" not in results[0].stages
    table = format_table(results, 2_000)
    assert "| duckdb full |" in table and "x (query + writer)" in table
    summaries, full, packed, query, writer, writers = results
    checked = {(key, label): value for key, label, value in targets(results)}
    compute = summaries.stages["read"] + summaries.stages["derive"]
    assert checked[("compute", "duckdb summaries")] == compute / query.wall
    assert checked[("full", "duckdb full")] == full.wall / (query.wall + writer.wall)
    assert checked[("tree_time", "duckdb full gzip")] == packed.wall
    assert checked[("tree_disk", "duckdb full")] == full.disk / 1e9
    assert checked[("writers", "bare writer, two threads")] == writers.wall / writer.wall
    assert writers.report["pair_ratios"] == [writers.wall / writer.wall]
    assert "two writers to one, pair by pair: " in table
    assert {key for key, _ in checked} == {
        "compute", "full", "memory", "tree_time", "tree_disk", "writers"
    }  # fmt: skip
    lines = format_targets(results).splitlines()
    assert len(lines) == 2 + len(checked)
    assert all(line.endswith(("| yes |", "x the goal) |")) for line in lines[2:])
    assert (tmp_path / "data" / "generated.json").exists()


def test_bench_nightly_smoke_measures_a_full_run_then_an_increment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_data(data, 2_000, seed=1)
    full, increment, unchanged = run_nightly(data, "duckdb", tmp_path / "work", threads=1)
    assert (full.label, increment.label) == ("duckdb nightly full", "duckdb nightly increment")
    assert unchanged.label == "duckdb nightly unchanged"
    assert (full.report["mode"], increment.report["mode"]) == ("full", "incremental")
    assert unchanged.report["files_read"] == {"messages": 0, "statuses": 0}
    assert unchanged.report["messages"] == increment.report["messages"]
    assert "derive" not in unchanged.stages
    assert increment.report["files_read"] == {"messages": 1, "statuses": 1}
    assert increment.report["files_skipped"] == {"messages": 1, "statuses": 1}
    assert 0 < increment.report["rows_read"]["messages"] < full.report["rows_read"]["messages"]
    assert "x full" in format_table([full, increment, unchanged], 2_000)
    checked = {(key, label): value for key, label, value in targets([full, increment, unchanged])}
    assert checked[("night", "duckdb nightly increment")] == increment.wall / full.wall
    assert checked[("unchanged", "duckdb nightly unchanged")] == unchanged.wall
    assert checked[("memory", "duckdb nightly full")] == full.peak_mib


def test_bench_reports_smoke_times_every_named_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_data(data, 2_000, seed=1)
    results = run_reports(data, tmp_path / "work", threads=1)
    assert [m.label for m in results] == [
        *(f"report {name}" for name in REPORTS),
        "report stuck -F table",
        "html",
    ]
    assert all(m.wall > 0 and m.cpu > 0 for m in results)
    lines = format_reports(results).splitlines()
    assert len(lines) == 2 + len(REPORTS) + 2 + 2 and "| overview |" in lines[2]
    assert lines[2 + len(REPORTS) + 1].startswith("| html | ")
    table, csv = results[-2].wall, next(m.wall for m in results if m.label == "report stuck")
    assert (
        lines[-1]
        == f"stuck as the terminal's table / as CSV: {table / csv:.2f}x (target at most 2x)"
    )
    assert not (tmp_path / "work" / "reports").exists()


def test_bench_sync_smoke_sends_a_whole_tree_then_the_night(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_data(data, 2_000, seed=1)
    first, nightly, packed = run_sync(data, tmp_path / "work", threads=1)
    assert (first.label, nightly.label, packed.label) == (
        "sync first", "sync nightly", "sync first gzip"
    )  # fmt: skip
    assert first.report["unchanged"] == 0
    assert 0 < nightly.report["sent"] < first.report["sent"]
    assert packed.report["sent"] == first.report["sent"]
    assert 0 < packed.report["bytes"] < first.report["bytes"] // 3
    lines = format_sync([first, nightly]).splitlines()
    sent = f"| sync first | {first.report['sent']:,} | 0 |"
    assert lines[2].startswith(sent), lines
    assert not (tmp_path / "work" / "out").exists()


def test_bench_spark_startup_is_shown_apart() -> None:
    """The JVM's start is a row of its own: no ratio to a floor, and no memory target."""
    startup = Measurement("spark startup", 6.5, 0.4, 60.0)
    query = Measurement("bare query", 1.0, 1.0, 300.0)
    table = format_table([startup, query], 2_000)
    assert "| spark startup |" in table
    row = next(line for line in table.splitlines() if line.startswith("| spark startup |"))
    assert row.endswith("| 6.5 | 0.4 | 60 |  |  |")
    assert targets([startup, query]) == []
