"""The manifest and the run report (SPEC sections 4 and 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson

from convsum.publish.tree import FILE_LIST

MANIFEST = "manifest.json"
REPORT = "report.json"

# Paths never hold control characters (publish.paths), so the unit separator is a safe delimiter
# for reading a path list as a one-column table.
_READ_LIST = (
    "read_csv({}, columns={{'p': 'VARCHAR'}}, delim='\\x1f', quote='', escape='', header=false)"
)


def sort_file_list(unsorted: Path, tree: Path, previous: Path | None) -> int:
    """Write the tree's sorted `files.txt`; return how many of `previous`'s files it lacks.

    The engine's batch boundaries decide the order in which pages are written, so the list is
    sorted before it is published: the same input gives the same list.
    """
    target = tree / FILE_LIST
    con = duckdb.connect()
    try:
        source = _READ_LIST.format("$new")
        con.execute(
            f"COPY (SELECT p FROM {source} ORDER BY p) TO '{_sql_path(target)}' "
            "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\\x1f')",
            {"new": str(unsorted)},
        )
        old = previous / FILE_LIST if previous else None
        removed = 0
        if old is not None and old.exists():
            row = con.execute(
                f"SELECT count(*) FROM (SELECT p FROM {_READ_LIST.format('$old')} "
                f"EXCEPT SELECT p FROM {source})",
                {"old": str(old), "new": str(unsorted)},
            ).fetchone()
            removed = int(row[0]) if row else 0
    finally:
        con.close()
    unsorted.unlink()
    return removed


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def describe_inputs(paths: dict[str, list[Path]]) -> dict[str, Any]:
    """Return each input's files with their size and modification time, for the manifest."""
    out: dict[str, Any] = {}
    for role, files in paths.items():
        rows = []
        for path in files:
            stat = path.stat()
            rows.append({"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        out[role] = rows
    return out


def write_json(path: Path, value: Any) -> None:
    """Write a JSON document atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)
