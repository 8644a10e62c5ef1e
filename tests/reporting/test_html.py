"""The HTML report: one deterministic page that loads nothing, read as text and in Chromium.

The page's numbers are the reports' (`convsum report overview` and the others, run with the same
options); the browser tests open pages of half a year of generated traffic, as a manager would.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from convsum.cli import cli
from convsum.config import RunConfig
from convsum.generate import generate
from convsum.reporting import html as report_page
from convsum.reporting.html import (
    ALL,
    CHART_IDS,
    LATENCY_TICKS,
    OUTCOME_COLOURS,
    Overview,
    Period,
    render_html,
    tiles,
)
from convsum.run import run_job
from tests.support.charts import chart_specs

HOSTILE = "</script><script>alert(1)</script>"
DAYS = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
NOW = Overview(messages=3000, delivery_rate=0.9, failed=300, failed_share=0.1, p50=60.0, p95=95.5)
BEFORE = Overview(messages=2000, delivery_rate=0.92, failed=150, failed_share=0.075, p50=80.0,
                  p95=95.5)  # fmt: skip


def a_page(**changes: Any) -> report_page.Page:
    """Three days of two owners, one named with hostile text, as `collect` would give them."""
    owners = ("acme", HOSTILE)
    scopes = [ALL, *owners]
    page = report_page.Page(
        run_id=HOSTILE,
        as_of=datetime(2024, 1, 4, 1, 2, 3),
        time_zone="Europe/Stockholm",
        period=Period(DAYS[0], date(2024, 1, 4)),
        requested=Period(DAYS[0], None),
        owners=owners,
        owners_in_scope=2,
        overview=dict.fromkeys(scopes, NOW),
        previous=dict.fromkeys(scopes, BEFORE),
        charts={
            "volume": [
                {"scope": s, "day": d, "direction": r, "messages": 10}
                for s in scopes
                for d in DAYS
                for r in ("mt", "mo")
            ],
            "outcomes": [
                {"scope": s, "day": d, "outcome": o, "messages": 5}
                for s in scopes
                for d in DAYS
                for o in OUTCOME_COLOURS
            ],
            "latency": [
                {"scope": s, "day": d, "percentile": p, "seconds": 60.0, "latency": "1m 0s"}
                for s in scopes
                for d in DAYS
                for p in ("p50", "p95", "p99")
            ],
            "failures": [
                {
                    "scope": s,
                    "code": "202 Expired",
                    "outcome": "expired",
                    "messages": 9,
                    "share": 1.0,
                }
                for s in scopes
            ],
            "operators": [
                {
                    "scope": s,
                    "operator": f"{HOSTILE}/07",
                    "messages": 10,
                    "finalised": 9,
                    "delivery_rate": 0.5,
                }
                for s in scopes
            ],
        },
        quality=[{"check": HOSTILE, "count": 1}, {"check": "duplicate_messages", "count": 5300}],
    )
    return replace(page, **changes)


def test_render_html_is_deterministic() -> None:
    assert render_html(a_page()) == render_html(a_page())


def test_render_html_escapes_hostile_text() -> None:
    page = render_html(a_page()).decode()
    assert HOSTILE not in page
    # The page's own four scripts: the specs, the tiles, the library and the code that draws.
    assert page.count("<script") == 4
    assert page.count("</script") == 4
    escaped = html.escape(HOSTILE)
    assert f'<option value="{escaped}">{escaped} (3,000 messages)</option>' in page
    assert f"run {escaped}" in page and f"<td>{escaped}</td>" in page
    specs = chart_specs(page.encode())
    assert specs["chart-operators"]["data"]["values"][0]["operator"] == f"{HOSTILE}/07"


def test_render_html_loads_nothing_from_outside() -> None:
    page = render_html(a_page()).decode()
    external = [
        r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""",
        r"@import",
        r"""url\(\s*["']?\s*(?:[a-z]+:)?//""",
    ]
    assert [p for p in external if re.search(p, page, re.IGNORECASE)] == []
    assert "default-src 'none'" in page  # the browser refuses any load the page would try


def test_render_html_states_the_range_the_zone_and_the_comparison() -> None:
    page = render_html(a_page()).decode()
    assert (
        "1 Jan 2024 to 3 Jan 2024 (3 days), asked for --from 2024-01-01; "
        "local days in Europe/Stockholm"
    ) in page
    assert "Changes against the 3 days before: 29 Dec 2023 to 31 Dec 2023." in page
    assert "Data as of 2024-01-04 01:02 UTC" in page
    assert '<td class="count">5,300</td>' in page


