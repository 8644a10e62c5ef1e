"""Shared helpers: tiny inputs built inline from dicts, and readers of a published tree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import settings

from convsum.config import ENGINES, RunConfig
from convsum.history import HISTORY
from convsum.publish.paths import SUMMARY_FILE, conversation_file, conversation_path, page_file
from convsum.results import RunReport
from convsum.run import run_job
from tests.support.s3server import S3Server, running_s3_server

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

# `pytest --hypothesis-profile=slow` (make test-slow) runs twenty times more examples, `fast`
# (make test-fast) a fifth of them.
settings.register_profile("slow", max_examples=2000, deadline=None)
settings.register_profile("fast", max_examples=20)


def at(seconds: float) -> datetime:
    """Return T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def message(id: str, **fields: Any) -> dict[str, Any]:
    """Return a message row with sensible defaults for every column."""
    row: dict[str, Any] = {
        "id": id,
        "batchId": None,
        "owner": "acme",
        "sender": "Acme",
        "recipient": "46700000001",
        "body": f"body of {id}",
        "direction": "mt",
        "segments": 1,
        "type": "SMS",
        "datacoding": "gsm",
        "priority": 1,
        "price": 0.05,
        "currency": "SEK",
        "created": T0,
        "modified": None,
        "reference": None,
        "mcc": "240",
        "mnc": "07",
    }
    row.update(fields)
    return row


def status(
    message_id: str, code: int, created: datetime = T0, duration: int | None = 0
) -> dict[str, Any]:
    """Return a status-log row."""
    return {"messageId": message_id, "code": code, "created": created, "duration": duration}


MESSAGE_TYPES = {
    "id": pa.string(),
    "batchId": pa.string(),
    "owner": pa.string(),
    "sender": pa.string(),
    "recipient": pa.string(),
    "body": pa.string(),
    "direction": pa.string(),
    "segments": pa.int32(),
    "type": pa.string(),
    "datacoding": pa.string(),
    "priority": pa.int32(),
    "price": pa.float64(),
    "currency": pa.string(),
    "created": pa.timestamp("ms", "UTC"),
    "modified": pa.timestamp("ms", "UTC"),
    "reference": pa.string(),
    "mcc": pa.string(),
    "mnc": pa.string(),
}
STATUS_TYPES = {
    "messageId": pa.string(),
    "code": pa.int32(),
    "created": pa.timestamp("ms", "UTC"),
    "duration": pa.int32(),
}
# For logs that hold the widest codes and durations (tests/support/strategies.py).
WIDE_STATUS_TYPES = {**STATUS_TYPES, "code": pa.int64(), "duration": pa.int64()}


