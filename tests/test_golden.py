"""The SPEC section 1 example, byte for byte after parsing, from sample_data/api_example."""

from __future__ import annotations

from pathlib import Path

import orjson

from convsum.config import RunConfig
from convsum.publish.paths import SUMMARY_FILE, conversation_file, conversation_path
from convsum.run import run_job
from tests.support.data import SAMPLES, SPEC_EXAMPLE


def test_golden_api_example_summary(tmp_path: Path) -> None:
    example = SAMPLES / "api_example"
    config = RunConfig(
        messages=str(example / "messages.parquet"),
        statuses=str(example / "statuses.parquet"),
        out=str(tmp_path / "out"),
    )
    run_job(config)
    conversation = conversation_path("ip1-100", "46734487112")
    api = tmp_path / "out" / "current" / "api"
    body = (api / conversation_file(conversation, SUMMARY_FILE)).read_bytes()
    assert orjson.loads(body) == SPEC_EXAMPLE
    assert list(orjson.loads(body)) == list(SPEC_EXAMPLE)  # key order too
    assert body == orjson.dumps(SPEC_EXAMPLE)  # and the compact canonical bytes
