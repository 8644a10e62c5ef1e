"""The HTML report: one self-contained page, to send to a manager, that works offline.

`collect` runs the named reports (reporting/reports.py) for the page: the headline numbers
(`overview`) of the range and of the period of equal length before it, and the charts' tables,
for all the owners of the scope and for each of its largest owners (the page's owner selector).
Every number on the page is a report's: the tiles are `overview`'s rows, the daily charts the
`outcomes` rows summed over owners and directions, the others `latency`, `failures` and
`operators` run once per owner of the selector. The page formats and draws.

The charts are Vega-Lite specs drawn by Vega's SVG renderer. The library comes from PyPI in
vl-convert-python (maintained by the Vega project): `vl_convert.javascript_bundle()` is Vega,
Vega-Lite and vega-embed in one script of about 0.9 MB, the same bytes on every call of a given
version, and the page inlines it. The specs are small plain JSON written here, so Altair (which
would add its schema machinery and a `$schema` URL to every spec) is not needed. Each spec filters
its rows by the signal `scope` (the owner chosen, "" for all), which the selector sets.

The page loads nothing: its Content-Security-Policy allows no source but the inline scripts and
styles (and `eval`, with which Vega compiles its expressions). Text from the data is escaped for
HTML, and the specs are JSON with `<`, `>` and `&` written as `\\u003c`, `\\u003e` and
`\\u0026`, so no value can close a tag. The same inputs give the same bytes: fixed ids, sorted
keys, no clock and no random names.
"""

from __future__ import annotations

import dataclasses
import functools
import html
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from convsum.reporting.human import duration, percent
from convsum.reporting.reports import FAILED, REPORTS, Parameters, run_report
from convsum.reporting.tables import OUTCOMES

if TYPE_CHECKING:
    from convsum.reporting.query import Tables

Json = dict[str, Any]
Row = dict[str, Any]

# The owners the selector offers, the largest first; a page for any other: --owner.
MAX_OWNERS = 10
ALL = ""  # the scope of all the owners of the page

# One colour per concept, the same on every chart: outcomes (green delivered, warm colours for
# the failures, greys for what has no final answer), directions in blues, latencies in teals.
OUTCOME_COLOURS = {
    "delivered": "#2e7d32",
    "expired": "#ef6c00",
    "canceled": "#8d6e63",
    "other_final": "#8e24aa",
    "rejected": "#c62828",
    "error": "#6a1b1a",
    "pending": "#b0bec5",
    "no_status": "#e0e0e0",
}
DIRECTION_COLOURS = {"mt": "#1565c0", "mo": "#64b5f6"}
PERCENTILE_COLOURS = {"p50": "#004d40", "p95": "#26a69a", "p99": "#80cbc4"}
# The latency axis's ticks (seconds), each labelled as a person reads a duration.
LATENCY_TICKS = {
    0.1: "0.1s", 1: "1s", 5: "5s", 10: "10s", 30: "30s", 60: "1m", 120: "2m", 300: "5m",
    600: "10m", 1800: "30m", 3600: "1h", 21600: "6h", 86400: "1d", 604800: "1w",
    2592000: "30d",
}  # fmt: skip
BAR_HEIGHT = 24  # pixels a bar of the failures and the operators takes
CHART_IDS = ("volume", "outcomes", "latency", "failures", "operators")


@dataclass(frozen=True)
class Period:
    """Local days [start, end) in the report's time zone; an end is None when neither the options
    nor the data give it (no messages)."""

    start: date | None
    end: date | None

    @property
    def days(self) -> int | None:
        return (self.end - self.start).days if self.start and self.end else None

    def before(self) -> Period | None:
        """The period of equal length that ends where this one starts."""
        days = self.days
        if days is None or self.start is None:
            return None
        return Period(self.start - timedelta(days=days), self.start)

    def text(self) -> str:
        """ "1 Jan 2025 to 29 Jun 2025", the last day included, or what is known of it."""
        first = _day(self.start) if self.start else "the first message"
        last = _day(self.end - timedelta(days=1)) if self.end else "the last message"
        return f"{first} to {last}"


