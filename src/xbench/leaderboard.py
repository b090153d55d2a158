"""Static leaderboard: self-contained HTML (no CDN, opens from file://) built from exported records; no torch."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from xbench import __version__

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
td.text{text-align:left}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
input{margin:0 0 1em 0;padding:4px;width:24em}
.meta{color:#666;font-size:12px}
"""

# Sorting: numbers numerically (blank last), text alphabetically; the filter matches any cell text.
_SCRIPT = """
document.querySelectorAll('table.cells').forEach(function(table){
  var headers=table.querySelectorAll('th');
  headers.forEach(function(th,col){th.addEventListener('click',function(){
    var asc=!th.classList.contains('sorted-asc');
    headers.forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
    th.classList.add(asc?'sorted-asc':'sorted-desc');
    var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.value, y=b.cells[col].dataset.value;
      var nx=parseFloat(x), ny=parseFloat(y);
      if(!isNaN(nx)||!isNaN(ny)){ if(isNaN(nx)) return 1; if(isNaN(ny)) return -1; return asc?nx-ny:ny-nx; }
      return asc?String(x).localeCompare(y):String(y).localeCompare(x);
    });
    rows.forEach(function(r){body.appendChild(r)});
  })});
});
document.querySelectorAll('input.filter').forEach(function(input){
  input.addEventListener('input',function(){
    var needle=input.value.toLowerCase();
    document.querySelectorAll('table.cells tbody tr').forEach(function(row){
      row.style.display=row.textContent.toLowerCase().indexOf(needle)>=0?'':'none';
    });
  });
});
"""

_FIXED_COLUMNS = [
    ("model", "model", "text"),
    ("pruning_method", "pruning", "text"),
    ("compression_rate", "CR (scope)", "num"),
    ("compression_rate_model", "CR (model)", "num"),
    ("explainer", "explainer", "text"),
    ("accuracy", "accuracy ↑", "num"),
]
_COST_COLUMNS = [
    ("sparsity", "sparsity (model)", "num"),
    ("params_nonzero", "params nonzero", "num"),
    ("flops", "FLOPs dense", "num"),
    ("latency_ms_p50", "latency p50 ms", "num"),
    ("throughput", "throughput img/s", "num"),
]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def suite_section(suite: str, records: list[dict[str, Any]]) -> str:
    metric_names: list[str] = []
    directions: dict[str, str] = {}
    for record in records:
        for name, direction in record.get("metric_directions", {}).items():
            if name not in directions:
                metric_names.append(name)
                directions[name] = direction
    columns = (
        _FIXED_COLUMNS
        + [(name, f"{name} {'↑' if directions[name] == 'higher' else '↓'}", "num") for name in metric_names]
        + _COST_COLUMNS
    )
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in columns)
    rows = []
    for record in records:
        cells = []
        for key, _, kind in columns:
            value = record.get(key)
            shown = html.escape(_format(value))
            css = " class='text'" if kind == "text" else ""
            cells.append(f"<td{css} data-value='{html.escape(str(value if value is not None else ''))}'>{shown}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    devices = sorted({str(r.get("device")) for r in records})
    return (
        f"<section id='{html.escape(_slug(suite))}'><h2>Suite {html.escape(suite)}</h2>"
        f"<p class='meta'>{len(records)} cells · device: {html.escape(', '.join(devices))} · built "
        f"{time.strftime('%Y-%m-%d %H:%M')} by xbench {__version__}. ↑ higher is better, ↓ lower is better. "
        "CR (scope) is the requested compression rate over the pruned weights, CR (model) the measured one over all "
        "parameters; FLOPs are dense (zeros counted) per image.</p>"
        f"<table class='cells'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def index_page(suites: dict[str, list[dict[str, Any]]]) -> str:
    items = []
    for suite, records in sorted(suites.items()):
        models = len({r["model"] for r in records})
        newest = max((r.get("start_time") or 0 for r in records), default=0)
        date = time.strftime("%Y-%m-%d", time.gmtime(newest / 1000)) if newest else ""
        devices = ", ".join(sorted({str(r.get("device")) for r in records}))
        items.append(
            f"<tr><td class='text'><a href='#{html.escape(_slug(suite))}'>{html.escape(suite)}</a></td>"
            f"<td>{html.escape(date)}</td><td class='text'>{html.escape(devices)}</td><td>{models}</td>"
            f"<td>{len(records)}</td></tr>"
        )
    body = (
        "<h1>xbench leaderboard</h1><p>How does pruning a vision model change how explainable it is?</p>"
        "<table><thead><tr><th>suite</th><th>date</th><th>device</th><th>models</th><th>cells</th></tr></thead>"
        f"<tbody>{''.join(items)}</tbody></table>"
        "<input class='filter' placeholder='filter rows…'>"
        + "".join(suite_section(suite, records) for suite, records in sorted(suites.items()))
    )
    return _page("xbench leaderboard", body)


def _slug(suite: str) -> str:
    return "suite-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in suite)


def build(suites: dict[str, list[dict[str, Any]]], out: Path) -> Path:
    """Write index.html (every suite, self-contained) and each suite's records as JSON; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    for suite, records in suites.items():
        (out / f"{_slug(suite)}.json").write_text(json.dumps(records, indent=1, default=str))
    index = out / "index.html"
    index.write_text(index_page(suites))
    return index
