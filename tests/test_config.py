"""The run configuration: TOML and flags merged into one frozen object."""

from __future__ import annotations

from pathlib import Path

import pytest

from convsum.config import (
    RunConfig,
    build_config,
    check_apart,
    check_memory_limit,
    check_page_size,
    load_toml,
)
from convsum.errors import ConfigError


def test_config_toml_tables_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "jobs" / "job.toml"
    path.parent.mkdir()
    path.write_text(
        'messages = "../data/m"\nout = "/srv/out"\npage_size = 100\ndesc_pages = true\n'
        '[codes.direction]\n1 = "mt"\n2 = "mo"\n'
        '[columns.messages]\nrecipient = "msisdn_to"\n'
    )
    config = build_config({**load_toml(path), "engine": "polars", "threads": None})
    assert config == RunConfig(
        messages=str(tmp_path / "jobs" / "../data/m"),
        out="/srv/out",
        engine="polars",
        page_size=100,
        desc_pages=True,
        direction_codes={1: "mt", 2: "mo"},
        message_columns={"recipient": "msisdn_to"},
    )


def test_config_spark_master_and_table_are_how_it_runs_not_what_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'messages = "m"\nout = "o"\nengine = "spark"\nspark_master = "spark://h:7077"\n'
        '[spark]\n"spark.executor.memory" = "4g"\n"spark.executor.cores" = 2\n'
        '"spark.dynamicAllocation.enabled" = true\n"spark.hadoop.fs.s3a.secret.key" = "s3cr3t"\n'
    )
    config = build_config(load_toml(path))
    assert config.spark_master == "spark://h:7077"
    assert dict(config.spark) == {
        "spark.executor.memory": "4g",
        "spark.executor.cores": "2",
        "spark.dynamicAllocation.enabled": "true",
        "spark.hadoop.fs.s3a.secret.key": "s3cr3t",
    }
    assert config.output_settings() == RunConfig(messages="m", out="o").output_settings() | {
        "messages": str(tmp_path / "m")
    }
    # The manifest records the settings' names only: a value may be a credential.
    assert config.to_dict()["spark"] == sorted(config.spark)
    assert "s3cr3t" not in repr(config.to_dict())


def test_config_sync_settings_are_what_follows_a_run_not_what_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'messages = "m"\nout = "o"\nsync_to = "s3://bucket/api"\ncache_control = "no-cache"\n'
    )
    config = build_config(load_toml(path))
    assert (config.sync_to, config.cache_control) == ("s3://bucket/api", "no-cache")
    assert config.output_settings() == RunConfig(messages="m", out="o").output_settings() | {
        "messages": str(tmp_path / "m")
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('page_size = "50"', "page_size must be of type int"),
        ("sync_to = 3", "sync_to must be of type str"),
        ("[codes.direction]\nx = 'mt'", "keys must be integers"),
        ("[codes.direction]\n0 = 'up'", 'values must be "mt" or "mo"'),
        ("[codes.colour]\n0 = 'red'", "[codes.colour] unknown"),
        ("[columns.messages]\nid = 3", "must be a table of strings"),
        ("messages = ", "not valid TOML"),
    ],
)
def test_config_bad_toml_is_a_config_error(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_toml(path)


@pytest.mark.parametrize("page_size", [0, 3, 7, 30, 20000])
def test_config_page_sizes_that_cannot_be_served(page_size: int) -> None:
    with pytest.raises(ConfigError, match="must divide 10000"):
        check_page_size(page_size)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("4GB", "4GB"), ("512MiB", "512MiB"), (" 1.5 gb ", "1.5gb"), ("64MiB", "64MiB")],
)
def test_config_memory_limits_engines_take(text: str, canonical: str) -> None:
    assert check_memory_limit(text) == canonical


@pytest.mark.parametrize(
    "text",
    ["banana", "4", "4 G", "-1GB", "63MiB", "0GB", "1e9B", "", "9999999TB", "9" * 400 + "GB"],
)
def test_config_memory_limits_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a size from 64MiB to 8EiB"):
        check_memory_limit(text)


@pytest.mark.parametrize(
    ("pattern", "out", "overlap"),
    [
        ("m.parquet", "out", False),
        ("messages-*.parquet", "out", False),  # a glob beside the output root
        ("g/messages-*.parquet", "g/out", False),
        ("in/date=*/*.parquet", "in/out", False),  # no part can match "out"
        ("in", "in/out", True),
        ("in/*.parquet", "in", True),
        ("in/*/*.parquet", "in/out", True),
        ("in/**/*.parquet", "in/x/out", True),
        ("out/s", "out", True),
    ],
)
def test_config_output_root_apart_from_inputs(pattern: str, out: str, overlap: bool) -> None:
    if overlap:
        with pytest.raises(ConfigError, match="overlap"):
            check_apart(out, {"messages": pattern})
    else:
        check_apart(out, {"messages": pattern})
