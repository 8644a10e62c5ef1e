"""Render a run's report tables as one self-contained HTML page that works offline.

The charts are Vega-Lite specs drawn by Vega's SVG renderer. The library comes from PyPI in
vl-convert-python (maintained by the Vega project): `vl_convert.javascript_bundle()` is Vega,
Vega-Lite and vega-embed in one script of about 0.9 MB, the same bytes on every call of a given
version, and the page inlines it. Plotly (`plotly.offline.get_plotlyjs()`) would be 4.8 MB for the
same bars and lines. The specs are small plain JSON written here, so Altair (which would add its
schema machinery and a `$schema` URL to every spec) is not needed.

The page loads nothing: its Content-Security-Policy allows no source but the inline scripts and
styles (and `eval`, with which Vega compiles its expressions). Text from the data is escaped for
HTML, and the specs are JSON with `<`, `>` and `&` written as `\\u003c`, `\\u003e` and
`\\u0026`, so no value can close a tag. The same inputs give the same bytes: fixed ids, sorted
keys, no clock and no random names.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa
import vl_convert

Json = dict[str, Any]
Row = dict[str, Any]

FACTS = ("as_of", "time_zone", "data_from", "data_to", "run_id", "messages")
# The delivery outcomes in their column order, each with its colour: green for delivered, reds
# for refusals and errors, greys for what has no final answer yet.
OUTCOME_COLOURS = {
    "delivered": "#2ca02c",
    "expired": "#ff7f0e",
    "canceled": "#8c8c8c",
    "other_final": "#9467bd",
    "rejected": "#d62728",
    "error": "#8c564b",
    "pending": "#1f77b4",
    "no_status": "#c7c7c7",
}
OUTCOMES = tuple(OUTCOME_COLOURS)
PERCENTILES = ("p50", "p95", "p99")
NO_DATA = '<p class="no-data">no data</p>'

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>convsum report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
dl#facts {{ display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }}
dt {{ font-weight: bold; }}
dd {{ margin: 0; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
td.count {{ text-align: right; }}
.no-data {{ color: #888; font-style: italic; }}
</style>
</head>
<body>
<h1>convsum report</h1>
<dl id="facts">
{facts}
</dl>
{sections}
<section id="section-quality">
<h2>Data quality</h2>
{quality}
</section>
<script type="application/json" id="chart-specs">{specs}</script>
<script>{bundle}</script>
<script>
// body[data-charts] says when every chart is drawn ("ready") or one could not be ("failed").
const options = {{ mode: "vega-lite", renderer: "svg", actions: false }};
Promise.resolve()
  .then(() => {{
    const specs = JSON.parse(document.getElementById("chart-specs").textContent);
    return Promise.all(Object.keys(specs).map((id) => vegaEmbed("#" + id, specs[id], options)));
  }})
  .then(() => {{ document.body.dataset.charts = "ready"; }})
  .catch((error) => {{ console.error(error); document.body.dataset.charts = "failed"; }});
</script>
</body>
</html>
"""


def render_html(facts: Mapping[str, str], data: Mapping[str, pa.Table]) -> bytes:
    """Return the report page: the facts, one chart per table of `data`, and the quality table.

    A table that is missing, or has no rows (or only nulls) to draw, shows "no data" in its
    section.
    """
    specs: dict[str, Json] = {}
    sections = []
    for key, (title, build) in CHARTS.items():
        table = data.get(key)
        spec = build(table) if table is not None and table.num_rows > 0 else None
        body = NO_DATA
        if spec is not None and spec["data"]["values"]:
            specs[f"chart-{key}"] = spec
            body = ""
        sections.append(
            f'<section id="section-{key}">\n<h2>{title}</h2>\n'
            f'<div class="chart" id="chart-{key}">{body}</div>\n</section>'
        )
    page = _PAGE.format(
        facts=_facts(facts),
        sections="\n".join(sections),
        quality=_quality(data.get("quality")),
        specs=_script_json(specs),
        bundle=_bundle(),
    )
    return page.encode()


def _facts(facts: Mapping[str, str]) -> str:
    keys = [k for k in FACTS if k in facts] + sorted(k for k in facts if k not in FACTS)
    return "\n".join(f"<dt>{_text(k)}</dt><dd>{_text(facts[k])}</dd>" for k in keys)


