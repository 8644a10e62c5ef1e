"""Generate realistic message and status logs, deterministic per seed, in bounded memory.

Traffic is shaped like a gateway's: a few owners of unequal size, each with a few very hot sender
ids and virtual numbers; Zipf-distributed customers; 60-80 % mobile-terminated; 1-6 segments;
mt status chains (101, sometimes 102/103/110, 111, 112 or 113, then a final 2xx/4xx/5xx, some
stopping early); mo messages with 201; statuses logged out of order and some days late; about
1 % of messages without any status, a few orphan statuses, duplicate message rows and identical
duplicate status rows. Work is done in chunks of `CHUNK` messages, one Parquet file each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convsum.publish.tree import make_marked, remove_made

CHUNK = 1_000_000
START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
SPAN_US = 180 * 86_400 * 1_000_000  # half a year of history
SEGMENT_WEIGHTS = np.array([0.62, 0.22, 0.08, 0.04, 0.025, 0.015])
FINALS = np.array([201, 202, 203, 402, 403, 501])
FINAL_WEIGHTS = np.array([0.86, 0.05, 0.01, 0.03, 0.02, 0.03])
MICROS = pa.timestamp("us", "UTC")


@dataclass(frozen=True)
class GenerateResult:
    """What was written."""

    messages: int
    statuses: int
    files: int


def _owner_names(owners: int) -> list[str]:
    return [f"acct-{i + 1:03d}" for i in range(owners)]


def _hot_senders(owner: int) -> tuple[list[str], list[str]]:
    """An owner's alphanumeric sender ids and virtual numbers."""
    alpha = [f"Brand{owner + 1}", f"Alerts{owner + 1}", "Info"]
    numbers = [f"4670{owner + 1:03d}{k:04d}" for k in range(2)]
    return alpha, numbers


