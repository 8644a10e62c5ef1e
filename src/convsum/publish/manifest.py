"""The manifest and the run report (SPEC sections 4 and 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from convsum.inputs import Source
from convsum.publish import durable
from convsum.publish.tree import FILE_LIST
from convsum.sql import literal

MANIFEST = "manifest.json"
REPORT = "report.json"
WRITTEN_LIST = "written.txt"
REMOVED_LIST = "removed.txt"

# Paths never hold control characters (publish.paths), so the unit separator is a safe delimiter
# for reading a path list as a one-column table.
_READ_LIST = (
    "read_csv({}, columns={{'p': 'VARCHAR'}}, delim='\\x1f', quote='', escape='', header=false)"
)


def sort_file_list(unsorted: Path, tree: Path, previous: Path | None) -> int:
    """Write the tree's sorted `files.txt`, and `removed.txt`: the files of `previous` it lacks.

    The engine's batch boundaries decide the order in which pages are written, so the list is
    sorted before it is published: the same input gives the same list. Returns how many files
    were removed.
    """
    con = duckdb.connect()
    try:
        _copy_sorted(con, f"SELECT p FROM {_READ_LIST.format('$new')}", tree / FILE_LIST, unsorted)
        old = previous / FILE_LIST if previous else None
        gone = (
            f"SELECT p FROM {_READ_LIST.format('$old')} "
            f"EXCEPT SELECT p FROM {_READ_LIST.format('$new')}"
        )
        if old is None or not old.exists():
            gone = "SELECT NULL::VARCHAR AS p WHERE false"
        removed = _copy_sorted(con, gone, tree / REMOVED_LIST, unsorted, old)
    finally:
        con.close()
    unsorted.unlink()
    return removed


def update_file_list(tree: Path, changes: pa.Table, earlier: pa.Table) -> tuple[int, int, int]:
    """Apply an update's changes to the tree's `files.txt`; write its change lists.

    `changes` and `earlier` hold (path, op) rows, op "+" written or "-" removed; `earlier` are
    the changes of an update that was killed before it finished, applied and reported again
    now (the served files already have them; `files.txt` and the lists may not). Writes
    `written.txt` and `removed.txt` (sorted); returns how many paths `files.txt` and each of
    those list.
    """
    con = duckdb.connect()
    try:
        con.register("changes", changes)
        con.register("earlier", earlier)
        con.execute(
            "CREATE TEMP TABLE final AS SELECT path, op FROM changes UNION ALL "
            "SELECT path, op FROM earlier ANTI JOIN changes USING (path)"
        )
        listed = (
            f"SELECT p FROM {_READ_LIST.format('$old')} "
            "EXCEPT SELECT path FROM final WHERE op = '-' "
            "UNION SELECT path FROM final WHERE op = '+'"
        )
        old = tree / FILE_LIST
        if con.execute("SELECT count(*) FROM final").fetchone() == (0,):
            total = old.read_bytes().count(b"\n")  # nothing changed: the list stands
        else:
            total = _copy_sorted(con, listed, tree / FILE_LIST, old=old)
        written = _copy_sorted(con, "SELECT path FROM final WHERE op = '+'", tree / WRITTEN_LIST)
        removed = _copy_sorted(con, "SELECT path FROM final WHERE op = '-'", tree / REMOVED_LIST)
    finally:
        con.close()
    return total, written, removed


def _copy_sorted(
    con: duckdb.DuckDBPyConnection,
    query: str,
    target: Path,
    new: Path | None = None,
    old: Path | None = None,
) -> int:
    """Write the distinct values of `query`'s one column to `target`, sorted, atomically."""
    params = {k: str(v) for k, v in (("new", new), ("old", old)) if f"${k}" in query and v}
    tmp = target.with_name(f".{target.name}.tmp")
    copied = con.execute(
        f"COPY (SELECT DISTINCT * FROM ({query}) ORDER BY 1) TO {literal(str(tmp))} "
        "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\\x1f')",
        params,
    ).fetchone()
    durable.sync_file(tmp)
    tmp.replace(target)
    return int(copied[0]) if copied else 0


def describe_inputs(sources: list[Source]) -> dict[str, Any]:
    """Return each input's files with their size and modification time, for the manifest."""
    out: dict[str, Any] = {"messages": [], "statuses": []}
    for source in sources:
        row = {"path": str(source.path), "bytes": source.bytes, "mtime_ns": source.mtime_ns}
        out[source.role].append(row)
    return out


def published_run_id(tree: Path | None) -> str | None:
    """Return the run id in the manifest of `tree`, or None without a readable one."""
    try:
        run_id = orjson.loads((tree / MANIFEST).read_bytes())["run_id"] if tree else None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return run_id if isinstance(run_id, str) else None


def write_json(path: Path, value: Any) -> None:
    """Write a JSON document atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    durable.sync_file(tmp)
    tmp.replace(path)
