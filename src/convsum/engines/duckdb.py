"""The DuckDB engine: SPEC section 3 as SQL over the staged Parquet files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from convsum.codes import KNOWN_CODES
from convsum.config import default_memory_limit
from convsum.engines.base import (
    CONVERSATION_SCHEMA,
    EngineSettings,
    ReadHere,
    StatusOrder,
    deduplicated_messages,
    define_relations,
    message_object_parts,
    status_order,
)
from convsum.inputs import MESSAGES_SCHEMA, StagedInputs
from convsum.results import Facts
from convsum.rules import is_final, memberships, page_start, status_of
from convsum.sql import literal

# JSON text must be byte-identical across engines. DuckDB's to_json agrees with the canonical
# form (that of orjson) except for a few control characters (upper-case hex) and for doubles
# outside [1e-4, 1e15]; those rare values go through a Python function instead.
_MACROS = """
CREATE MACRO json_text(s) AS CASE
    WHEN s IS NULL THEN 'null'
    WHEN regexp_matches(s, '[\\x00-\\x1f]') THEN json_text_exact(s)
    ELSE to_json(s)::VARCHAR END;
CREATE MACRO json_int(i) AS coalesce(CAST(i AS VARCHAR), 'null');
CREATE MACRO json_double(x) AS CASE
    WHEN x IS NULL OR isnan(x) OR isinf(x) THEN 'null'
    WHEN x = 0 OR abs(x) BETWEEN 1e-4 AND 1e15 THEN to_json(x)::VARCHAR
    ELSE json_double_exact(x) END;
CREATE MACRO iso_time(t) AS strftime(t, '%Y-%m-%dT%H:%M:%S')
    || CASE WHEN millisecond(t) % 1000 <> 0 THEN strftime(t, '.%g') ELSE '' END || 'Z';