@dataclass(frozen=True)
class Overview:
    """One row of the `overview` report: the headline numbers of some owners in a period."""

    messages: int = 0
    delivery_rate: float | None = None
    failed: int = 0
    failed_share: float | None = None
    p50: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Overview:
        if row is None:
            return cls()
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Page:
    """What the page shows: the run, the range, the owners, every report's rows it draws."""

    run_id: str
    as_of: datetime | None  # when the run that the tables are of finished
    time_zone: str
    period: Period
    requested: Period  # the range the options asked for (an end None: not given)
    owners: tuple[str, ...]  # the selector's owners, the largest first
    owners_in_scope: int
    overview: Mapping[str, Overview]  # by scope: ALL, then each owner of `owners`
    previous: Mapping[str, Overview] | None  # the same, for period.before()
    charts: Mapping[str, list[Row]]  # by chart id: its rows, each with its `scope`
    quality: list[Row]


def collect(tables: Tables, parameters: Parameters) -> Page:
    """Run the reports the page shows, over `tables`, with the scope that `parameters` give."""
    outcomes = run_report(tables, REPORTS["outcomes"], parameters)
    days = outcomes.column("day")
    period = Period(
        parameters.from_ or pc.min(days).as_py(),
        parameters.to or _next(pc.max(days).as_py()),
    )
    overview = _overviews(tables, parameters)
    owners = tuple(o for o in overview if o != ALL)
    before = period.before()
    previous = None
    if before is not None:
        previous = _overviews(
            tables, dataclasses.replace(parameters, from_=before.start, to=before.end)
        )
    scoped = {ALL: parameters} | {
        o: dataclasses.replace(parameters, owners=(o,)) for o in owners[:MAX_OWNERS]
    }
    charts = {
        "volume": _summed(outcomes, ["day", "direction"], ["messages"], scoped),
        "outcomes": _long(_summed(outcomes, ["day"], list(OUTCOMES), scoped), OUTCOMES),
        "latency": _latency_rows(_each(tables, "latency", scoped, "day")),
        "failures": _failures_rows(_each(tables, "failures", scoped)),
        "operators": _operators_rows(_each(tables, "operators", scoped)),
    }
    last = tables.run("SELECT finished FROM runs ORDER BY run_number DESC LIMIT 1").to_pylist()
    return Page(
        run_id=tables.run_id,
        as_of=last[0]["finished"] if last else None,
        time_zone=parameters.tz,
        period=period,
        requested=Period(parameters.from_, parameters.to),
        owners=owners[:MAX_OWNERS],
        owners_in_scope=len(owners),
        overview={k: v for k, v in overview.items() if k in scoped},
        previous=None if previous is None else {k: previous.get(k, Overview()) for k in scoped},
        charts=charts,
        quality=run_report(tables, REPORTS["quality"], parameters).to_pylist(),
    )


def _next(day: date | None) -> date | None:
    return None if day is None else day + timedelta(days=1)


def _overviews(tables: Tables, parameters: Parameters) -> dict[str, Overview]:
    """The overview's rows by scope: ALL first, then the owners, the most messages first."""
    rows = run_report(tables, REPORTS["overview"], parameters).to_pylist()
    rows.sort(key=lambda r: (r["owner"] is not None, -r["messages"], r["owner"] or ""))
    return {r["owner"] or ALL: Overview.of(r) for r in rows}


def _each(
    tables: Tables, name: str, scoped: Mapping[str, Parameters], by: str | None = None
) -> list[Row]:
    """The report `name` run once per scope, its rows each with their `scope`."""
    return [
        {"scope": scope, **row}
        for scope, parameters in scoped.items()
        for row in run_report(tables, REPORTS[name], parameters, by).to_pylist()
    ]


