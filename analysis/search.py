"""The search as a whole: parameter importance, expected best objective versus budget, and
parallel coordinates of the parameters against the objective."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis._style import base_layout, color, empty_figure, wants_log
from analysis.aggregate import (
    BudgetCurve,
    Importance,
    format_value,
    is_better,
    per_trial,
    searched_parameters,
)


def plot_importance(info: Importance) -> go.Figure:
    """Horizontal bars, most important on top; the title says how they were computed."""
    if not info.params:
        return empty_figure("No parameter varies across trials with a finite objective.")
    fig = go.Figure(
        go.Bar(
            x=info.values[::-1],
            y=info.params[::-1],
            orientation="h",
            marker_color=color(0),
            text=[f"{v:.2f}" for v in info.values[::-1]],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="importance (sums to 1)", rangemode="tozero")
    return base_layout(fig, info.source, 140 + 32 * len(info.params))


class BudgetInfo(NamedTuple):
    curves: dict[str, BudgetCurve]  # "all trials" first, then one per loss
    metric: str
    mode: str


def plot_budget(info: BudgetInfo) -> go.Figure:
    """Expected best objective after n trials with its 95 % band, all trials in black."""
    curves = {k: c for k, c in info.curves.items() if len(c.n)}
    if not curves:
        return empty_figure("No trial has a finite objective.")
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        main = name == "all trials"
        line = "rgb(30,30,30)" if main else color(i - 1)
        if main or len(curves) <= 3:  # more bands than that hide each other
            band = "rgba(30,30,30,0.12)" if main else color(i - 1, 0.12)
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([curve.n, curve.n[::-1]]),
                    y=np.concatenate([curve.hi, curve.lo[::-1]]),
                    mode="lines",
                    fill="toself",
                    fillcolor=band,
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=name,
                    showlegend=False,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=curve.n,
                y=curve.mean,
                mode="lines" if len(curve.n) > 1 else "markers",
                name=f"{name} ({curve.n_trials})",
                line={"color": line, "width": 3 if main else 2},
                legendgroup=name,
                customdata=np.stack([curve.lo, curve.hi], axis=1),
                hovertemplate=f"{name}<br>n=%{{x}}<br>expected best %{{y:.4g}}"
                "<br>95%% band %{customdata[0]:.4g}–%{customdata[1]:.4g}<extra></extra>",
            )
        )
    longest = max(c.n[-1] for c in curves.values())
    fig.update_xaxes(title_text="budget: trials drawn", type="log" if longest > 100 else "linear")
    ys = np.concatenate([np.concatenate([c.lo, c.hi]) for c in curves.values()])
    better = "lower" if is_better(info.mode) else "higher"
    fig.update_yaxes(
        title_text=f"best objective ({info.metric}, {better} is better)",
        type="log" if wants_log(ys) else "linear",
    )
    fig = base_layout(fig, "expected best after n trials: bootstrap mean, 95% band shaded", 480)
    fig.update_layout(legend={"title": {"text": "trials (count)"}})
    return fig


class ParallelInfo(NamedTuple):
    dimensions: list[dict]  # label, values; tickvals and ticktext for categorical axes
    color: np.ndarray  # the objective as drawn (log10 where it spans decades)
    color_label: str
    reverse: bool  # reverse the colour scale so that the better end is bright
    n_trials: int
    color_range: tuple[float, float] | None  # (cmin, cmax); None: the data's range


def get_parallel_info(
    trials: pd.DataFrame, importance: list[str], metric: str, mode: str, max_ticks: int = 8
) -> ParallelInfo:
    """One line per trial with a finite objective, its searched parameters as axes (the most
    important first) and the objective as the last axis and the colour."""
    rows = per_trial(trials)
    rows = rows[np.isfinite(rows["objective"])]
    # Parcoords draws in row order: the best last, on top of the many poor lines.
    rows = rows.sort_values("objective", ascending=not is_better(mode)).reset_index(drop=True)
    searched = searched_parameters(rows)
    order = [p for p in importance if p in searched] + [p for p in searched if p not in importance]
    dimensions = [_dimension(rows[p], p, max_ticks) for p in order]
    reached = trials.groupby("trial_id")["steps_done"].max().reindex(rows["trial_id"])
    if reached.nunique() > 1:  # trials stopped at different steps: say where each value is from
        dimensions.append(_dimension(reached.reset_index(drop=True), "steps reached", max_ticks))
    objective = rows["objective"].to_numpy(dtype=float)
    log = wants_log(objective)
    shown = np.log10(objective) if log else objective
    label = f"log10 {metric}" if log else metric
    dimensions.append({"label": f"objective: {label}", "values": shown})
    # Colour over trials whose objective the divergence penalty does not set, so that the
    # penalty value does not squeeze every real result into one end of the scale.
    fair = shown[(rows["div_rate"] < 0.5).to_numpy()]
    span = (float(fair.min()), float(fair.max())) if fair.size else None
    return ParallelInfo(dimensions, shown, label, is_better(mode), len(rows), span)


def _dimension(values: pd.Series, name: str, max_ticks: int) -> dict:
    numeric = values.dtype.kind in "iuf"
    if not numeric or values.nunique() <= max_ticks:
        uniques = sorted(values.unique(), key=lambda v: (not numeric, v if numeric else str(v)))
        lookup = {v: i for i, v in enumerate(uniques)}
        return {
            "label": name,
            "values": values.map(lookup).to_numpy(dtype=float),
            "tickvals": list(range(len(uniques))),
            "ticktext": [format_value(v) for v in uniques],
        }
    x = values.to_numpy(dtype=float, na_value=np.nan)
    if wants_log(x, span=10):
        return {"label": f"log10 {name}", "values": np.log10(x)}
    return {"label": name, "values": x}


def plot_parallel(info: ParallelInfo) -> go.Figure:
    """Parallel coordinates; drag along an axis to select a range of trials."""
    if info.n_trials == 0:
        return empty_figure("No trial has a finite objective.")
    fig = go.Figure(
        go.Parcoords(
            dimensions=info.dimensions,
            line={
                "color": info.color,
                "colorscale": "Viridis",
                "reversescale": info.reverse,
                "showscale": True,
                "colorbar": {"title": {"text": info.color_label}},
                **(
                    {"cmin": info.color_range[0], "cmax": info.color_range[1]}
                    if info.color_range
                    else {}
                ),
            },
        )
    )
    fig = base_layout(fig, f"{info.n_trials} trials (drag on an axis to filter)", 480)
    fig.update_layout(margin={"l": 80, "r": 60, "t": 110, "b": 40})
    return fig