CREATE MACRO json_time(t) AS CASE WHEN t IS NULL THEN 'null' ELSE '"' || iso_time(t) || '"' END;
CREATE MACRO conversation_bucket(owner, participant, n) AS (hash(owner, participant) % n)::INTEGER;
"""

# Each distinct (owner, id) once: the greatest `modified` wins, then the greater content (the
# message object's text without its statuses), so the choice never depends on input order.
# Duplicates are rare: one pass over the ids finds those seen more than once (`multi`, which also
# holds an id that two owners share); only their rows are read whole, ranked and rendered. Every
# other row is used where it lies, through the view `msg`, which reads only the columns a query
# asks for: bodies are read only when pages are rendered.
_MULTI = """
CREATE TEMP TABLE multi AS SELECT id FROM read_parquet({messages}) GROUP BY id HAVING count(*) > 1;
CREATE TEMP TABLE multi_rows AS SELECT * FROM read_parquet({messages}) SEMI JOIN multi USING (id);
CREATE TEMP TABLE multi_winners AS
SELECT * EXCLUDE (content) FROM (SELECT *, {content} AS content FROM multi_rows)
QUALIFY row_number() OVER (
    PARTITION BY owner, id ORDER BY modified DESC NULLS LAST, content DESC
) = 1;
"""


def _object_sql(parts: list[tuple[str, str, str]]) -> str:
    """Return the SQL concatenating message fields as JSON, each behind its key."""
    render = {"text": "json_text", "int": "json_int", "double": "json_double", "time": "json_time"}
    return " || ".join(f"'{prefix}' || {render[kind]}({column})" for prefix, column, kind in parts)


_OBJECT = dict(zip(("head", "tail"), map(_object_sql, message_object_parts()), strict=True))
# The message object's text without its statuses: the deduplication's last tie-break.
CONTENT = f"{_OBJECT['head']} || ',\"statuses\":' || {_OBJECT['tail']} || '}}'"

# Latest status per message: greatest `created`, then final groups over the rest, then the higher
# code, then the longer duration (a row with no duration loses). Identical rows are one. The
# order is the greatest packed integer (engines/base.py: StatusOrder) where the data allows it,
# else a tuple-keyed arg_max. In the same pass, the (status, message) pairs (for the report's
# counts) and `final_created`: the earliest `created` of a status with a final code (for the
# queryable tables). Written to a Parquet file in the work directory, not kept as a temporary
# table: one row per message, it is the largest thing the derivation keeps, and DuckDB spills a
# table to disk uncompressed (at 100 million messages 12 GB; the Parquet file is 223 MB at ten
# million).
_LATEST = """
COPY (SELECT owner, id, pairs, {status} AS status, final_created FROM (
    SELECT m.owner, m.id, count(*) AS pairs, {rank} AS rank,
        min(s.created) FILTER ({final}) AS final_created
    FROM (SELECT owner, id FROM msg) AS m
    JOIN read_parquet($statuses) AS s ON {status_of}
    GROUP BY m.owner, m.id
)) TO {target} (FORMAT parquet)
"""
_RANK_TUPLE = """arg_max(
    {{'code': s.code, 'duration': s.duration, 'created': s.created}},
    (s.created, {final}, s.code,
        s.duration IS NOT NULL, coalesce(s.duration, 0)))"""
_RANK_PACKED = """max(
    ((epoch_us(s.created)::HUGEINT - {o.created_from}) << {o.created_shift})
    | ({final}::HUGEINT << {o.final_shift})
    | ((s.code::HUGEINT - {o.code_from}) << {o.code_shift})
    | coalesce(s.duration::HUGEINT + 1, 0))"""
# (Bit operators share one precedence in DuckDB: every term is in parentheses.)
_STATUS_PACKED = """{{
    'code': ({o.code_from} + ((rank >> {o.code_shift}) & ((1::HUGEINT << {code_bits}) - 1)))
        ::BIGINT,
    'duration': (nullif(rank & ((1::HUGEINT << {o.code_shift}) - 1), 0) - 1)::BIGINT,
    'created': make_timestamp(({o.created_from} + (rank >> {o.created_shift}))::BIGINT)
}}"""


def _latest_sql(order: StatusOrder | None, target: Path) -> str:
    """Return the statement writing `latest` to `target`, by the packed order or the general
    one."""
    final = is_final("s.code")
    if order is None:
        rank, status = _RANK_TUPLE.format(final=final), "rank"
    else:
        rank = _RANK_PACKED.format(o=order, final=final)
        code_bits = order.final_shift - order.code_shift
        status = _STATUS_PACKED.format(o=order, code_bits=code_bits)
    return _LATEST.format(
        rank=rank,
        status=status,
        final=final,
        status_of=status_of("s", "m"),
        target=literal(str(target)),
    )


# One row per (message, participant): a message is in its sender's and its recipient's
# conversation, once when they are equal. A view: the tally reads it once, each order of pages
# once more; a table of it would hold two rows per message (spilled to disk at scale).
_CONVERSATIONS = f"""
CREATE TEMP VIEW conv AS
WITH coded AS (
    SELECT m.owner, m.id, m.sender, m.recipient, m.direction, m.created, m.segments,
        l.status.code AS code
    FROM msg AS m LEFT JOIN latest AS l USING (owner, id)
)
{memberships("coded", "direction, created, id, segments, code")}
"""

# An incremental run's conversations, from their cut on (see EngineSettings.conversations).
_CONVERSATIONS_OUT = """
CREATE TEMP TABLE conv_out AS
SELECT c.* FROM {scope} AS c JOIN read_parquet($only) AS o USING (owner, participant)
WHERE o.cut_created IS NULL OR (c.created, c.id) >= (o.cut_created, o.cut_id)
"""

# The message lists. The message object's text is rendered here, once per message, only when
# pages are asked for, and only for the rows `kept`: all of them, unless an incremental run leaves
# out the pages that cannot have changed.
_ROWS = """
WITH positioned AS (
    SELECT owner, participant, direction, created, id,
        row_number() OVER (PARTITION BY owner, participant ORDER BY created {o}, id {o}) - 1
            AS pos_all,
        row_number() OVER (PARTITION BY owner, participant, direction
                           ORDER BY created {o}, id {o}) - 1 AS pos_dir
    FROM conv_out
), kept AS ({keep}), rendered AS (
    SELECT m.owner, m.id,
        {head} || ',"statuses":' || CASE WHEN l.status IS NULL THEN '[]' ELSE
            '[{{"code":' || l.status.code || ',"duration":' || json_int(l.status.duration)
            || ',"created":' || json_time(l.status.created) || '}}]' END || {tail} || '}}' AS json
    FROM msg AS m LEFT JOIN latest AS l USING (owner, id)
    {restrict}
)
SELECT k.owner, k.participant, k.direction, k.pos_all, k.pos_dir, ',' || r.json
FROM kept AS k JOIN rendered AS r USING (owner, id)
ORDER BY k.owner, k.participant, k.created {o}, k.id {o}
"""
_KEEP_ALL = "SELECT * FROM positioned"
# An incremental run's ascending lists: only the pages from the first changed row on, and the
# last page of each list (see EngineSettings.conversations).
_KEEP_CHANGED = f"""
WITH marked AS (
    SELECT p.owner, p.participant, p.direction, p.created, p.id,
        o.base_all + p.pos_all AS pos_all, o.base_all,
        CASE p.direction WHEN 'mt' THEN o.base_mt ELSE o.base_mo END AS base_dir,
        CASE p.direction WHEN 'mt' THEN o.base_mt ELSE o.base_mo END + p.pos_dir AS pos_dir,
        (o.since_created IS NULL OR (p.created, p.id) >= (o.since_created, o.since_id))
            AS changed
    FROM positioned AS p JOIN read_parquet($only) AS o USING (owner, participant)
), bounds AS (
    SELECT *,
        coalesce(min(CASE WHEN changed THEN pos_all END) OVER conv, base_all + count(*) OVER conv)
            AS first_all,
        base_all + count(*) OVER conv AS n_all,
        coalesce(min(CASE WHEN changed THEN pos_dir END) OVER list, base_dir + count(*) OVER list)
            AS first_dir,
        base_dir + count(*) OVER list AS n_dir
    FROM marked
    WINDOW conv AS (PARTITION BY owner, participant),
        list AS (PARTITION BY owner, participant, direction)
), cut AS (
    SELECT owner, participant, direction, created, id,
        CASE WHEN pos_all >= {page_start("least(first_all, n_all - 1)")} THEN pos_all END
            AS pos_all,
        CASE WHEN pos_dir >= {page_start("least(first_dir, n_dir - 1)")} THEN pos_dir END
            AS pos_dir
    FROM bounds
)
SELECT * FROM cut WHERE pos_all IS NOT NULL OR pos_dir IS NOT NULL
"""

# A status row belongs to the message of its id and owner, or with no owner to every message of its
# id: `latest` counts (status, message) pairs, and a status of an id that several owners share is
# one matched status however many messages it joins.
_COUNTS = """
SELECT
    (SELECT count(*) FROM read_parquet($messages))
        - (SELECT count(*) FROM multi_rows) + (SELECT count(*) FROM multi_winners) AS messages,
    (SELECT count(*) FROM latest) AS with_status,
    (SELECT coalesce(sum(pairs), 0) FROM latest) - (
        SELECT coalesce(sum(shared.owners - 1), 0) FROM read_parquet($statuses) AS s
        JOIN (SELECT id, count(*) AS owners FROM multi_winners GROUP BY id HAVING owners > 1)
            AS shared ON s.message_id = shared.id AND s.owner IS NULL
    ) AS matched_statuses,
    (SELECT count(*) FROM (SELECT DISTINCT * FROM read_parquet($statuses))) AS distinct_statuses
