"""The read API's benchmark: requests a second and p99 latency, against static nginx (the floor).

One owner, one conversation of 3,350 messages (67 pages of 50; one message in ten without a
status, so the direction lists count their last page), published by `convsum run`, with a token.
Two nginx servers on loopback, one worker each: the API as `convsum nginx-conf OUT` writes it,
and a plain static server of the same tree (the floor: a page file as it is, no token). Each
request is loaded by wrk (Debian's `wrk`), one thread and 8 connections for `--seconds`, in
rounds: every request once a round, so a noisy neighbour slows them all alike; the table gives
medians of the rounds and the ratios the goals name, all from this one run.

    python -m benchmarks.api [--rounds 3] [--seconds 5] [--gzip]     (or: make bench-api)

With --gzip the tree is stored gzip-compressed (`run --gzip`): the API reads each file through
nginx, which decodes it, and the floor's static server decodes it too (gzip_static, gunzip).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tests.support.ports import free_port

BIN = Path(sys.executable).parent
OWNER, PARTICIPANT, MESSAGES = "acme", "46700000001", 3350
TOKEN = "bench-token-0123456789abcdef"
CONVERSATION = f"/v2/conversations/{PARTICIPANT}"
# (name, path and query); the floor's is the page file that answers the first page.
REQUESTS = [
    ("summary", f"{CONVERSATION}/summary"),
    ("page at the page size, start 0", f"{CONVERSATION}?limit=50"),
    ("page at the page size, start 1650", f"{CONVERSATION}?start=1650&limit=50"),
    ("mt page, start 0", f"{CONVERSATION}/mt?limit=50"),
    ("unaligned, start=17&limit=50", f"{CONVERSATION}?start=17&limit=50"),
    ("order=DESC, limit=50", f"{CONVERSATION}?limit=50&order=DESC"),
    ("limit=1000", f"{CONVERSATION}?limit=1000"),
    ("limit=1000&order=DESC", f"{CONVERSATION}?limit=1000&order=DESC"),
]
FLOOR = "static page file (floor)"


def publish(base: Path, gzip: bool) -> Path:
    """Write the inputs, run the job (with `gzip`, `--gzip`), store the token; return the
    output root."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "id": f"m{i:05d}",
            "owner": OWNER,
            "sender": "Acme" if i % 3 else PARTICIPANT,
            "recipient": PARTICIPANT if i % 3 else "Acme",
            "direction": "mt" if i % 3 else "mo",
            "segments": 1 + i % 2,
            "body": f"Message {i}: your code is {i * 7919 % 1000000:06d}",
            "created": t0 + timedelta(seconds=i),
        }
        for i in range(MESSAGES)
    ]
    statuses = [
        {"messageId": f"m{i:05d}", "code": 201, "created": t0 + timedelta(seconds=i + 5)}
        for i in range(MESSAGES)
        if i % 10
    ]
    (base / "in").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), base / "in" / "m.parquet")
    pq.write_table(pa.Table.from_pylist(statuses), base / "in" / "s.parquet")
    out = base / "out"
    inputs: list[str | Path] = ["--messages", base / "in" / "m.parquet"]
    inputs += ["--statuses", base / "in" / "s.parquet"]
    run = [BIN / "convsum", "run", *inputs, "--out", out, *(["--gzip"] if gzip else [])]
    subprocess.run(run, check=True, capture_output=True)
    tokens: list[str | Path] = [BIN / "convsum", "tokens", "import", out]
    subprocess.run(tokens, input=f"{OWNER}\t{TOKEN}\n", text=True, check=True, capture_output=True)
    return out


@contextmanager
def nginx(conf: str, prefix: Path, port: int) -> Iterator[str]:
    prefix.mkdir(parents=True)
    (prefix / "nginx.conf").write_text(conf)
    process = subprocess.Popen(["nginx", "-p", prefix, "-c", prefix / "nginx.conf"])
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def floor_conf(api_root: Path, port: int, user: str, gzip: bool) -> str:
    """A plain static nginx, tuned as the API's: one worker, access log on, etag on; for a gzip
    tree, sending the stored file decoded to a client that does not accept gzip (wrk)."""
    storage = "gzip_static always;\n        gunzip on;\n        " if gzip else ""
    return f"""{user}worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log access.log;
    types {{ application/json json; }}
    server {{
        listen 127.0.0.1:{port};
        {storage}root "{api_root}";
    }}
}}
"""


def wrk(url: str, seconds: int, token: str | None) -> tuple[float, float]:
    """Requests a second and p99 latency (ms) of one wrk run; every answer must be a 200."""
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    args = ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", *header, url]
    text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in text:
        raise SystemExit(f"{url}: answers other than 200:\n{text}")
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)\b", text)
    assert p99 is not None, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="a tree stored gzip-compressed")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install nginx wrk")
    base = Path(tempfile.mkdtemp(prefix="convsum-api-bench-"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    try:
        out = publish(base, args.gzip)
        api_port, floor_port = free_port(), free_port()
        listen = ["--listen", f"127.0.0.1:{api_port}"]
        conf = subprocess.run(
            [BIN / "convsum", "nginx-conf", out, *listen, *(["--user", "root"] if user else [])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        api_root = (out / "current" / "api").resolve()
        pattern = f"*/*/{OWNER}/v2/conversations/*/*/{PARTICIPANT}.all.asc.0.json*"
        page = next(api_root.glob(pattern))
        floor_path = "/" + str(page.relative_to(api_root)).removesuffix(".gz")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in REQUESTS}
        results[FLOOR] = []
        static = floor_conf(api_root, floor_port, user, args.gzip)
        with (
            nginx(conf, base / "nginx-api", api_port) as api,
            nginx(static, base / "nginx-floor", floor_port) as floor,
        ):
            for _ in range(args.rounds):
                results[FLOOR].append(wrk(floor + floor_path, args.seconds, None))
                for name, path in REQUESTS:
                    results[name].append(wrk(api + path, args.seconds, TOKEN))
        report(results, args.rounds, args.seconds, args.gzip)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(
    results: dict[str, list[tuple[float, float]]], rounds: int, seconds: int, gzip: bool
) -> None:
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs))
        for name, runs in results.items()
    }
    floor_rps = medians[FLOOR][0]
    page_rps = medians["page at the page size, start 0"][0]
    stored = "a tree stored gzip-compressed" if gzip else "a tree stored as served"
    print(f"wrk -t1 -c8, {seconds} s a run, medians of {rounds} rounds; one nginx worker each; "
          f"{stored}\n")  # fmt: skip
    print("| request | requests/s | p99 | floor / it |")
    print("|---|---|---|---|")
    for name, (rps, p99) in medians.items():
        print(f"| {name} | {rps:,.0f} | {p99:.2f} ms | {floor_rps / rps:.1f} x |")
    print()
    print(f"page at the page size: {floor_rps / page_rps:.1f} x the floor (goal: at most 2 x)")
    one_k = medians["limit=1000"][0]
    print(f"limit=1000: {page_rps / one_k:.1f} x a page's time (goal: at most 5 x)")


if __name__ == "__main__":
    main()