def generate(out: Path, messages: int, seed: int = 1, owners: int = 3) -> GenerateResult:
    """Write `messages` messages and their statuses under `out/messages` and `out/statuses`."""
    for name in ("messages", "statuses"):
        remove_made(out / name)
        make_marked(out / name)
    total_statuses, files = 0, 0
    customers = max(1_000, messages // 4)
    for index, start in enumerate(range(0, messages, CHUNK)):
        count = min(CHUNK, messages - start)
        rng = np.random.default_rng([seed, index])
        msg, st = _chunk(rng, start, count, messages, customers, owners, seed)
        pq.write_table(msg, out / "messages" / f"part-{index:05d}.parquet")
        pq.write_table(st, out / "statuses" / f"part-{index:05d}.parquet")
        total_statuses += st.num_rows
        files += 2
    return GenerateResult(messages, total_statuses, files)


def _chunk(
    rng: np.random.Generator,
    start: int,
    count: int,
    total: int,
    customers: int,
    owners: int,
    seed: int,
) -> tuple[pa.Table, pa.Table]:
    weights = 1.0 / np.arange(1, owners + 1)
    owner = rng.choice(owners, size=count, p=weights / weights.sum())
    mt_share = 0.6 + 0.2 * (np.arange(owners) % 3) / 2  # 60, 70, 80 % by owner
    mt = rng.random(count) < mt_share[owner]
    customer = (rng.zipf(1.25, count) - 1) % customers
    msisdn = 46_700_000_000 + (customer * 7_919 + 12_345) % 100_000_000
    hot = np.minimum(rng.geometric(0.45, count) - 1, 4)  # the first sender is the hottest
    slot = np.where(mt, hot, 3 + hot % 2)  # mo goes to one of the two virtual numbers
    own = pa.array(_sender_table(owners)).take(pa.array(owner * 5 + slot))
    cust = pc.cast(pa.array(msisdn), pa.string())
    created_us = START_US + (start + np.arange(count)) * (SPAN_US // max(total, 1))
    created_us = created_us + rng.integers(0, SPAN_US // max(total, 1) + 1, count)
    segments = rng.choice(6, size=count, p=SEGMENT_WEIGHTS) + 1
    ids = pc.binary_join_element_wise(
        f"s{seed}-", pc.cast(pa.array(start + np.arange(count)), pa.string()), ""
    )
    messages = _message_table(rng, ids, owner, owners, mt, own, cust, segments, created_us)
    statuses = _status_table(rng, ids, mt, created_us)
    return _with_duplicates(rng, messages), statuses


def _sender_table(owners: int) -> list[str]:
    """Five senders per owner, in owner order: three sender ids, then two virtual numbers."""
    names: list[str] = []
    for owner in range(owners):
        alpha, numbers = _hot_senders(owner)
        names += alpha + numbers
    return names


def _message_table(
    rng: np.random.Generator,
    ids: pa.Array,
    owner: np.ndarray,
    owners: int,
    mt: np.ndarray,
    own: pa.Array,
    cust: pa.Array,
    segments: np.ndarray,
    created_us: np.ndarray,
) -> pa.Table:
    count = len(owner)
    mt_arrow = pa.array(mt)
    minute = pc.cast(pa.array(created_us // 60_000_000), pa.string())
    modified_us = created_us + rng.integers(0, 5_000_000, count)

    def coded(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), names)

    templates = pa.array([("Hello, your code is 1234. " * 12)[: 150 * s - 10] for s in range(1, 7)])
    ucs = rng.random(count) < 0.1
    return pa.table(
        {
            "id": ids,
            "batchId": pc.if_else(mt_arrow, pc.binary_join_element_wise("b", minute, ""), None),
            "owner": coded(owner, _owner_names(owners)),
            "sender": pc.if_else(mt_arrow, own, cust),
            "recipient": pc.if_else(mt_arrow, cust, own),
            "body": pa.DictionaryArray.from_arrays(pa.array(segments - 1, pa.int32()), templates),
            "direction": coded(np.where(mt, 0, 1), ["mt", "mo"]),
            "segments": pa.array(segments, pa.int32()),
            "type": coded(np.ones(count), ["flash", "SMS"]),
            "datacoding": pa.array(np.where(ucs, "ucs", "gsm")),
            "priority": pa.array(np.where(mt, 1, 0), pa.int32()),
            "price": pa.array(np.where(mt, np.round(segments * 0.0725, 4), 0.0)),
            "currency": pa.array(np.full(count, "SEK")),
            "created": pa.array(created_us, pa.int64()).cast(MICROS),
            "modified": pa.array(modified_us, pa.int64()).cast(MICROS),
            "reference": pa.nulls(count, pa.string()),
            "mcc": pa.array(np.full(count, "240")),
            "mnc": pa.array(np.where(rng.random(count) < 0.5, "07", "01")),
        }
    )  # fmt: skip


def _status_table(
    rng: np.random.Generator, ids: pa.Array, mt: np.ndarray, created_us: np.ndarray
) -> pa.Table:
    """Status rows: mt chains, mo 201, out of order, some late, some missing, a few orphans."""
    count = len(mt)
    final = FINALS[rng.choice(len(FINALS), size=count, p=FINAL_WEIGHTS)]
    slots = np.stack(
        [
            np.full(count, 101),
            np.where(rng.random(count) < 0.3, 102, 0),
            np.where(rng.random(count) < 0.1, 103, 0),
            np.where(rng.random(count) < 0.1, 110, 0),
            np.full(count, 111),
            np.where(rng.random(count) < 0.5, 112, 113),
            final,
        ],
        axis=1,
    )
    stop = np.where(rng.random(count) < 0.05, rng.integers(1, 6, count), 7)  # some stop early
    keep = (slots > 0) & (np.arange(7) < stop[:, None]) & mt[:, None]
    keep[:, 0] |= ~mt  # mo: one status, replaced by 201 below
    slots[~mt, 0] = 201
    keep &= (rng.random(count) >= 0.01)[:, None]  # about 1 % without any status
    delays = np.cumsum(rng.integers(200_000, 20_000_000, (count, 7)), axis=1)
    late = rng.random(count) < 0.02
    delays[:, 6] += np.where(late, rng.integers(1, 3 * 86_400, count) * 1_000_000, 0)
    rows, cols = np.nonzero(keep)
    codes = slots[rows, cols]
    times = created_us[rows] + delays[rows, cols]
    message_ids = ids.take(pa.array(rows))
    orphans = max(1, len(rows) // 1000)
    orphan_ids = pc.binary_join_element_wise(
        "orphan-", pc.cast(pa.array(np.arange(orphans)), pa.string()), ""
    )
    table = pa.table(
        {
            "messageId": pa.concat_arrays([message_ids, orphan_ids]),
            "code": pa.array(np.concatenate([codes, np.full(orphans, 201)]), pa.int32()),
            "created": pa.array(np.concatenate([times, created_us[:orphans]])).cast(MICROS),
            "duration": pa.array(np.zeros(len(rows) + orphans), pa.int32()),
        }
    )  # fmt: skip
    repeat = rng.choice(table.num_rows, size=table.num_rows // 500, replace=False)
    table = pa.concat_tables([table, table.take(pa.array(repeat))])
    return table.take(pa.array(rng.permutation(table.num_rows)))  # logged out of order


def _with_duplicates(rng: np.random.Generator, messages: pa.Table) -> pa.Table:
    """Append about 0.5 % of the rows again, modified later."""
    picked = rng.choice(messages.num_rows, size=messages.num_rows // 200, replace=False)
    dup = messages.take(pa.array(np.sort(picked)))
    later = pc.add(dup["modified"].cast(pa.int64()), 60_000_000).cast(MICROS)
    dup = dup.set_column(dup.schema.get_field_index("modified"), "modified", later)
    return pa.concat_tables([messages, dup])
