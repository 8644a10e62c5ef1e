"""The generator: deterministic per seed, shaped like real traffic, readable by the job."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from click.testing import CliRunner

from convsum.cli import cli
from convsum.config import RunConfig
from convsum.generate import generate
from convsum.run import run_job


def test_generate_is_deterministic_per_seed(tmp_path: Path) -> None:
    generate(tmp_path / "a", 5_000, seed=3)
    generate(tmp_path / "b", 5_000, seed=3)
    generate(tmp_path / "c", 5_000, seed=4)
    for name in ("messages", "statuses"):
        a = pq.read_table(tmp_path / "a" / name)
        assert a.equals(pq.read_table(tmp_path / "b" / name))
        assert not a.equals(pq.read_table(tmp_path / "c" / name))


def test_generate_traffic_shape(tmp_path: Path) -> None:
    result = generate(tmp_path, 20_000, seed=1, owners=4)
    messages = pq.read_table(tmp_path / "messages")
    statuses = pq.read_table(tmp_path / "statuses")
    unique_ids = pc.count_distinct(messages["id"]).as_py()
    assert unique_ids == 20_000 < messages.num_rows  # duplicates appended
    mt_share = pc.mean(pc.equal(messages["direction"].cast("string"), "mt")).as_py()
    assert 0.6 <= mt_share <= 0.8
    assert set(pc.unique(messages["segments"]).to_pylist()) == {1, 2, 3, 4, 5, 6}
    assert len(pc.unique(messages["owner"].cast("string"))) == 4
    assert 2.5 <= statuses.num_rows / unique_ids <= 4.5
    assert result.statuses == statuses.num_rows
    with_status = pc.count_distinct(statuses["messageId"]).as_py()
    orphans = pc.sum(pc.starts_with(statuses["messageId"], "orphan-")).as_py()
    assert 0.97 <= (with_status - orphans) / unique_ids <= 0.995  # about 1 % without status
    assert orphans > 0


def test_generate_output_runs_through_the_job(tmp_path: Path) -> None:
    generate(tmp_path / "data", 3_000, seed=2)
    config = RunConfig(
        messages=str(tmp_path / "data" / "messages"),
        statuses=str(tmp_path / "data" / "statuses"),
        out=str(tmp_path / "out"),
    )
    report = run_job(config)
    assert report.data.messages == 3_000
    assert report.data.duplicate_messages > 0
    assert report.data.orphan_statuses > 0
    assert report.data.messages_without_status > 0


def test_generate_replaces_its_own_files_only(tmp_path: Path) -> None:
    generate(tmp_path / "a", 1_000, seed=1)
    generate(tmp_path / "a", 2_000, seed=1)  # its own directories: replaced
    assert pq.read_metadata(tmp_path / "a" / "messages" / "part-00000.parquet").num_rows > 2_000
    (tmp_path / "b" / "messages").mkdir(parents=True)
    (tmp_path / "b" / "messages" / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli, ["generate", "--messages", "10", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1, result.output
    assert "was not made by convsum" in result.stderr
    assert (tmp_path / "b" / "messages" / "keep.txt").read_text() == "x"