def _summed(
    table: pa.Table, keys: list[str], columns: list[str], scoped: Mapping[str, Parameters]
) -> list[Row]:
    """The sums of `columns` by `keys` over all the rows, then over each owner's, with `scope`."""
    rows = []
    for scope in scoped:
        part = table if scope == ALL else table.filter(pc.equal(table["owner"], scope))
        sums = part.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in columns])
        sums = sums.rename_columns([n.removesuffix("_sum") for n in sums.column_names])
        sums = sums.sort_by([(k, "ascending") for k in keys])
        rows += [{"scope": scope, **row} for row in sums.to_pylist()]
    return rows


def _long(rows: list[Row], columns: Iterable[str]) -> list[Row]:
    """One row per day and column of `columns`, in their order, leaving out zeros."""
    columns = list(columns)
    return [
        {"scope": r["scope"], "day": r["day"], "outcome": c, "messages": r[c]}
        for r in rows
        for c in columns
        if r[c]
    ]


def _latency_rows(rows: list[Row]) -> list[Row]:
    """One row per day and percentile; a percentile of 0 s has no place on a log scale."""
    return [
        {
            "scope": r["scope"],
            "day": r["day"],
            "percentile": p,
            "seconds": r[p],
            "latency": duration(r[p]),
        }
        for r in rows
        for p in PERCENTILE_COLOURS
        if r[p] is not None and r[p] > 0
    ]


def _failures_rows(rows: list[Row]) -> list[Row]:
    return [
        {
            "scope": r["scope"],
            "code": f"{r['status_code']} {r['name']}",
            "outcome": r["outcome"],
            "messages": r["messages"],
            "share": r["share"],
        }
        for r in rows
    ]


def _operators_rows(rows: list[Row]) -> list[Row]:
    return [
        {
            "scope": r["scope"],
            "operator": f"{r['mcc'] or '?'}/{r['mnc'] or '?'}",
            "messages": r["messages"],
            "finalised": r["finalised"],
            "delivery_rate": r["delivery_rate"],
        }
        for r in rows
        if r["delivery_rate"] is not None
    ]


