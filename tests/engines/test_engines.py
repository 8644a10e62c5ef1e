"""Choosing an engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convsum.engines import get_engine
from convsum.errors import ConfigError


def test_engines_polars_takes_the_thread_count_before_import() -> None:
    code = (
        "from convsum.engines import get_engine; get_engine('polars', 1); "
        "import polars; print(polars.thread_pool_size())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"


def test_engines_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'flink'"):
        get_engine("flink")