def test_every_chart_draws_the_chosen_scope_on_one_colour_per_concept() -> None:
    specs = chart_specs(render_html(a_page()))
    assert sorted(specs) == sorted(f"chart-{c}" for c in CHART_IDS)
    for spec in specs.values():
        assert spec["params"] == [{"name": "scope", "value": ""}]
        assert spec["transform"][0] == {"filter": "datum.scope === scope"}
        assert spec["width"] == "container"
        tips = spec["encoding"]["tooltip"]  # named fields only: no internal one shows
        assert all("field" in tip for tip in tips)
    day = specs["chart-volume"]["encoding"]["x"]
    assert (day["type"], day["timeUnit"]) == ("temporal", "utcyearmonthdate")
    assert specs["chart-latency"]["encoding"]["y"]["scale"]["type"] == "log"
    outcome = specs["chart-outcomes"]["encoding"]["color"]["scale"]
    failed = specs["chart-failures"]["encoding"]["color"]["scale"]
    for name, colour in zip(failed["domain"], failed["range"], strict=True):
        assert outcome["range"][outcome["domain"].index(name)] == colour
    assert specs["chart-operators"]["mark"]["color"] == OUTCOME_COLOURS["delivered"]


def test_a_page_without_rows_says_what_it_was_asked_for() -> None:
    period = Period(date(2024, 2, 1), date(2024, 3, 1))
    empty = a_page(charts={}, quality=[], overview={}, previous=None, owners=(),
                   owners_in_scope=0, period=period)  # fmt: skip
    page = render_html(empty)
    assert chart_specs(page) == {}
    text = page.decode()
    assert text.count("No messages from 1 Feb 2024 to 29 Feb 2024 in Europe/Stockholm.") == 2
    assert "No failed message from 1 Feb 2024 to 29 Feb 2024." in text
    assert "No run is published." in text
    unknown = render_html(a_page(period=Period(None, None), previous=None)).decode()
    assert "No period to compare with: the range has no messages." in unknown


def test_tiles_show_the_change_against_the_period_before() -> None:
    shown = {t.id: t for t in tiles(NOW, BEFORE)}
    assert [(t.value, t.change, t.tone) for t in shown.values()] == [
        ("3,000", "▲ 50.0%", ""),  # more messages: neither good nor bad
        ("90.0%", "▼ 2.0 pp", "bad"),  # rates change in percentage points
        ("1m 0s", "▼ 25.0%", "good"),  # faster
        ("1m 36s", "= unchanged", ""),
        ("300", "▲ 100.0%", "bad"),
    ]
    assert shown["tile-failed"].note == "10.0% of messages"
    assert shown["tile-delivery-rate"].raw == 0.9
    assert {t.change for t in tiles(NOW, Overview())} == {"no messages before"}
    assert {t.change for t in tiles(NOW, None)} == {""}
    idle = tiles(Overview(), BEFORE)
    assert [t.value for t in idle] == ["0", "n/a", "n/a", "n/a", "0"]
    assert tiles(NOW, replace(BEFORE, failed=0))[4].change == "none before"


def test_period_before_has_the_same_length() -> None:
    period = Period(date(2024, 3, 1), date(2024, 4, 1))
    assert period.days == 31 and period.before() == Period(date(2024, 1, 30), date(2024, 3, 1))
    assert Period(date(2024, 3, 1), None).before() is None
    assert Period(None, None).text() == "the first message to the last message"


@dataclass
class Visit:
    """A page opened from a file, with every request it made and everything it complained of."""

    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def tiles(self) -> dict[str, Any]:
        """Each tile's exact value (its data-value) by tile id."""
        found = self.page.eval_on_selector_all(
            ".tile", "(tiles) => tiles.map((t) => [t.id, t.dataset.value])"
        )
        return {tile: orjson.loads(value) for tile, value in found}

    def choose(self, owner: str) -> None:
        self.page.select_option("#owner", owner)
        self.page.wait_for_function("(owner) => document.body.dataset.scope === owner", arg=owner)


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
def opened(browser: Browser, report: Path, width: int = 1400) -> Iterator[Visit]:
    """Open `report` by its file URL in a window `width` pixels wide and wait until its charts
    are drawn (or failed)."""
    visit = Visit(browser.new_page(viewport={"width": width, "height": 900}))

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