"""

_UNKNOWN_CODES = """
SELECT code, count(*) FROM read_parquet($statuses)
WHERE code NOT IN (SELECT unnest($known)) GROUP BY code ORDER BY code
"""


def _json_text_exact(value: str) -> str:
    return orjson.dumps(value).decode()


def _json_double_exact(value: float) -> str:
    return orjson.dumps(value).decode()


class DuckDBEngine:
    """Compute the derived tables with DuckDB, spilling to the work directory when needed."""

    name = "duckdb"

    @contextmanager
    def derive(self, staged: StagedInputs, settings: EngineSettings) -> Iterator[_DuckDBDerivation]:
        con = connect(settings)
        try:
            params = resolve(con, staged, settings.work_dir)
            lists(con, settings.conversations)
            yield derivation(con, staged, settings, params)
        finally:
            con.close()


# The derivation in two steps, each local to a key, so that the Spark engine (engines/spark.py)
# runs the same SQL on one partition of the data at a time: `resolve` is local to a message id
# (deduplication, latest status), `lists` to a conversation (its rows, their positions and text).


def resolve(con: duckdb.DuckDBPyConnection, staged: StagedInputs, work: Path) -> dict[str, str]:
    """Create `msg` (the messages after deduplication) and `latest` (the latest status of each
    message that has one) in `con`; return the staged files' globs, as `counts` takes them."""
    params = {
        "messages": str(staged.messages / "*.parquet"),
        "statuses": str(staged.statuses / "*.parquet"),
    }
    con.execute(_MULTI.format(messages=literal(params["messages"]), content=CONTENT))
    msg = deduplicated_messages(staged.messages, "multi", "multi_winners")
    con.execute(f"CREATE TEMP VIEW msg AS SELECT * FROM {msg}")
    latest = work / "latest.parquet"
    con.execute(
        _latest_sql(status_order(staged.statuses), latest), {"statuses": params["statuses"]}
    )
    con.execute(f"CREATE TEMP VIEW latest AS SELECT * FROM read_parquet({literal(str(latest))})")
    return params


