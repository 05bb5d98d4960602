"""The report's HTML: the page around the sections, figures as divs, tables, the stylesheet.

plotly.js is inlined once in the page's head and every figure is a div that uses it, so the
report opens offline with no CDN. Tables of class `sortable` sort on a click of their header,
by a few lines of script inlined beside plotly.js.
"""

import html
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis.aggregate import BLANK, format_value

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class Section(NamedTuple):
    id: str
    title: str
    how: str  # one or two plain sentences on how to read it
    body: str  # HTML


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a div and script that use the page's single plotly.js."""
    return pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_height=f"{fig.layout.height or 450}px",
    )


def percent(share: float) -> str:
    return BLANK if share != share else f"{100 * share:.1f} %"


def key_values(title: str, pairs: list[tuple[str, str]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs
    )
    return f'<table class="kv"><caption>{html.escape(title)}</caption>{rows}</table>'


def table(
    head: Sequence[str],
    rows: Sequence[Sequence[object]],
    css: str = "best sortable",
    row_titles: Sequence[str] | None = None,
    cell_classes: Sequence[str] | None = None,
) -> str:
    """A table; each cell shown with `format_value` (or as the text of a (text, value) pair)
    and, where it is a number, sorted by its value (`data-sort`). `cell_classes` names each
    column for tests and styles."""
    e = html.escape
    classes = cell_classes or [""] * len(head)
    top = "".join(f'<th class="{e(c)}">{e(h)}</th>' for h, c in zip(head, classes, strict=True))
    body = []
    for i, row in enumerate(rows):
        cells = "".join(_cell(v, c) for v, c in zip(row, classes, strict=True))
        title = f' title="{e(row_titles[i])}"' if row_titles else ""
        body.append(f"<tr{title}>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="{e(css)}"><thead><tr>{top}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cell(value: object, css: str) -> str:
    """A value, or a (text, value) pair: shown as the text, sorted by the value."""
    shown, value = value if isinstance(value, tuple) else (None, value)
    if shown is None:
        shown = value if isinstance(value, str) else format_value(value)
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    key = f' data-sort="{float(value)!r}"' if number and value == value else ""
    return f'<td class="{html.escape(css)}"{key}>{html.escape(shown)}</td>'


def render_page(title: str, header: str, sections: list[Section]) -> str:
    """The whole page: plotly.js once in the head, a contents list, then each section."""
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="how">{html.escape(s.how)}</p>' if s.how else "")
        + s.body
        + "</section>"
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style>"
        # Inline plotly.js once; every figure below calls it (no CDN: the report works offline).
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f"<script>{SORT_JS}</script></head>"
        f"<body><header><h1>{html.escape(title)}</h1>{header}</header>"
        f"<nav><ol>{toc}</ol></nav><main>{body}</main></body></html>\n"
    )


# A click on a header of a `sortable` table sorts its rows by that column (numbers by their
# data-sort value, text as text), a second click the other way.
SORT_JS = """
document.addEventListener('click', function (event) {
  var th = event.target.closest('table.sortable th');
  if (!th) return;
  var table = th.closest('table'), body = table.tBodies[0];
  var column = Array.prototype.indexOf.call(th.parentNode.children, th);
  var down = th.dataset.order !== 'asc';
  th.dataset.order = down ? 'asc' : 'desc';
  var key = function (row) {
    var cell = row.children[column];
    return cell.dataset.sort !== undefined ? parseFloat(cell.dataset.sort) : cell.textContent;
  };
  Array.from(body.rows).sort(function (a, b) {
    var x = key(a), y = key(b);
    var order = typeof x === 'number' && typeof y === 'number' ? x - y
      : String(x).localeCompare(String(y));
    return down ? order : -order;
  }).forEach(function (row) { body.appendChild(row); });
});
"""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; line-height: 1.45; }
header h1 { font-size: 1.6em; margin: 24px 0 4px; }
header p { color: #555; margin: 0 0 12px; }
nav ol { columns: 2; margin: 0 0 16px; padding-left: 20px; }
section { border-top: 1px solid #ddd; padding-top: 8px; margin-top: 24px; }
h2 { font-size: 1.3em; margin: 8px 0 4px; }
h3 { font-size: 1.05em; margin: 16px 0 4px; }
p.how { color: #444; max-width: 80ch; margin: 0 0 8px; }
p.note { color: #666; font-style: italic; }
p.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 8px 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 24px; }
table { border-collapse: collapse; font-size: 0.9em; }
table caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.kv th { text-align: left; color: #555; font-weight: normal; padding: 2px 12px 2px 0;
              vertical-align: top; }
table.kv td { max-width: 60ch; }
div.scroll { overflow-x: auto; }
table.best { margin-top: 4px; white-space: nowrap; font-size: 0.85em; }
table.best th, table.best td { border-bottom: 1px solid #eee; padding: 3px 7px;
                               text-align: right; }
table.best thead th { border-bottom: 2px solid #ccc; }
table.sortable th { cursor: pointer; }
.sample-row { margin: 12px 0; }
.sample-row .detail { color: #666; font-size: 0.85em; margin: 0 0 4px; }
.grids { display: flex; flex-wrap: wrap; gap: 12px; }
figure.grid { margin: 0; text-align: center; font-size: 0.8em; color: #555; }
img.sample-grid { image-rendering: pixelated; display: block; }
"""
