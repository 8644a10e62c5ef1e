"""The run configuration: one frozen object from the options, and the TOML file's reader."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from convsum.errors import ConfigError

ENGINES = ("duckdb", "polars", "spark")
ONLY = ("summaries",)
LOG_FORMATS = ("text", "json")
LIST_NAMES = ("all", "mt", "mo")
# A static server can only check that `start` is a multiple of the page size when the page size
# divides a power of ten: alignment is then a property of the last few digits, which a regular
# expression (nginx `map`) can test.
ALIGNMENT_MODULUS = 10_000
# What a CDN or a caching proxy may reuse an object for, unless `cache_control` says otherwise:
# a nightly job changes the newest pages and the summaries once a day.
DEFAULT_CACHE_CONTROL = "max-age=300"
# The read API's (publish/nginx.py): the largest page a caller may ask for, and the answers'
# Cache-Control: they depend on the caller's token, so no shared cache may keep them.
DEFAULT_MAX_LIMIT = 1000
DEFAULT_API_CACHE_CONTROL = "private, max-age=60"
# What a query or report may spill to its temporary directory (DuckDB's own default is 90 % of
# the free disk).
DEFAULT_SPILL_LIMIT = "10GiB"

DEFAULT_DIRECTION_CODES: Mapping[int, str] = MappingProxyType({0: "mt", 1: "mo"})
DEFAULT_TYPE_CODES: Mapping[int, str] = MappingProxyType({0: "flash", 1: "SMS"})
DEFAULT_DATACODING_CODES: Mapping[int, str] = MappingProxyType({0: "gsm", 2: "ucs"})


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs to know; built once, never mutated."""

    messages: str
    out: str
    statuses: str | None = None
    engine: str = "duckdb"
    page_size: int = 50
    desc_pages: bool = False
    gzip: bool = False  # store the served files gzip-compressed (publish/storage.py)
    only: str | None = None
    threads: int | None = None
    memory_limit: str | None = None
    spark_master: str | None = None  # None: spark-submit's master, else local[*]
    spark: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    rebuild: bool = True
    log_format: str = "text"
    sync_to: str | None = None  # s3://BUCKET/PREFIX synced after each run
    cache_control: str = DEFAULT_CACHE_CONTROL
    metrics_file: str | None = None  # Prometheus text format, written when the run ends
    max_input_age: int | None = None  # seconds: an older newest input row fails the run
    direction_codes: Mapping[int, str] = field(default_factory=lambda: DEFAULT_DIRECTION_CODES)
    type_codes: Mapping[int, str] = field(default_factory=lambda: DEFAULT_TYPE_CODES)
    datacoding_codes: Mapping[int, str] = field(default_factory=lambda: DEFAULT_DATACODING_CODES)
    message_columns: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    status_columns: Mapping[str, str] = field(default_factory=lambda: _frozen({}))

    def output_settings(self) -> dict[str, Any]:
        """Return the settings that decide the output's bytes (not how the machine is used)."""
        how = {"out", "engine", "threads", "memory_limit", "spark_master", "spark"}
        after = {"rebuild", "log_format", "sync_to", "cache_control", "metrics_file",
                 "max_input_age"}  # fmt: skip
        return {k: v for k, v in self.to_dict().items() if k not in how | after}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view, as recorded in the manifest."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "spark":  # Spark settings may hold credentials: only their keys
                value = sorted(value)
            elif isinstance(value, Mapping):
                value = {str(k): v for k, v in sorted(value.items())}
            out[f.name] = value
        return out


def check_page_size(page_size: int) -> int:
    """Return the page size if a static server can serve it, else raise ConfigError."""
    if page_size < 1 or ALIGNMENT_MODULUS % page_size:
        msg = (
            f"page size {page_size} is not served statically: it must divide "
            f"{ALIGNMENT_MODULUS} (for example 10, 20, 25, 50, 100, 200, 250, 500, 1000)"
        )
        raise ConfigError(msg)
    return page_size


def check_metrics_file(path: str) -> str:
    """Return the path of a metrics file if node_exporter's textfile collector reads it (its name
    ends in .prom), else raise ConfigError."""
    if not path.endswith(".prom"):
        msg = f"{path}: the textfile collector reads only files named *.prom"
        raise ConfigError(msg)
    return path


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B)\s*", re.IGNORECASE)
_SIZE_UNITS = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
MIN_MEMORY_LIMIT = 64 * 1024**2


def check_memory_limit(text: str) -> str:
    """Return a memory limit as an engine takes it ("4GB", "512MiB"), else raise ConfigError.

    The units are DuckDB's own: KB, MB, GB, TB are powers of 1000, KiB to TiB of 1024.
    """
    match = _SIZE.fullmatch(text)
    size = memory_bytes(text) if match else 0
    if not MIN_MEMORY_LIMIT <= size < 2**63:  # DuckDB's bound; a float may also overflow
        msg = (
            f"memory limit {text!r}: expected a size from 64MiB to 8EiB, a number and a unit "
            "(KB, MB, GB, TB or KiB, MiB, GiB, TiB), as in 4GB or 512MiB"
        )
        raise ConfigError(msg)
    return f"{match.group(1)}{match.group(2)}" if match else text