# What `resolve` found, one row per message: its staged columns, then `latest`'s columns (null
# without a status), then the buckets (as `lists` takes them) of its two conversations.
_RESOLVED = """
COPY (
    SELECT m.*, l.pairs, l.status, l.final_created,
        conversation_bucket(m.owner, m.sender, $buckets) AS bucket_sender,
        conversation_bucket(m.owner, m.recipient, $buckets) AS bucket_recipient
    FROM msg AS m LEFT JOIN latest AS l USING (owner, id)
) TO {target} (FORMAT parquet)
"""


def write_resolved(con: duckdb.DuckDBPyConnection, target: Path, buckets: int) -> None:
    """Write what `resolve` found in `con` to the Parquet file `target`."""
    con.execute(_RESOLVED.format(target=literal(str(target))), {"buckets": buckets})


def resolved(con: duckdb.DuckDBPyConnection, files: str) -> None:
    """Create `msg` and `latest` in `con` from files that `write_resolved` wrote (a glob)."""
    columns = ", ".join(MESSAGES_SCHEMA.names)
    source = f"read_parquet({literal(files)})"
    con.execute(
        f"""
        CREATE TEMP VIEW msg AS SELECT {columns} FROM {source};
        CREATE TEMP VIEW latest AS
            SELECT owner, id, pairs, status, final_created FROM {source} WHERE pairs IS NOT NULL;
        """
    )