@pytest.fixture(scope="module")
def half_year(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root of 20,000 generated messages over 180 days, three owners."""
    base = tmp_path_factory.mktemp("html")
    generate(base / "in", messages=20_000)
    logs = base / "in"
    run_job(RunConfig(messages=str(logs / "messages"), statuses=str(logs / "statuses"),
                      out=str(base / "out"), only="summaries"))  # fmt: skip
    return base / "out"


def _html(out: Path, target: Path, *args: str) -> Path:
    result = CliRunner().invoke(cli, ["html", str(out), "-o", str(target), *args])
    assert result.exit_code == 0, result.stderr
    return target


def _overview(out: Path, *args: str) -> dict[str | None, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["report", "overview", str(out), "-F", "jsonl", *args])
    assert result.exit_code == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    return {row["owner"]: row for row in rows}


TILE_COLUMNS = {"tile-messages": "messages", "tile-delivery-rate": "delivery_rate",
                "tile-p50": "p50", "tile-p95": "p95", "tile-failed": "failed"}  # fmt: skip

# Per chart: how many marks it draws (bars, line points), the text of each axis's labels, its
# width and its whole drawing.
DRAWN = """(ids) => Object.fromEntries(ids.map((id) => {
  const chart = document.getElementById("chart-" + id);
  const marks = chart.querySelectorAll("g.role-mark > path").length;
  const labels = [...chart.querySelectorAll("g.role-axis[aria-label]")].map(
    (axis) => [...axis.querySelectorAll("g.role-axis-label text")].map((t) => t.textContent));
  const svg = chart.querySelector("svg");
  return [id, {marks, labels, width: svg.getBoundingClientRect().width, drawing: svg.innerHTML}];
}))"""


def _marks(drawn: dict[str, Any]) -> dict[str, Any]:
    """Each chart's count of marks and its axes' labels: the same for the same rows (a drawing
    drawn again may order its elements otherwise)."""
    return {
        chart: (d["marks"], [sorted(axis) for axis in d["labels"]]) for chart, d in drawn.items()
    }


@pytest.mark.browser
def test_the_report_of_half_a_year_reads_in_chromium(
    chromium: Browser, half_year: Path, tmp_path: Path
) -> None:
    report = _html(half_year, tmp_path / "report.html", "--min-volume", "1")
    numbers = _overview(half_year)
    with opened(chromium, report) as visit:
        assert visit.page.evaluate("document.body.dataset.charts") == "ready", visit.problems
        assert visit.requests == [report.as_uri()]
        assert visit.problems == []
        drawn = visit.page.evaluate(DRAWN, list(CHART_IDS))
        for chart in ("volume", "outcomes", "latency"):
            x_labels = drawn[chart]["labels"][0]
            assert 4 <= len(x_labels) <= 20, x_labels  # weeks or months, not 180 days
            assert drawn[chart]["width"] > 1200  # the window's width, less the margins
        assert set(drawn["latency"]["labels"][1]) <= set(LATENCY_TICKS.values())
        assert visit.page.evaluate("window.charts['chart-latency'].scale('y').type") == "log"
        assert all(re.fullmatch(r"\d{3} \w.*", code) for code in drawn["failures"]["labels"][1])
        assert visit.tiles() == {tile: numbers[None][c] for tile, c in TILE_COLUMNS.items()}
        screenshot = tmp_path / "report.png"
        visit.page.screenshot(path=screenshot, full_page=True)

        owner = "acct-002"
        visit.choose(owner)
        assert visit.tiles() == {tile: numbers[owner][c] for tile, c in TILE_COLUMNS.items()}
        mine = visit.page.evaluate(DRAWN, list(CHART_IDS))
        for chart in CHART_IDS:  # every chart draws the owner's rows instead
            assert mine[chart] != drawn[chart], chart
        visit.choose("")
        assert _marks(visit.page.evaluate(DRAWN, list(CHART_IDS))) == _marks(drawn)
        assert visit.problems == []
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    with opened(chromium, report, width=800) as narrow:
        widths = narrow.page.evaluate(DRAWN, list(CHART_IDS))
        assert all(w["width"] < 800 for w in widths.values())


@pytest.mark.browser
def test_the_tiles_compare_with_the_period_before(
    chromium: Browser, half_year: Path, tmp_path: Path
) -> None:
    # 59 days against the 59 before them, of which the data has the last 31
    report = _html(half_year, tmp_path / "q1.html", "--from", "2025-02-01", "--to", "2025-04-01")
    now = _overview(half_year, "--from", "2025-02-01", "--to", "2025-04-01")[None]
    before = _overview(half_year, "--from", "2024-12-04", "--to", "2025-02-01")[None]
    with opened(chromium, report) as visit:
        assert visit.tiles() == {tile: now[c] for tile, c in TILE_COLUMNS.items()}
        change = visit.page.inner_text("#tile-messages .change")
        grew = (now["messages"] - before["messages"]) / before["messages"]
        assert grew > 0.5 and change == f"▲ {grew * 100:.1f}%"
        assert "59 days before: 4 Dec 2024 to 31 Jan 2025" in visit.page.inner_text("#compared")
        assert visit.problems == []


@pytest.mark.browser
def test_a_report_without_messages_opens_cleanly_in_chromium(
    chromium: Browser, half_year: Path, tmp_path: Path
) -> None:
    report = _html(half_year, tmp_path / "empty.html", "--from", "2030-01-01", "--to", "2030-02-01")
    with opened(chromium, report) as visit:
        assert visit.page.evaluate("document.body.dataset.charts") == "ready"
        assert (visit.requests, visit.problems) == ([report.as_uri()], [])
        assert visit.page.locator(".no-data").count() == 5
        assert visit.page.locator(".chart svg").count() == 0
        said = visit.page.inner_text("#section-volume")
        assert "No messages from 1 Jan 2030 to 31 Jan 2030 in UTC." in said
        assert visit.tiles()["tile-messages"] == 0
