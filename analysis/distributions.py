"""The distribution of the final objective per loss (and per architecture and penalty):
one point per trial over a box per value."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis._style import base_layout, empty_figure, points_box, wants_log
from analysis.aggregate import format_value, is_better, per_trial
from ganlab.results import ENDED_STATUSES

GROUPINGS = ("loss", "arch", "penalty")


class DistributionInfo(NamedTuple):
    # per trial with a finite objective: objective, groupings, penalised, stopped, steps
    trials: pd.DataFrame
    groupings: list[str]  # the columns drawn, one panel each: loss always, others if they vary
    orders: dict[str, list]  # per grouping, its values best median first
    metric: str
    mode: str
    log_y: bool


def get_distribution_info(trials: pd.DataFrame, metric: str, mode: str) -> DistributionInfo:
    """Per-trial objectives, and the groupings to split them by, values ordered best first."""
    rows = per_trial(trials)
    rows = rows[np.isfinite(rows["objective"])]
    groupings = [g for g in GROUPINGS if g == "loss" or rows[g].nunique() > 1]
    orders = {}
    for g in groupings:
        medians = rows.groupby(g)["objective"].median()
        orders[g] = list(medians.sort_values(ascending=is_better(mode)).index)
    columns = ["trial_id", "config_id", "objective", *groupings]
    # With at least half the seeds diverged, the robust median is set by the penalty value.
    penalised = (rows["div_rate"] >= 0.5).to_numpy()
    ended = trials["status"].isin(ENDED_STATUSES).groupby(trials["trial_id"]).any()
    stopped = ~ended.reindex(rows["trial_id"]).fillna(False).to_numpy(dtype=bool) & ~penalised
    steps = trials.groupby("trial_id")["steps_done"].max().reindex(rows["trial_id"]).to_numpy()
    frame = rows[columns].assign(penalised=penalised, stopped=stopped, steps=steps)
    return DistributionInfo(
        frame.reset_index(drop=True),
        groupings,
        orders,
        metric,
        mode,
        wants_log(rows["objective"]),
    )


def plot_distribution(info: DistributionInfo) -> go.Figure:
    """Side-by-side panels sharing the objective axis; boxes with every trial as a point."""
    if info.trials.empty:
        return empty_figure("No trial has a finite objective.")
    fig = make_subplots(
        rows=1,
        cols=len(info.groupings),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[f"per {g}" for g in info.groupings],
        column_widths=[max(1, len(info.orders[g])) for g in info.groupings],
    )
    apart = info.trials["penalised"] | info.trials["stopped"]
    for c, g in enumerate(info.groupings, start=1):
        for i, value in enumerate(info.orders[g]):
            here = info.trials[g] == value
            rows = info.trials[here & ~apart]
            fig.add_trace(
                points_box(
                    rows["objective"].to_numpy(),
                    i,
                    name=format_value(value),
                    marker={"size": 5, "opacity": 0.6},
                    line={"width": 1.5},
                    text=rows["trial_id"].to_numpy(),
                    showlegend=False,
                    hovertemplate=f"{g}={format_value(value)}<br>%{{text}}<br>"
                    f"{info.metric} %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=c,
            )
            _stopped_points(fig, info, info.trials[here & info.trials["stopped"]], g, value, c)
            failed = info.trials[here & info.trials["penalised"]]
            if len(failed):
                # At the penalty value, apart from the box, so that they do not stretch it.
                fig.add_trace(
                    go.Scatter(
                        x=[format_value(value)] * len(failed),
                        y=failed["objective"].to_numpy(),
                        mode="markers",
                        marker={"symbol": "x", "size": 8, "color": "crimson"},
                        text=failed["trial_id"].to_numpy(),
                        showlegend=False,
                        hovertemplate=f"{g}={format_value(value)}<br>%{{text}}<br>most seeds "
                        "diverged: counted as the worst value<extra></extra>",
                    ),
                    row=1,
                    col=c,
                )
    if info.log_y:
        fig.update_yaxes(type="log")
    better = "lower" if is_better(info.mode) else "higher"
    fig.update_yaxes(title_text=f"objective ({info.metric}, {better} is better)", row=1, col=1)
    return base_layout(fig, f"{len(info.trials)} trials", 460)


def _stopped_points(
    fig: go.Figure, info: DistributionInfo, rows: pd.DataFrame, g: str, value: object, col: int
) -> None:
    """Trials stopped early (ASHA) beside their group's box: their objective is from the step
    they stopped at, not comparable with the box's."""
    if rows.empty:
        return
    fig.add_trace(
        go.Scatter(
            x=[format_value(value)] * len(rows),
            y=rows["objective"].to_numpy(),
            mode="markers",
            marker={"symbol": "diamond-open", "size": 8, "color": "#777"},
            customdata=np.stack([rows["trial_id"], rows["steps"]], axis=1),
            showlegend=False,
            hovertemplate=f"{g}={format_value(value)}<br>%{{customdata[0]}}<br>stopped early at "
            f"step %{{customdata[1]:,}}: {info.metric} %{{y:.4g}} there<extra></extra>",
        ),
        row=1,
        col=col,
    )