def _quality(table: pa.Table | None) -> str:
    if table is None or table.num_rows == 0:
        return NO_DATA
    rows = "\n".join(
        f'<tr><td>{_text(r["check"])}</td><td class="count">{_text(r["count"])}</td></tr>'
        for r in table.select(["check", "count"]).to_pylist()
    )
    head = "<thead><tr><th>check</th><th>count</th></tr></thead>"
    return f'<table id="quality">\n{head}\n<tbody>\n{rows}\n</tbody>\n</table>'


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
    bundle = vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;")
    lowered = bundle.lower()
    if "</script" in lowered or "<!--" in lowered:
        # A newer bundle with either text would end the inline <script> early.
        msg = "the Vega bundle contains '</script' or '<!--' and cannot be inlined"
        raise RuntimeError(msg)
    return bundle


def _spec(
    values: list[Row],
    *,
    mark: Json,
    x: Json,
    y: Json,
    series: str | None = None,
    order: Sequence[str] = (),
    colours: Sequence[str] = (),
) -> Json:
    """Return a Vega-Lite spec; with `series`, one colour per series, stacked for bars."""
    encoding: Json = {"x": x, "y": y}
    if series is not None:
        scale: Json = {"domain": list(order)}
        if colours:
            scale["range"] = list(colours)
        encoding["color"] = {
            "field": series,
            "type": "nominal",
            "sort": list(order),
            "scale": scale,
        }
    return {
        "data": {"values": values},
        "mark": {**mark, "tooltip": {"content": "data"}},
        "encoding": encoding,
        "width": 720,
        "height": 240,
    }


def _day() -> Json:
    return {"field": "day", "type": "ordinal", "title": "day"}


def _count(field: str, title: str) -> Json:
    return {"field": field, "type": "quantitative", "title": title}


def _category(field: str, title: str) -> Json:
    # sort None keeps the table's row order.
    return {"field": field, "type": "nominal", "sort": None, "title": title}


def _long(table: pa.Table, columns: Iterable[str], name: str, value: str) -> list[Row]:
    """Return one row per day and column of `columns`, in their order, leaving out nulls."""
    columns = list(columns)
    return [
        {"day": record["day"], name: column, value: record[column]}
        for record in table.select(["day", *columns]).to_pylist()
        for column in columns
        if record[column] is not None
    ]


def _volume(table: pa.Table) -> Json:
    values = [
        r
        for r in table.select(["day", "direction", "messages"]).to_pylist()
        if r["messages"] is not None
    ]
    return _spec(
        values,
        mark={"type": "bar"},
        x=_day(),
        y=_count("messages", "messages"),
        series="direction",
        order=sorted({r["direction"] for r in values}, key=str),
    )


def _outcomes(table: pa.Table) -> Json:
    return _spec(
        _long(table, OUTCOMES, "outcome", "messages"),
        mark={"type": "bar"},
        x=_day(),
        y=_count("messages", "messages"),
        series="outcome",
        order=OUTCOMES,
        colours=tuple(OUTCOME_COLOURS.values()),
    )


def _latency(table: pa.Table) -> Json:
    return _spec(
        _long(table, PERCENTILES, "percentile", "seconds"),
        mark={"type": "line", "point": True},
        x=_day(),
        y=_count("seconds", "seconds"),
        series="percentile",
        order=PERCENTILES,
    )


def _failures(table: pa.Table) -> Json:
    values = [
        {"code": str(r["status_code"]), "messages": r["messages"]}
        for r in table.select(["status_code", "messages"]).to_pylist()
        if r["messages"] is not None
    ]
    return _spec(
        values,
        mark={"type": "bar"},
        x=_category("code", "status code"),
        y=_count("messages", "messages"),
    )


def _operators(table: pa.Table) -> Json:
    values = [
        {"operator": f"{r['mcc']}/{r['mnc']}", **r}
        for r in table.select(["mcc", "mnc", "messages", "delivery_rate"]).to_pylist()
        if r["delivery_rate"] is not None
    ]
    rate = {**_count("delivery_rate", "delivery rate"), "axis": {"format": ".0%"}}
    return _spec(values, mark={"type": "bar"}, x=_category("operator", "mcc/mnc"), y=rate)


# Each chart: its section title and the function that builds its spec from its table.
CHARTS: dict[str, tuple[str, Callable[[pa.Table], Json]]] = {
    "volume": ("Daily volume by direction", _volume),
    "outcomes": ("Delivery outcome by day", _outcomes),
    "latency": ("Latency percentiles", _latency),
    "failures": ("Top failure codes", _failures),
    "operators": ("Operators", _operators),
}
