"""The package's optional extras, and the one check that a command's extra is installed.

`pip install convsum` is the default job: DuckDB, a local tree, nginx's configuration, the token
store, the text reports and the metrics. What that job never imports is an extra
(pyproject.toml's `[project.optional-dependencies]` has the same names), and the command, option
or engine that needs one refuses, without it, with one line naming it (exit code 2).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from convsum.errors import MissingExtraError


@dataclass(frozen=True)
class Extra:
    """An extra: its name in `pip install 'convsum[NAME]'`, the modules it adds, what needs them."""

    name: str
    modules: tuple[str, ...]
    needed_by: str


EXTRAS = {
    extra.name: extra
    for extra in (
        Extra("polars", ("polars",), "the polars engine"),
        Extra("spark", ("pyspark",), "the spark engine (with a Java 17+ runtime)"),
        Extra("s3", ("boto3", "obstore"), "a bucket (sync, --sync-to, nginx-conf --from)"),
        Extra("html", ("vl_convert",), "the HTML report"),
    )
}


def require(name: str) -> None:
    """Raise MissingExtraError, naming the extra to install, unless every module of `name` is found.

    The modules are looked up, not imported: the check costs a few stat calls.
    """
    extra = EXTRAS[name]
    missing = [module for module in extra.modules if importlib.util.find_spec(module) is None]
    if missing:
        msg = f"{extra.needed_by} needs {', '.join(missing)}: pip install 'convsum[{name}]'"
        raise MissingExtraError(msg)