def lists(
    con: duckdb.DuckDBPyConnection,
    conversations: Path | None,
    bucket: tuple[int, int] | None = None,
) -> None:
    """Create `conv` (one row per message and participant) and `conv_out` (the rows the lists are
    made of) from `msg` and `latest`: every conversation's, those of an incremental run
    (EngineSettings.conversations), and with `bucket` (k, of n) only bucket k's."""
    con.execute(_CONVERSATIONS)
    scope = "conv"
    if bucket is not None:
        k, n = bucket
        con.execute(
            "CREATE TEMP VIEW conv_bucket AS SELECT * FROM conv "
            f"WHERE conversation_bucket(owner, participant, {n:d}) = {k:d}"
        )
        scope = "conv_bucket"
    if conversations is None:
        con.execute(f"CREATE TEMP VIEW conv_out AS SELECT * FROM {scope}")
    else:
        con.execute(_CONVERSATIONS_OUT.format(scope=scope), {"only": str(conversations)})


def connect(settings: EngineSettings) -> duckdb.DuckDBPyConnection:
    """Open a connection configured for `settings`, with the JSON rendering macros."""
    con = duckdb.connect(config=_connection_config(settings))
    con.create_function(
        "json_text_exact", _json_text_exact, ["VARCHAR"], "VARCHAR", side_effects=False
    )
    con.create_function(
        "json_double_exact", _json_double_exact, ["DOUBLE"], "VARCHAR", side_effects=False
    )
    con.execute(_MACROS)
    return con


def _connection_config(settings: EngineSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "temp_directory": str(settings.work_dir / "duckdb_tmp"),
        "preserve_insertion_order": False,
    }
    if settings.threads:
        config["threads"] = settings.threads
    config["memory_limit"] = settings.memory_limit or default_memory_limit()
    return config


class _DuckDBDerivation(ReadHere):
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        staged: StagedInputs,
        params: dict[str, str],
        settings: EngineSettings,
    ) -> None:
        self.con, self.params = con, params
        self.staged, self.settings = staged, settings

    def counts(self) -> Facts:
        row = self.con.execute(_COUNTS, self.params).fetchone()
        messages, with_status, matched, distinct = row or (0, 0, 0, 0)
        unknown = self.con.execute(
            _UNKNOWN_CODES, {"statuses": self.params["statuses"], "known": list(KNOWN_CODES)}
        ).fetchall()
        return Facts(
            messages=messages,
            messages_without_status=messages - with_status,
            matched_statuses=matched,
            distinct_statuses=distinct,
            unknown_codes={str(code): n for code, n in unknown},
        )

    def relations(self) -> duckdb.DuckDBPyConnection:
        latest = (
            "(SELECT owner, id, status.code AS code, status.duration AS duration, "
            "status.created AS status_created, final_created FROM latest)"
        )
        return define_relations(self.con, "msg", latest, "conv", self.staged.statuses)

    def conversation_rows(self, descending: bool) -> Iterator[pa.RecordBatch]:
        return conversation_rows(self.con, self.settings, descending)


def derivation(
    con: duckdb.DuckDBPyConnection,
    staged: StagedInputs,
    settings: EngineSettings,
    params: dict[str, str] | None = None,
) -> _DuckDBDerivation:
    """Return the derivation whose relations `resolve` (or `resolved`) and `lists` made in `con`.

    Its `counts` needs the `params` that `resolve` returned.
    """
    return _DuckDBDerivation(con, staged, params or {}, settings)


def conversation_rows(
    con: duckdb.DuckDBPyConnection, settings: EngineSettings, descending: bool
) -> Iterator[pa.RecordBatch]:
    """Yield the rows of `conv_out` (see `lists`), positioned and rendered, in list order."""
    order = "DESC" if descending else "ASC"
    only = settings.conversations
    skip = only is not None and not descending
    restrict = "SEMI JOIN kept USING (owner, id)" if only is not None else ""
    keep = _KEEP_CHANGED if skip else _KEEP_ALL
    sql = _ROWS.format(o=order, keep=keep, restrict=restrict, **_OBJECT)
    params = {"only": str(only), "size": settings.page_size} if skip else None
    reader = con.sql(sql, params=params).to_arrow_reader(settings.batch_rows)
    for batch in reader:
        yield pa.RecordBatch.from_arrays(batch.columns, schema=CONVERSATION_SCHEMA)
