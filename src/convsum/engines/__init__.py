"""Engines: interchangeable implementations of SPEC section 3 behind one small interface."""

from __future__ import annotations

from convsum.engines.base import Derivation, Engine, EngineSettings
from convsum.errors import ConfigError


def get_engine(name: str) -> Engine:
    """Return the engine called `name`."""
    if name == "duckdb":
        from convsum.engines.duckdb import DuckDBEngine

        return DuckDBEngine()
    msg = f"unknown engine {name!r}"
    raise ConfigError(msg)


__all__ = ["Derivation", "Engine", "EngineSettings", "get_engine"]
