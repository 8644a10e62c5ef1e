"""Read-only SQL over the tables of the tree an output root serves.

A query resolves `OUT/current` once, holds that tree for reading (no run removes its files
meanwhile; a run never waits for a query, see publish/tree.py), reads its snapshot once and sees
exactly those files: the tables of one published run, whole, however many runs publish meanwhile.
It never opens the state store's catalog, so it neither blocks a run nor is blocked by one.

The SQL runs in an in-memory DuckDB whose only views are the tables; the connection may read
those files and nothing else (`allowed_paths`, then external access off and the configuration
locked), and only one SELECT statement is accepted. It keeps to a memory budget and a bound on
what it spills to its temporary directory (`Budget`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from convsum.config import DEFAULT_SPILL_LIMIT, default_memory_limit
from convsum.errors import ConvsumError, QueryError, first_line
from convsum.history import COLUMNS as HISTORY_COLUMNS
from convsum.history import HISTORY
from convsum.publish.tree import CURRENT, reading
from convsum.reporting.tables import NAMES, Snapshot
from convsum.sql import literal

_ATTEMPTS = 5  # a run may replace the served tree between resolving `current` and holding it
# A query's temporary directory is named by its process, so that one ended without its clean-up
# (SIGKILL, or forced out after the grace period of a signal) is removed by a later query.
_SCRATCH_PREFIX = "convsum-query-"
# DuckDB's advice to change a setting: the sandbox's configuration is locked.
_SET_HINT = re.compile(r'\s*Use "SET [^"]*" to [^.]*\.')


class NoTablesError(ConvsumError):
    """The output root has no published tables: exit 1."""


@dataclass(frozen=True)
class Budget:
    """What a query may use: memory (None: the engines' default) and spilled temporary data."""

    memory_limit: str | None = None
    spill_limit: str = DEFAULT_SPILL_LIMIT


@dataclass(frozen=True)
class Tables:
    """A connection to one published run's tables, and what it was opened on."""

    con: duckdb.DuckDBPyConnection
    tree: Path
    run_id: str

    def run(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        """Run one SELECT statement; return its rows."""
        check_read_only(sql)
        try:
            return self.con.sql(sql, params=params).to_arrow_table()
        except (
            duckdb.ParserException,
            duckdb.BinderException,
            duckdb.CatalogException,
            duckdb.PermissionException,
        ) as exc:
            raise QueryError(_reason(exc, whole=True)) from exc
        except duckdb.OutOfMemoryException as exc:
            msg = (
                f"the query needs more than its budget: {_reason(exc)}; raise --memory-limit "
                "or --spill-limit, or ask for fewer rows"
            )
            raise ConvsumError(msg) from exc
        except duckdb.Error as exc:
            raise ConvsumError(f"the query failed: {_reason(exc)}") from exc


def _reason(exc: BaseException, whole: bool = False) -> str:
    """Return DuckDB's first line of an error, or the `whole` of it (its `Did you mean`,
    `Candidate bindings` and the caret under the SQL, without blank lines), without advice to
    SET what the sandbox locks."""
    text = "\n".join(line for line in str(exc).splitlines() if line.strip())
    return _SET_HINT.sub("", text if whole else first_line(exc))


def check_read_only(sql: str) -> None:
    """Refuse anything but exactly one SELECT (FROM, WITH, VALUES, DESCRIBE, SUMMARIZE...)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(_reason(exc, whole=True)) from exc
    if len(statements) != 1:
        msg = f"expected exactly one SQL statement, got {len(statements)}"
        raise QueryError(msg)
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI and _PIVOT.match(sql):
        return  # a PIVOT without IN (...): DuckDB finds the values first, in the same sandbox
    if kind != duckdb.StatementType.SELECT:
        name = str(kind).rpartition(".")[2]
        article = "an" if name[0] in "AEIOU" else "a"
        msg = f"only reading is allowed: {article} {name} statement is refused (use one SELECT)"
        raise QueryError(msg)


# A statement that starts with PIVOT, after any comments and opening parentheses.
_PIVOT = re.compile(r"(?:\s+|--[^\n]*\n|/\*.*?\*/|\()*PIVOT\b", re.IGNORECASE | re.DOTALL)


def _history_sql(path: Path) -> str:
    """The output root's job history (history.py) as a table: every run and sync that ended,
    read when a query reads it; no rows before the first."""
    if not path.is_file():
        typed = ", ".join(f"NULL::{kind} AS {name}" for name, kind in HISTORY_COLUMNS.items())
        return f"SELECT {typed} WHERE false"
    columns = (
        "{" + ", ".join(f"{literal(n)}: {literal(k)}" for n, k in HISTORY_COLUMNS.items()) + "}"
    )
    return (
        f"SELECT * FROM read_json({literal(str(path))}, format = 'newline_delimited', "
        f"columns = {columns}, ignore_errors = true)"
    )


@contextmanager
def open_tables(
    out: Path, budget: Budget | None = None, threads: int | None = None
) -> Iterator[Tables]:
    """Yield a read-only connection to the tables of the tree that `out` serves."""
    _remove_abandoned_scratch()
    for _ in range(_ATTEMPTS):
        with ExitStack() as hold:
            tree = _served(out)
            try:
                hold.enter_context(reading(tree))
            except FileNotFoundError:
                continue  # replaced and removed by a run since `current` was read: read it again
            snapshot = Snapshot.read(tree)
            if snapshot is None and not tree.exists():
                continue  # removed while this query waited for its hold
            if snapshot is None:
                msg = (
                    f"{out}: the published tree has no queryable tables (published by an older "
                    f"convsum); run `convsum run --full --out {out}` once"
                )
                raise NoTablesError(msg)
            scratch = hold.enter_context(
                tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
            )
            sandbox = _sandbox(
                snapshot.paths(tree), out / HISTORY, Path(scratch), budget or Budget(), threads
            )
            con = hold.enter_context(sandbox)
            yield Tables(con, tree, snapshot.run_id)
            return
    msg = f"{out}: the served tree kept changing; try again"
    raise ConvsumError(msg)


def _served(out: Path) -> Path:
    link = out / CURRENT
    if not link.is_symlink():
        msg = f"{out}: nothing published here (no {CURRENT} link); run `convsum run` first"
        raise NoTablesError(msg)
    target = link.readlink()
    if not (out / target).exists() and link.readlink() == target:  # not a run replacing it
        msg = (
            f"{link} names {target}, which does not exist (the output root was changed by "
            f"hand); run `convsum run --full --out {out}` to publish it again"
        )
        raise NoTablesError(msg)
    return out / target


def _remove_abandoned_scratch() -> None:
    """Remove the temporary directories of queries whose process has ended."""
    for scratch in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = scratch.name.removeprefix(_SCRATCH_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(scratch, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def _sandbox(
    files: dict[str, list[str]],
    history: Path,
    scratch: Path,
    budget: Budget,
    threads: int | None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "temp_directory": str(scratch),
        "memory_limit": budget.memory_limit or default_memory_limit(),
        "max_temp_directory_size": budget.spill_limit,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        paths = [f for fs in files.values() for f in fs] + [str(history)]
        con.execute("SET allowed_paths = $paths", {"paths": paths})
        for name in NAMES:
            listed = ", ".join(literal(f) for f in files[name])
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}])")
        con.execute(f"CREATE VIEW history AS {_history_sql(history)}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()