def default_memory_limit() -> str:
    """Return the memory cap when none is configured: half the machine's, at most 3 GiB.

    DuckDB otherwise takes 80 % of the machine; with a cap it spills to its temporary directory,
    and the Polars engine splits its passes (engines/polars.py).
    """
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(3 * 1024, physical // 2 // 2**20)}MiB"


def memory_bytes(text: str) -> float:
    """Return the bytes of a memory limit that `check_memory_limit` accepted."""
    match = _SIZE.fullmatch(text)
    assert match is not None, text
    return float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def pattern_base(pattern: str) -> Path:
    """Return the file or directory an input pattern reads from.

    For a glob, that is the directories before its first wildcard.
    """
    if not glob.has_magic(pattern):
        return Path(pattern)
    prefix = re.split(r"[*?[]", pattern, maxsplit=1)[0]
    return Path(prefix) if prefix.endswith("/") else Path(prefix).parent


def check_apart(out: str, inputs: Mapping[str, str | None]) -> None:
    """Raise ConfigError when the output root and an input overlap.

    An output root that an input can reach would have the next run read its own state files as
    input; an input inside the output root would be removed with an old tree.
    """
    root = Path(out).resolve()
    for role, pattern in inputs.items():
        if pattern is not None and _overlap(pattern, root):
            msg = (
                f"{role} {pattern} and out {out} overlap; put the output root outside the "
                "inputs (and the inputs outside the output root)"
            )
            raise ConfigError(msg)


def _overlap(pattern: str, root: Path) -> bool:
    """Return whether files under `root` can match `pattern`, or `pattern` lies under `root`.

    A directory or a recursive glob reaches everything below its base; a glob without `**`
    reaches only paths as deep as itself, each part matching its own pattern.
    """
    base = pattern_base(pattern)
    resolved = base.resolve()
    if resolved.is_relative_to(root):
        return True
    if not root.is_relative_to(resolved):
        return False
    if not glob.has_magic(pattern) or "**" in pattern:
        return True
    parts = Path(pattern).parts[len(base.parts) :]
    below = root.relative_to(resolved).parts
    return len(parts) > len(below) and all(map(fnmatch.fnmatch, below, parts))


_PATH_KEYS = ("messages", "statuses", "out", "metrics_file")
_SCALAR_KEYS = {
    "messages": str,
    "statuses": str,
    "out": str,
    "engine": str,
    "page_size": int,
    "desc_pages": bool,
    "gzip": bool,
    "only": str,
    "threads": int,
    "memory_limit": str,
    "spark_master": str,
    "rebuild": bool,
    "log_format": str,
    "sync_to": str,
    "cache_control": str,
    "metrics_file": str,
    "max_input_age": str,
}
_CODE_TABLES = {
    "direction": "direction_codes",
    "type": "type_codes",
    "datacoding": "datacoding_codes",
}
_COLUMN_TABLES = {"messages": "message_columns", "statuses": "status_columns"}


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML configuration into RunConfig keyword arguments.

    Paths in the file are relative to the file's own directory, so a job definition works from
    any working directory.
    """
    import tomllib  # here: convsum --help and completion never read a file

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"config {path}: cannot read ({exc.strerror})"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"config {path}: not valid TOML ({exc})"
        raise ConfigError(msg) from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SCALAR_KEYS:
            values[key] = _scalar(path, key, value)
        elif key == "codes":
            values.update(_code_tables(path, value))
        elif key == "columns":
            values.update(_column_tables(path, value))
        elif key == "spark":
            values["spark"] = _spark_table(path, value)
        else:
            known = ", ".join([*_SCALAR_KEYS, "codes", "columns", "spark"])
            msg = f"config {path}: unknown key {key!r}; expected one of {known}"
            raise ConfigError(msg)
    for key in _PATH_KEYS:
        if key in values:
            values[key] = str(path.parent / values[key])
    return values


def _scalar(path: Path, key: str, value: Any) -> Any:
    expected = _SCALAR_KEYS[key]
    if type(value) is not expected:
        msg = f"config {path}: {key} must be of type {expected.__name__}, found {value!r}"
        raise ConfigError(msg)
    return value


def _code_tables(path: Path, value: Any) -> dict[str, Mapping[int, str]]:
    if not isinstance(value, dict):
        msg = f"config {path}: [codes] must be a table"
        raise ConfigError(msg)
    out: dict[str, Mapping[int, str]] = {}
    for name, table in value.items():
        if name not in _CODE_TABLES or not isinstance(table, dict):
            msg = f"config {path}: [codes.{name}] unknown; expected {', '.join(_CODE_TABLES)}"
            raise ConfigError(msg)
        try:
            parsed = {int(k): str(v) for k, v in table.items()}
        except ValueError as exc:
            msg = f'config {path}: [codes.{name}] keys must be integers, as in 0 = "mt"'
            raise ConfigError(msg) from exc
        if name == "direction" and not set(parsed.values()) <= {"mt", "mo"}:
            msg = f'config {path}: [codes.direction] values must be "mt" or "mo"'
            raise ConfigError(msg)
        out[_CODE_TABLES[name]] = _frozen(parsed)
    return out


def _column_tables(path: Path, value: Any) -> dict[str, Mapping[str, str]]:
    if not isinstance(value, dict):
        msg = f"config {path}: [columns] must be a table"
        raise ConfigError(msg)
    out: dict[str, Mapping[str, str]] = {}
    for name, table in value.items():
        ok = isinstance(table, dict) and all(isinstance(v, str) for v in table.values())
        if name not in _COLUMN_TABLES or not ok:
            msg = (
                f"config {path}: [columns.{name}] must be a table of strings in "
                f"{', '.join(f'[columns.{t}]' for t in _COLUMN_TABLES)}"
            )
            raise ConfigError(msg)
        out[_COLUMN_TABLES[name]] = _frozen(table)
    return out


def _spark_table(path: Path, value: Any) -> Mapping[str, str]:
    """Return the [spark] table: Spark settings, as the strings Spark takes."""
    scalars = (str, int, float, bool)
    if not isinstance(value, dict) or not all(isinstance(v, scalars) for v in value.values()):
        msg = (
            f"config {path}: [spark] must be a table of Spark settings, as "
            '"spark.executor.memory" = "4g"'
        )
        raise ConfigError(msg)
    settings = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    for key, text in settings.items():
        problem = _spark_setting_problem(key, text)
        if problem is not None:
            msg = f"config {path}: [spark] {key} = {text!r}: {problem}"
            raise ConfigError(msg)
    return _frozen(settings)


# The master URLs that Spark parses (SparkSubmit, then SparkContext.createTaskScheduler).
_HOST_PORT = r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}"
_SPARK_MASTER = re.compile(
    r"local(?:\[(?:[1-9][0-9]*|\*)(?:\s*,\s*[0-9]+)?\])?"
    r"|local-cluster\[\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*\]"
    rf"|spark://{_HOST_PORT}(?:,{_HOST_PORT})*"
    r"|yarn|k8s://\S+"
)
_SPARK_MASTER_PROBLEM = (
    "Spark cannot parse this master URL; expected local, local[N], local[*], spark://HOST:PORT "
    "(or several, comma-separated), yarn or k8s://URL"
)


def check_spark_master(url: str) -> str:
    """Return a Spark master URL that Spark can parse, else raise ConfigError."""
    if not _SPARK_MASTER.fullmatch(url):
        msg = f"{url!r}: {_SPARK_MASTER_PROBLEM}"
        raise ConfigError(msg)
    return url


# The [spark] settings checked before Spark starts, in Spark's own syntax (JavaUtils.byteStringAs,
# and whole numbers): the sizes and counts set most, several of which spark-submit would refuse
# without naming them, and spark.task.cpus, which the engine reads. Spark checks the others when
# it starts, and `_failures` in engines/spark.py reports what it says.
_SPARK_SIZE = re.compile(r"[0-9]+(?:[bkmgtp]|[kmgtp]b)?", re.IGNORECASE)
_SPARK_SIZES = {"spark.driver.memory", "spark.executor.memory", "spark.driver.maxResultSize"}
_SPARK_SIZES |= {"spark.driver.memoryOverhead", "spark.executor.memoryOverhead"}
_SPARK_COUNTS = {"spark.driver.cores", "spark.executor.cores", "spark.executor.instances"}
_SPARK_COUNTS |= {"spark.cores.max", "spark.task.cpus", "spark.default.parallelism"}


def _spark_setting_problem(key: str, text: str) -> str | None:
    """Return what is wrong with one [spark] setting that can be checked here, or None."""
    value = text.strip()
    if key in _SPARK_SIZES and not _SPARK_SIZE.fullmatch(value):
        return "expected a whole number of bytes and a unit (b, k, m, g, t, p), as in 4g or 512m"
    if key in _SPARK_COUNTS and not (value.isascii() and value.isdigit() and int(value) > 0):
        return "expected a whole number greater than 0"
    if key == "spark.master" and not _SPARK_MASTER.fullmatch(value):
        return _SPARK_MASTER_PROBLEM
    if key == "spark.local.dir":
        for directory in (part.strip() for part in value.split(",")):
            problem = _unwritable(Path(directory))
            if problem is not None:
                return f"Spark cannot create its local directory {directory}: {problem}"
    return None


def _unwritable(directory: Path) -> str | None:
    """Return why `directory` cannot be created or written to, or None."""
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def build_config(values: Mapping[str, Any]) -> RunConfig:
    """Return the run configuration of merged option values (None: not given) and check it.

    The merge itself is Click's (command line, then `CONVSUM_RUN_*` environment variables, then
    the TOML file as the command's `default_map`), and so are the checks of each value; this
    checks what concerns several values.
    """
    given = {k: v for k, v in values.items() if v is not None}
    for key in ("messages", "out"):
        if not given.get(key):
            msg = f"missing {key}: pass --{key} or set {key} in the config file"
            raise ConfigError(msg)
    check_apart(given["out"], {k: given.get(k) for k in ("messages", "statuses")})
    return replace(RunConfig(messages=given["messages"], out=given["out"]), **given)
