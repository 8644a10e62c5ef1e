"""The chart specifications an HTML report embeds."""

from __future__ import annotations

import re
from typing import Any

import orjson


def chart_specs(page: bytes) -> dict[str, Any]:
    """Return the chart specifications the report page `page` embeds, by chart id."""
    found = re.search(rb'<script type="application/json" id="chart-specs">(.*?)</script>', page)
    assert found is not None
    specs: dict[str, Any] = orjson.loads(found.group(1))
    return specs
