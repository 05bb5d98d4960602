"""Shared look of the figures: palette, layout defaults, axis scales and configuration labels."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from analysis.aggregate import format_value

PALETTE = qualitative.Plotly + qualitative.D3
TEMPLATE = "plotly_white"


def color(i: int, alpha: float | None = None) -> str:
    """The i-th palette colour, as rgba when `alpha` is given (for IQR bands)."""
    hex_color = PALETTE[i % len(PALETTE)].lstrip("#")
    r, g, b = (int(hex_color[k : k + 2], 16) for k in (0, 2, 4))
    return f"rgb({r},{g},{b})" if alpha is None else f"rgba({r},{g},{b},{alpha})"


def points_box(y, i: int, **extra) -> go.Box:
    """Every point over a transparent box of its group's quartiles, in the `i`-th colour."""
    style = {
        "boxpoints": "all",
        "jitter": 0.5,
        "pointpos": 0,
        "marker": {"size": 4, "opacity": 0.6},
        "marker_color": color(i),
        "fillcolor": "rgba(0,0,0,0)",
    }
    return go.Box(y=y, **{**style, **extra})


def wants_log(values: np.ndarray | pd.Series, span: float = 100.0) -> bool:
    """A log axis where the values are positive and spread over more than `span`×."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return bool(x.size and x.min() > 0 and x.max() / x.min() > span)


def budget_text(row: pd.Series) -> str:
    """How far a configuration trained and how its seeds ended: `1,500 steps: 3 pruned`."""
    return f"{int(row['at_step']):,} steps: {row['statuses']}"


def config_label(row: pd.Series, params: list[str], limit: int = 3) -> str:
    """`#rank p=v, ... · steps: statuses` with the first `limit` parameters (the most important
    first)."""
    shown = ", ".join(f"{p}={format_value(row[p])}" for p in params[:limit])
    return f"#{int(row['rank'])} {shown} · {budget_text(row)}".replace("  ", " ")


def config_hover(row: pd.Series, params: list[str], metric: str) -> str:
    """Every searched parameter, the budget and the objective, for hover text."""
    lines = [f"config {row.name} (rank {int(row['rank'])})"]
    lines += [f"{p}: {format_value(row[p])}" for p in params]
    lines.append(budget_text(row))
    lines.append(f"objective ({metric}) at step {int(row['at_step']):,}: "
                 f"{format_value(row['objective'])}")  # fmt: skip
    lines.append(f"diverged: {format_value(100 * row['div_rate'])} % of seeds")
    return "<br>".join(lines)


def base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        font={"size": 12},
    )
    return fig


def empty_figure(message: str, height: int = 200) -> go.Figure:
    """A figure that says why there is nothing to draw, so every section still renders."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return base_layout(fig, "", height)
