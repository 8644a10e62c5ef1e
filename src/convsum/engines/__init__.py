"""Engines: interchangeable implementations of SPEC section 3 behind one small interface."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from convsum.engines.base import Derivation, Engine, EngineSettings
from convsum.errors import ConfigError


def get_engine(
    name: str,
    threads: int | None = None,
    spark_master: str | None = None,
    spark_conf: Mapping[str, str] | None = None,
) -> Engine:
    """Return the engine called `name`.

    Polars sizes its thread pool once, when a process first imports it, so `threads` is applied
    here, before that import; a process that already imported Polars keeps its pool. The Spark
    engine runs on the cluster `spark_master` (see engines/spark.py: `session`), with the
    session settings `spark_conf`.
    """
    if name == "duckdb":
        from convsum.engines.duckdb import DuckDBEngine

        return DuckDBEngine()
    if name == "polars":
        if threads and "polars" not in sys.modules:
            os.environ["POLARS_MAX_THREADS"] = str(threads)
        from convsum.engines.polars import PolarsEngine

        return PolarsEngine()
    if name == "spark":
        from convsum.engines.spark import SparkEngine

        return SparkEngine(spark_master, spark_conf or {})
    msg = f"unknown engine {name!r}"
    raise ConfigError(msg)


__all__ = ["Derivation", "Engine", "EngineSettings", "get_engine"]