def write_parquet(
    path: Path, rows: list[dict[str, Any]], types: dict[str, pa.DataType] | None = None
) -> Path:
    """Write rows to a Parquet file; columns take `types` where given, else are inferred."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        names = list(rows[0])
        schema = pa.schema(
            [(n, (types or {}).get(n) or pa.infer_type([r[n] for r in rows])) for n in names]
        )
        table = pa.Table.from_pylist(rows, schema=schema)
    else:
        table = pa.table({n: pa.array([], t) for n, t in (types or MESSAGE_TYPES).items()})
    pq.write_table(table, path)
    return path


def published_root(
    base: Path, messages: list[dict[str, Any]], statuses: list[dict[str, Any]]
) -> Path:
    """Write the rows as inputs under `base/in`, run the job into `base/out`; return the root."""
    m = write_parquet(base / "in" / "m.parquet", messages, MESSAGE_TYPES)
    s = write_parquet(base / "in" / "s.parquet", statuses, STATUS_TYPES)
    run_job(RunConfig(messages=str(m), statuses=str(s), out=str(base / "out")))
    return base / "out"


class Tree:
    """A published output root, read back as the API would answer."""

    def __init__(self, out: Path, report: RunReport) -> None:
        self.out, self.report = out, report
        self.api = out / "current" / "api"
        manifest = orjson.loads((out / "current" / "manifest.json").read_bytes())
        self.page_size = manifest["layout"]["page_size"]

    def summary(self, participant: str, owner: str = "acme") -> dict[str, Any] | None:
        path = self.api / conversation_file(conversation_path(owner, participant), SUMMARY_FILE)
        return orjson.loads(path.read_bytes()) if path.exists() else None

    def pages(
        self, participant: str, list_name: str = "all", owner: str = "acme", order: str = "asc"
    ) -> list[list[dict[str, Any]]]:
        conversation = conversation_path(owner, participant)
        pages = []
        start = 0
        while (
            path := self.api
            / conversation_file(conversation, page_file(self.page_size, list_name, order, start))
        ).exists():
            pages.append(orjson.loads(path.read_bytes()))
            start += self.page_size
        return pages

    def messages(
        self, participant: str, list_name: str = "all", owner: str = "acme"
    ) -> list[dict[str, Any]]:
        return [m for page in self.pages(participant, list_name, owner) for m in page]

    def ids(self, participant: str, list_name: str = "all", owner: str = "acme") -> list[str]:
        return [m["id"] for m in self.messages(participant, list_name, owner)]

    def files(self) -> list[str]:
        return (self.out / "current" / "files.txt").read_text().splitlines()


RunTree = Callable[..., Tree]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its content: what a run publishes (the lock file
    and the history aside: every run that ends, published or not, adds a line to the history)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".lock" or (path.name == HISTORY and path.parent == root):
            continue
        if path.is_symlink():
            out[str(path.relative_to(root))] = "-> " + str(path.readlink())
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path.relative_to(root))] = "dir"
    return out


# The engines that compute SPEC section 3 on this machine. The Spark engine runs the DuckDB
# engine's steps in its executors, so the rules' cases run here, and Spark keeps a contract of its
# own: every rule in one log, its tree DuckDB's byte for byte (tests/engines/test_spark.py), the
# parity property, determinism, incremental runs and its failures (tests/engines/test_spark*.py).
LOCAL_ENGINES = tuple(engine for engine in ENGINES if engine != "spark")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `spark` every test that starts the Spark engine: its modules, and the cases that
    take it as a parameter (the tests that loop over ENGINES carry the mark themselves)."""
    for item in items:
        params = getattr(item, "callspec", None)
        takes_spark = params is not None and "spark" in params.params.values()
        if takes_spark or item.path.name.startswith("test_spark"):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(params=LOCAL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each engine that computes the rules on this machine, in turn (see LOCAL_ENGINES)."""
    return str(request.param)


@pytest.fixture
def run_tree(tmp_path: Path, engine: str) -> RunTree:
    """Return a function that runs the job on inline rows, with each engine, and reads the tree."""
    counter = iter(range(1_000_000))

    def run(
        messages: Iterable[dict[str, Any]],
        statuses: Iterable[dict[str, Any]] | None = (),
        **config: Any,
    ) -> Tree:
        n = next(counter)
        msg_path = write_parquet(
            tmp_path / f"in{n}" / "messages.parquet", list(messages), MESSAGE_TYPES
        )
        st_path = None
        if statuses is not None:
            st_path = write_parquet(
                tmp_path / f"in{n}" / "statuses.parquet", list(statuses), STATUS_TYPES
            )
        out = config.pop("out", tmp_path / f"out{n}")
        config.setdefault("engine", engine)
        cfg = RunConfig(
            messages=str(msg_path),
            statuses=str(st_path) if st_path else None,
            out=str(out),
            **config,
        )
        report = run_job(cfg)
        return Tree(out, report)

    return run


# The columns of each table that tests.support.reference.tables computes, in its order.
TABLE_COLUMNS = {
    "messages": (
        "owner, id, sender, recipient, direction, segments, created, status_code, "
        "status_created, status_duration, outcome, final_created"
    ),
    "statuses": "owner, message_id, code, created, duration",
    "conversations": "owner, participant, direction, status_code, messages, sms",
}

# Every column of the tables that a run's data decides (the history in `runs` is per run).
ALL_COLUMNS = dict.fromkeys(("messages", "statuses", "conversations"), "*")


def table_rows(out: Path, columns: dict[str, str] = TABLE_COLUMNS) -> dict[str, list[Any]]:
    """Every row of the published tables (the given columns of each), sorted as the reference."""
    from convsum.reporting.query import open_tables

    def row(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in values)

    with open_tables(out) as tables:
        return {
            name: sorted(
                (row(r) for r in tables.con.execute(f"SELECT {cols} FROM {name}").fetchall()),
                key=repr,
            )
            for name, cols in columns.items()
        }


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (moto's) on 127.0.0.1, for the whole session."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server
