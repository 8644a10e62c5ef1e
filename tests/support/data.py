"""The sample data sets the tests run on, and what the SPEC says one of them gives."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent.parent / "sample_data"
DEMO = SAMPLES / "demo"
# The demo data set's days, as its partitions name them.
DAYS = ("date=2018-10-01", "date=2018-10-02", "date=2018-10-03")
SPEC_EXAMPLE = {
    "participant": "46734487112",
    "totalMessageCount": 387,
    "totalSmsCount": 774,
    "mobileTerminatedMessages": {
        "101": {"messages": 43, "sms": 86},
        "102": {"messages": 3, "sms": 6},
        "201": {"messages": 142, "sms": 284},
    },
    "mobileOriginatedMessages": {"201": {"messages": 199, "sms": 398}},
}


def land(inputs: Path, days: tuple[str, ...]) -> None:
    """Copy the demo data set's `days` of messages and statuses under `inputs` (those not there)."""
    for role in ("messages", "statuses"):
        for day in days:
            target = inputs / role / day
            if not target.exists():
                shutil.copytree(DEMO / role / day, target)
