"""A small smoke run of the benchmark (its timings are not checked: that is `make bench`)."""

from __future__ import annotations

from pathlib import Path

from convsum.bench import format_table, run_bench


def test_bench_smoke_measures_every_run_and_both_floors(tmp_path: Path) -> None:
    results = run_bench(tmp_path / "data", 2_000, ["duckdb"], tmp_path / "work", threads=1)
    labels = [m.label for m in results]
    assert labels == ["duckdb summaries", "duckdb full", "bare query", "bare writer"]
    assert all(m.wall > 0 and m.cpu > 0 and m.peak_mib > 10 for m in results)
    full = results[1]
    assert set(full.stages) == {"list", "read", "derive", "pages", "summaries", "index", "state"}
    assert "pages" not in results[0].stages
    table = format_table(results, 2_000)
    assert "| duckdb full |" in table and "x (query + writer)" in table
    assert (tmp_path / "data" / "generated.json").exists()
