"""Published trees: their files read for comparison, and the job run on a directory's logs with
its tree checked against the pure-Python reference."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson

from convsum.config import RunConfig
from convsum.engines import polars as polars_engine
from convsum.engines import spark as spark_engine
from convsum.incremental.catalog import STATE
from convsum.publish.tree import READERS
from convsum.reporting import tables as tables_module
from convsum.reporting.tables import TABLES
from convsum.run import run_job
from tests.conftest import Tree
from tests.support.reference import conversations

VOLATILE = {"run_id", "started_at", "stages"}


def published(out: Path) -> dict[str, bytes]:
    """Every served file and the file list of an output root, by path."""
    current = out / "current"
    files = {
        str(path.relative_to(current)): path.read_bytes()
        for path in (current / "api").rglob("*")
        if path.is_file()
    }
    files["files.txt"] = (current / "files.txt").read_bytes()
    return files


def comparable_tree(out: Path, ignore: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file of an output root's tree by path, but the state store's, the tables' and the
    readers'; the manifest and the report without what changes from run to run, nor `ignore`."""
    tree = out / "current"
    files = {}
    for path in sorted(tree.rglob("*")):
        # The state store and the tables are named by run; the tables' rows are compared in
        # tests/engines/test_parity.py and tests/test_incremental.py.
        if path.is_file() and path.relative_to(tree).parts[0] not in (STATE, TABLES, READERS):
            files[str(path.relative_to(tree))] = path.read_bytes()
    for name in ("manifest.json", "report.json"):
        doc = orjson.loads(files.pop(name))
        for key in (*VOLATILE, *ignore):
            doc.pop(key, None)
            doc.get("counts", {}).pop(key, None)
        doc.get("changes", {}).pop("previous_run_id", None)  # a run id, as volatile as its own
        files[name] = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    return files


def tree_bytes(tree: Tree, suffix: str = "") -> dict[str, bytes]:
    """Every listed file's stored bytes (each at its path + `suffix`), and the list."""
    files = {path: (tree.api / (path + suffix)).read_bytes() for path in tree.files()}
    files["files.txt"] = (tree.out / "current" / "files.txt").read_bytes()
    return files


def run(
    directory: Path,
    engine: str,
    page_size: int,
    threads: int | None,
    parts: int = 1,
    gzip: bool = False,
) -> Tree:
    """Run the job; with `parts` > 1, the work is split as a memory budget too small for it
    would: the Polars engine's passes into that many parts, the tables into a chunk per day; and
    the Spark engine's shuffles into that many buckets. With `gzip`, the tree is stored so."""
    out = directory / f"out-{engine}-{threads}-{parts}{'-gzip' if gzip else ''}"
    config = RunConfig(
        messages=str(directory / "messages.parquet"),
        statuses=str(directory / "statuses.parquet"),
        out=str(out),
        engine=engine,
        page_size=page_size,
        threads=threads,
        desc_pages=True,
        gzip=gzip,
    )
    with ExitStack() as split:
        if parts > 1:
            split.enter_context(patch.object(polars_engine, "_parts", lambda *_: parts))
            split.enter_context(patch.object(spark_engine, "_bucket_count", lambda *_: parts))
            split.enter_context(patch.object(tables_module, "_BYTES_PER_MESSAGE", 2**62))
        return Tree(out, run_job(config))


def check_against_reference(
    tree: Tree, messages: list[dict[str, Any]], statuses: list[dict[str, Any]]
) -> None:
    summaries, lists = conversations(messages, statuses)
    summary_files = [f for f in tree.files() if f.endswith(".summary.json")]
    assert len(summary_files) == len(summaries)
    for (owner, participant), summary in summaries.items():
        assert tree.summary(participant, owner=owner) == summary
        for name in ("all", "mt", "mo"):
            expected = lists[(owner, participant, name)]
            pages = tree.pages(participant, name, owner=owner)
            assert [m for page in pages for m in page] == expected
            assert all(len(page) == tree.page_size for page in pages[:-1])
            desc = tree.pages(participant, name, owner=owner, order="desc")
            assert [m for page in desc for m in page] == expected[::-1]