# The page. Each tile's text and data-value are set again by the selector's script.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SMS delivery report, {title}</title>
<style>
body {{ font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
  background: #f4f5f7; color: #1d2329; }}
header, main, footer {{ padding: 0 2rem; }}
header {{ background: #fff; border-bottom: 1px solid #dde1e6; padding-top: 1.2rem;
  padding-bottom: 1rem; display: flex; flex-wrap: wrap; gap: 0.5rem 2rem;
  align-items: flex-end; justify-content: space-between; }}
h1 {{ font-size: 1.5rem; margin: 0 0 0.2rem; }}
h2 {{ font-size: 1.05rem; margin: 0 0 0.6rem; }}
.range {{ margin: 0; color: #4a5560; }}
label {{ color: #4a5560; }}
select {{ font: inherit; padding: 0.25rem 0.4rem; margin-left: 0.4rem; }}
#tiles {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr));
  gap: 1rem; margin: 1.2rem 0 0.4rem; }}
.tile, section {{ background: #fff; border: 1px solid #dde1e6; border-radius: 6px; }}
.tile {{ padding: 0.8rem 1rem; }}
.tile .label {{ color: #4a5560; font-size: 0.9rem; }}
.tile .value {{ font-size: 1.9rem; font-weight: 600; font-variant-numeric: tabular-nums; }}
.tile .note, .tile .change {{ font-size: 0.9rem; color: #4a5560; min-height: 1.3em; }}
.change.good {{ color: #2e7d32; }}
.change.bad {{ color: #c62828; }}
.compared {{ color: #4a5560; font-size: 0.9rem; margin: 0 0 1.2rem; }}
section {{ padding: 1rem 1.2rem; margin-bottom: 1.2rem; }}
.chart {{ width: 100%; }}
.no-data {{ color: #6b7680; font-style: italic; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
th, td {{ border-bottom: 1px solid #e5e8eb; padding: 0.3rem 1.2rem 0.3rem 0; text-align: left; }}
td.count {{ text-align: right; }}
footer {{ color: #6b7680; font-size: 0.85rem; padding-bottom: 2rem; }}
</style>
</head>
<body>
<header>
<div>
<h1>SMS delivery report</h1>
<p class="range" id="range">{range}</p>
</div>
{selector}
</header>
<main>
<div id="tiles">
{tiles}
</div>
<p class="compared" id="compared">{compared}</p>
{sections}
<section id="section-quality">
<h2>Data quality of the last run (all owners, all days)</h2>
{quality}
</section>
</main>
<footer id="facts">{facts}</footer>
<script type="application/json" id="chart-specs">{specs}</script>
<script type="application/json" id="tile-values">{tile_values}</script>
<script>{bundle}</script>
<script>
// body[data-charts] says when every chart is drawn ("ready") or one could not be ("failed");
// body[data-scope], which owner the tiles and the charts show once they all show it;
// window.charts, the Vega views by chart id.
const options = {{ mode: "vega-lite", renderer: "svg", actions: false }};
const read = (id) => JSON.parse(document.getElementById(id).textContent);
function show(views, tiles, scope) {{
  for (const tile of tiles[scope]) {{
    const element = document.getElementById(tile.id);
    element.dataset.value = tile.raw;
    for (const part of ["value", "note", "change"]) {{
      element.querySelector("." + part).textContent = tile[part];
    }}
    element.querySelector(".change").className = "change " + tile.tone;
  }}
  return Promise.all(views.map((view) => view.signal("scope", scope).runAsync()))
    .then(() => {{ document.body.dataset.scope = scope; }});
}}
Promise.resolve()
  .then(() => {{
    const specs = read("chart-specs");
    return Promise.all(Object.keys(specs).map(
      (id) => vegaEmbed("#" + id, specs[id], options).then((result) => [id, result.view])));
  }})
  .then((drawn) => {{
    window.charts = Object.fromEntries(drawn);
    const views = Object.values(window.charts);
    const tiles = read("tile-values");
    const select = document.getElementById("owner");
    select.addEventListener("change", () => show(views, tiles, select.value));
    document.body.dataset.scope = select.value;
    document.body.dataset.charts = "ready";
  }})
  .catch((error) => {{ console.error(error); document.body.dataset.charts = "failed"; }});
</script>
</body>
</html>
"""

_TILE = """<div class="tile" id="{id}" data-value="{raw}">
<div class="label">{label}</div>
<div class="value">{value}</div>
<div class="note">{note}</div>
<div class="change {tone}">{change}</div>
</div>"""


@dataclass(frozen=True)
class Tile:
    """A headline number as shown: its text, its exact value, and its change to the period before
    (`tone`: good, bad, or "" when neither or unchanged)."""

    id: str
    label: str
    value: str
    raw: float | int | None
    note: str = ""
    change: str = ""
    tone: str = ""


def tiles(now: Overview, before: Overview | None) -> list[Tile]:
    """The headline tiles of one scope: messages, delivery rate, p50 and p95, failures."""

    def change(
        value: float | None, earlier: float | None, points: bool, better: int
    ) -> dict[str, str]:
        if before is None or value is None:
            return {}
        if not before.messages:
            return {"change": "no messages before"}
        if earlier is None or (not points and earlier == 0):
            return {"change": "none before"}
        delta = value - earlier if points else (value - earlier) / earlier
        shown = f"{abs(delta) * 100:.1f} pp" if points else percent(abs(delta))
        if shown in ("0.0 pp", "0.0%"):
            return {"change": "= unchanged"}
        arrow, sign = ("▲", 1) if delta > 0 else ("▼", -1)
        tone = "" if not better else "good" if sign == better else "bad"
        return {"change": f"{arrow} {shown}", "tone": tone}

    def text(value: float | None, shown: Callable[[float], str]) -> str:
        return "n/a" if value is None else shown(value)

    was = before or Overview()
    return [
        Tile("tile-messages", "Messages", f"{now.messages:,}", now.messages,
             **change(now.messages, was.messages, False, 0)),
        Tile("tile-delivery-rate", "Delivery rate", text(now.delivery_rate, percent),
             now.delivery_rate, "delivered of finalised",
             **change(now.delivery_rate, was.delivery_rate, True, 1)),
        Tile("tile-p50", "Latency p50", text(now.p50, duration), now.p50,
             "created to first final status", **change(now.p50, was.p50, False, -1)),
        Tile("tile-p95", "Latency p95", text(now.p95, duration), now.p95,
             "created to first final status", **change(now.p95, was.p95, False, -1)),
        Tile("tile-failed", "Failed", f"{now.failed:,}", now.failed,
             "" if now.failed_share is None else f"{percent(now.failed_share)} of messages",
             **change(now.failed, was.failed, False, -1)),
    ]  # fmt: skip


def render_html(page: Page) -> bytes:
    """Return the report page. A chart without rows to draw says so and why."""
    specs: dict[str, Json] = {}
    sections = []
    for key in CHART_IDS:
        title, build, empty = CHARTS[key]
        values = page.charts.get(key, [])
        body = f'<p class="no-data">{_text(empty(page))}</p>'
        if values:
            specs[f"chart-{key}"] = _chart(values, **build())
            body = ""
        sections.append(
            f'<section id="section-{key}">\n<h2>{_text(title)}</h2>\n'
            f'<div class="chart" id="chart-{key}">{body}</div>\n</section>'
        )
    scopes = [ALL, *page.owners]
    shown = {
        s: tiles(page.overview.get(s, Overview()), None if page.previous is None else
                 page.previous.get(s, Overview()))
        for s in scopes
    }  # fmt: skip
    text = page.period.text()
    return _PAGE.format(
        title=_text(text),
        range=_text(_range(page)),
        selector=_selector(page),
        tiles="\n".join(_TILE.format(**_escaped(t)) for t in shown[ALL]),
        compared=_text(_compared(page)),
        sections="\n".join(sections),
        quality=_quality(page.quality),
        facts=_text(_facts(page)),
        specs=_script_json(specs),
        tile_values=_script_json(
            {s: [dataclasses.asdict(t) for t in ts] for s, ts in shown.items()}
        ),
        bundle=_bundle(),
    ).encode()


def _day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _range(page: Page) -> str:
    """The range as asked for and as drawn, and the time zone of its days."""
    days = page.period.days
    length = "" if days is None else f" ({days:,} day{'s' if days != 1 else ''})"
    asked = page.requested
    if asked.start is None and asked.end is None:
        how = "every day with messages"
    else:
        given = [
            f"--from {asked.start}" if asked.start else "",
            f"--to {asked.end}" if asked.end else "",
        ]
        how = "asked for " + " ".join(g for g in given if g)
    return f"{page.period.text()}{length}, {how}; local days in {page.time_zone}"


def _compared(page: Page) -> str:
    before = page.period.before()
    if before is None or before.days is None:
        return "No period to compare with: the range has no messages."
    return f"Changes against the {before.days:,} days before: {before.text()}."


def _selector(page: Page) -> str:
    more = page.owners_in_scope - len(page.owners)
    options = ['<option value="">All owners</option>']
    options += [
        f'<option value="{_text(o)}">{_text(o)} ({page.overview[o].messages:,} messages)</option>'
        for o in page.owners
    ]
    note = (
        f" (the {len(page.owners)} largest of {page.owners_in_scope:,}; --owner for any)"
        if more
        else ""
    )
    return (
        f'<div><label for="owner">Owner{_text(note)}</label>'
        f'<select id="owner">{"".join(options)}</select></div>'
    )


def _facts(page: Page) -> str:
    as_of = "no run" if page.as_of is None else f"{page.as_of:%Y-%m-%d %H:%M} UTC"
    return (
        f"Data as of {as_of}, run {page.run_id}. Every number is a named report's: convsum report"
        " overview (the tiles), outcomes, latency --by day, failures, operators and quality, with"
        " the same options."
    )


def _quality(rows: list[Row]) -> str:
    if not rows:
        return '<p class="no-data">No run is published.</p>'
    body = "\n".join(
        f"<tr><td>{_text(str(r['check']).replace('_', ' '))}</td>"
        f'<td class="count">{_number(r["count"])}</td></tr>'
        for r in rows
    )
    head = '<thead><tr><th>check</th><th class="count">count</th></tr></thead>'
    return f'<table id="quality">\n{head}\n<tbody>\n{body}\n</tbody>\n</table>'


def _number(value: int | None) -> str:
    return "NULL" if value is None else f"{value:,}"


def _escaped(tile: Tile) -> dict[str, str]:
    return {
        k: _text(orjson.dumps(v).decode() if k == "raw" else v)
        for k, v in dataclasses.asdict(tile).items()
    }


def _text(value: object) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _script_json(value: object) -> str:
    """Return `value` as JSON that is safe inside a <script> element."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    # The three characters appear only inside JSON strings, where the escapes mean the same.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def _bundle() -> str:
    """Return Vega, Vega-Lite and vega-embed as one script that defines `window.vegaEmbed`.

    vl-convert bundles them on each call, which takes about a second, hence the cache.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;")
    lowered = bundle.lower()
    if "</script" in lowered or "<!--" in lowered:
        # A newer bundle with either text would end the inline <script> early.
        msg = "the Vega bundle contains '</script' or '<!--' and cannot be inlined"
        raise RuntimeError(msg)
    return bundle


_CONFIG: Json = {
    "font": "system-ui, -apple-system, Segoe UI, sans-serif",
    "axis": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal",
             "titleColor": "#4a5560", "gridColor": "#eceff1", "domainColor": "#90a4ae"},
    "legend": {"orient": "top", "labelFontSize": 12, "title": None},
    "view": {"stroke": None},
}  # fmt: skip


def _chart(values: list[Row], *, mark: Json, encoding: Json, transform: Iterable[Json] = (),
           bars: bool = False) -> Json:  # fmt: skip
    """A Vega-Lite spec over `values` that draws the rows of the chosen scope only, as wide as
    its section; with `bars` (a bar a row), as high as the scope with the most bars needs."""
    height = 260
    if bars:
        height = BAR_HEIGHT * max(Counter(r["scope"] for r in values).values())
    return {
        "data": {"values": values},
        "params": [{"name": "scope", "value": ALL}],
        "transform": [{"filter": "datum.scope === scope"}, *transform],
        "mark": mark,
        "encoding": encoding,
        "width": "container",
        "height": height,
        "config": _CONFIG,
    }


def _colour(field: str, colours: Mapping[str, str]) -> Json:
    return {"field": field, "type": "nominal", "sort": list(colours),
            "scale": {"domain": list(colours), "range": list(colours.values())}}  # fmt: skip


# Ticks about 110 pixels apart, whatever the width.
_TICKS: Json = {"tickCount": {"expr": "ceil(width / 110)"}}
# A local day: on a time axis, labelled as weeks or months whatever the range.
_DAY: Json = {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate", "title": None,
              "axis": {**_TICKS, "labelOverlap": True}}  # fmt: skip
_DAY_TIP: Json = {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate",
                  "title": "day", "format": "%a %-d %b %Y"}  # fmt: skip


def _count(field: str, title: str) -> Json:
    return {"field": field, "type": "quantitative", "title": title, "format": ","}


def _volume() -> Json:
    return {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": _DAY,
            "y": _count("messages", "messages"),
            "color": _colour("direction", DIRECTION_COLOURS),
            "order": {"field": "rank"},
            "tooltip": [_DAY_TIP, {"field": "direction"}, _count("messages", "messages")],
        },
        "transform": [{"calculate": "datum.direction === 'mt' ? 0 : 1", "as": "rank"}],
    }


def _outcomes() -> Json:
    rank = " : ".join(f"datum.outcome === '{o}' ? {i}" for i, o in enumerate(OUTCOMES))
    return {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": _DAY,
            "y": {
                "field": "messages",
                "type": "quantitative",
                "stack": "normalize",
                "title": "share of the day's messages",
                "axis": {"format": ".0%"},
            },
            "color": _colour("outcome", OUTCOME_COLOURS),
            "order": {"field": "rank"},
            "tooltip": [
                _DAY_TIP,
                {"field": "outcome"},
                _count("messages", "messages"),
                {
                    "field": "share",
                    "type": "quantitative",
                    "format": ".1%",
                    "title": "share of the day",
                },
            ],
        },
        "transform": [
            {"calculate": f"{rank} : {len(OUTCOMES)}", "as": "rank"},
            {
                "joinaggregate": [{"op": "sum", "field": "messages", "as": "total"}],
                "groupby": ["day"],
            },
            {"calculate": "datum.messages / datum.total", "as": "share"},
        ],
    }


def _latency() -> Json:
    label = " : ".join(f"datum.value === {v} ? '{t}'" for v, t in LATENCY_TICKS.items())
    return {
        "mark": {"type": "line", "point": {"size": 18}, "tooltip": True, "strokeWidth": 1.5},
        "encoding": {
            "x": _DAY,
            "y": {
                "field": "seconds",
                "type": "quantitative",
                "scale": {"type": "log", "nice": True},
                "title": "created to first final status (log scale)",
                "axis": {
                    "values": list(LATENCY_TICKS),
                    "labelExpr": f"{label} : ''",
                    "labelOverlap": "greedy",
                },
            },
            "color": _colour("percentile", PERCENTILE_COLOURS),
            "tooltip": [_DAY_TIP, {"field": "percentile"}, {"field": "latency"}],
        },
    }


def _failures() -> Json:
    failed = {o: OUTCOME_COLOURS[o] for o in FAILED}
    return {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "y": {"field": "code", "type": "nominal", "sort": "-x", "title": None},
            "x": {**_count("messages", "messages"), "axis": _TICKS},
            "color": _colour("outcome", failed),
            "tooltip": [
                {"field": "code", "title": "status code"},
                {"field": "outcome"},
                _count("messages", "messages"),
                {
                    "field": "share",
                    "type": "quantitative",
                    "format": ".1%",
                    "title": "share of failures",
                },
            ],
        },
        "bars": True,
    }


def _operators() -> Json:
    return {
        "mark": {"type": "bar", "tooltip": True, "color": OUTCOME_COLOURS["delivered"]},
        "encoding": {
            "y": {"field": "operator", "type": "nominal", "sort": "x", "title": "mcc/mnc"},
            "x": {
                "field": "delivery_rate",
                "type": "quantitative",
                "title": "delivery rate",
                "scale": {"domain": [0, 1]},
                "axis": {**_TICKS, "format": ".0%"},
            },
            "tooltip": [
                {"field": "operator", "title": "mcc/mnc"},
                _count("messages", "mt messages"),
                _count("finalised", "finalised"),
                {
                    "field": "delivery_rate",
                    "type": "quantitative",
                    "format": ".1%",
                    "title": "delivery rate",
                },
            ],
        },
        "bars": True,
    }


def _no_messages(page: Page) -> str:
    return f"No messages from {page.period.text()} in {page.time_zone}."


# Each chart: its section title, its spec's mark and encoding, and what it says without rows.
CHARTS: dict[str, tuple[str, Callable[[], Json], Callable[[Page], str]]] = {
    "volume": ("Messages per day, by direction", _volume, _no_messages),
    "outcomes": ("Outcome per day (the latest status of each message)", _outcomes, _no_messages),
    "latency": ("Latency per day: p50, p95, p99", _latency,
                lambda page: f"No message has a final status from {page.period.text()}."),
    "failures": ("Top failure codes", _failures,
                 lambda page: f"No failed message from {page.period.text()}."),
    "operators": ("Delivery rate per operator (mt), the worst first", _operators,
                  lambda page: "No operator has enough mt messages (--min-volume)."),
}  # fmt: skip
