"""The HTML report: one deterministic page that loads nothing, read as text and in Chromium."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from convsum.reporting.html import OUTCOMES, render_html
from tests.support.charts import chart_specs

HOSTILE = "</script><script>alert(1)</script>"
DAYS = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
FACTS = {
    "messages": "3000",
    "zone_note": '"quoted" & <b>bold</b>',
    "as_of": "20240103T010000Z-abc123",
    "time_zone": "UTC",
    "data_to": "2024-01-03",
    "data_from": "2024-01-01",
    "run_id": HOSTILE,
}
CHART_IDS = ["chart-volume", "chart-outcomes", "chart-latency", "chart-failures", "chart-operators"]


def days(*repeat: date) -> pa.Array:
    return pa.array(list(repeat), pa.date32())


def report_tables() -> dict[str, pa.Table]:
    """Return one table per section: three days, hostile text in an operator and a check."""
    counts = pa.array([1, 2, 3], pa.int64())
    return {
        "volume": pa.table(
            {
                "day": days(*(d for d in DAYS for _ in range(2))),
                "direction": ["mt", "mo"] * 3,
                "messages": pa.array([50, 30, 60, 20, 70, 10], pa.int64()),
            }
        ),
        "outcomes": pa.table({"day": days(*DAYS), **dict.fromkeys(OUTCOMES, counts)}),
        "latency": pa.table(
            {
                "day": days(*DAYS),
                "p50": pa.array([1.0, None, 2.0], pa.float64()),
                "p95": pa.array([3.0, 4.0, 5.0], pa.float64()),
                "p99": pa.array([6.0, 7.0, 8.0], pa.float64()),
            }
        ),
        "failures": pa.table(
            {
                "status_code": pa.array([500, 401, 402], pa.int64()),
                "messages": pa.array([9, 4, 1], pa.int64()),
            }
        ),
        "operators": pa.table(
            {
                "mcc": ["240", HOSTILE, "244"],
                "mnc": ["07", '"5', "91"],
                "messages": pa.array([10, 3, 2], pa.int64()),
                "delivery_rate": pa.array([0.9, 0.5, None], pa.float64()),
            }
        ),
        "quality": pa.table(
            {"check": [HOSTILE, "duplicate_messages"], "count": pa.array([1, 53], pa.int64())}
        ),
    }


def test_render_html_is_deterministic() -> None:
    reordered = dict(reversed(FACTS.items()))
    assert render_html(FACTS, report_tables()) == render_html(reordered, report_tables())


def test_render_html_lists_the_facts_in_order_then_the_rest_sorted() -> None:
    page = render_html(FACTS, {}).decode()
    facts = [
        (html.unescape(k), html.unescape(v))
        for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page)
    ]
    keys = ["as_of", "time_zone", "data_from", "data_to", "run_id", "messages", "zone_note"]
    assert facts == [(k, FACTS[k]) for k in keys]


def test_render_html_escapes_hostile_text() -> None:
    page = render_html(FACTS, report_tables()).decode()
    assert HOSTILE not in page
    assert "<b>" not in page
    # The page's own three scripts: the specs, the library and the call that draws the charts.
    assert page.count("<script") == 3
    assert page.count("</script") == 3
    assert html.escape(HOSTILE) in page  # the facts and the quality table, as text
    assert chart_specs(page.encode())["chart-operators"]["data"]["values"][1]["mcc"] == HOSTILE


def test_render_html_loads_nothing_from_outside() -> None:
    page = render_html(FACTS, report_tables()).decode()
    external = [
        r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""",
        r"@import",
        r"""url\(\s*["']?\s*(?:[a-z]+:)?//""",
    ]
    assert [p for p in external if re.search(p, page, re.IGNORECASE)] == []
    assert "default-src 'none'" in page  # the browser refuses any load the page would try


def test_render_html_chart_data_follows_the_tables() -> None:
    specs = chart_specs(render_html(FACTS, report_tables()))
    assert sorted(specs) == sorted(CHART_IDS)
    values = {k: spec["data"]["values"] for k, spec in specs.items()}
    assert values["chart-volume"][:2] == [
        {"day": "2024-01-01", "direction": "mt", "messages": 50},
        {"day": "2024-01-01", "direction": "mo", "messages": 30},
    ]
    assert [v["outcome"] for v in values["chart-outcomes"][:8]] == list(OUTCOMES)
    assert specs["chart-outcomes"]["encoding"]["color"]["sort"] == list(OUTCOMES)
    assert [(v["day"], v["percentile"], v["seconds"]) for v in values["chart-latency"][:5]] == [
        ("2024-01-01", "p50", 1.0),
        ("2024-01-01", "p95", 3.0),
        ("2024-01-01", "p99", 6.0),
        ("2024-01-02", "p95", 4.0),  # p50 of that day is null
        ("2024-01-02", "p99", 7.0),
    ]
    assert values["chart-failures"] == [
        {"code": "500", "messages": 9},
        {"code": "401", "messages": 4},
        {"code": "402", "messages": 1},
    ]
    assert [v["operator"] for v in values["chart-operators"]] == ["240/07", f'{HOSTILE}/"5']


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_render_html_missing_or_empty_tables_say_no_data(case: str) -> None:
    data = {} if case == "missing" else {k: t.slice(0, 0) for k, t in report_tables().items()}
    page = render_html(FACTS, data)
    assert page.count(b'<p class="no-data">no data</p>') == 6
    assert b'id="quality"' not in page
    assert chart_specs(page) == {}


def test_render_html_latency_of_only_nulls_says_no_data() -> None:
    nulls = pa.array([None] * 3, pa.float64())
    latency = pa.table({"day": days(*DAYS), "p50": nulls, "p95": nulls, "p99": nulls})
    page = render_html(FACTS, {**report_tables(), "latency": latency})
    assert b'<div class="chart" id="chart-latency"><p class="no-data">no data</p></div>' in page
    assert "chart-latency" not in chart_specs(page)


@dataclass
class Visit:
    """A page opened from a file, with every request it made and everything it complained of."""

    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path)
        yield browser
        browser.close()


@contextmanager
def opened(browser: Browser, report: Path) -> Iterator[Visit]:
    """Open `report` by its file URL and wait until its charts are drawn (or failed)."""
    visit = Visit(browser.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            visit.problems.append(f"{message.type}: {message.text}")

    def on_dialog(dialog: Dialog) -> None:
        visit.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()  # an open dialog would hold the page until the timeout

    visit.page.on("request", lambda request: visit.requests.append(request.url))
    visit.page.on("console", on_console)
    visit.page.on("pageerror", lambda error: visit.problems.append(f"page error: {error}"))
    visit.page.on("dialog", on_dialog)
    try:
        visit.page.goto(report.as_uri())
        try:
            visit.page.wait_for_function("document.body.dataset.charts !== undefined")
        except PlaywrightTimeoutError:
            pytest.fail(f"the page never said whether its charts are drawn: {visit.problems}")
        yield visit
    finally:
        visit.page.close()


COUNT_MARKS = """(ids) => Object.fromEntries(ids.map((id) => {
  const chart = document.getElementById(id);
  const count = (mark) => chart.querySelectorAll(`g.mark-${mark}.role-mark > path`).length;
  return [id, {bars: count("rect"), lines: count("line"), points: count("symbol")}];
}))"""


@pytest.mark.browser
def test_render_html_draws_every_chart_offline_in_chromium(
    chromium: Browser, tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    report.write_bytes(render_html(FACTS, report_tables()))
    with opened(chromium, report) as visit:
        assert visit.page.evaluate("document.body.dataset.charts") == "ready", visit.problems
        assert visit.requests == [report.as_uri()]
        assert visit.problems == []
        assert visit.page.evaluate(COUNT_MARKS, CHART_IDS) == {
            "chart-volume": {"bars": 6, "lines": 0, "points": 0},  # 3 days x 2 directions
            "chart-outcomes": {"bars": 24, "lines": 0, "points": 0},  # 3 days x 8 outcomes
            # a line per percentile; 9 values but one null
            "chart-latency": {"bars": 0, "lines": 3, "points": 8},
            "chart-failures": {"bars": 3, "lines": 0, "points": 0},
            "chart-operators": {"bars": 2, "lines": 0, "points": 0},  # one rate is null
        }
        assert visit.page.inner_text("#quality tbody td") == HOSTILE
        screenshot = tmp_path / "report.png"
        visit.page.screenshot(path=screenshot, full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.browser
def test_render_html_without_data_opens_cleanly_in_chromium(
    chromium: Browser, tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    report.write_bytes(render_html({}, {}))
    with opened(chromium, report) as visit:
        assert visit.page.evaluate("document.body.dataset.charts") == "ready"
        assert (visit.requests, visit.problems) == ([report.as_uri()], [])
        assert visit.page.locator(".no-data").count() == 6
        assert visit.page.locator("svg").count() == 0
