"""Divergence rate over loss × learning rate: the share of seeds that diverged in each cell."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis._style import base_layout, empty_figure
from analysis.aggregate import parameter_bins
from ganlab.results import JUDGED_STATUSES


class DivergenceInfo(NamedTuple):
    rate: pd.DataFrame  # index: loss, columns: learning-rate bins; share of seeds diverged
    seeds: pd.DataFrame  # same shape: seeds that ran in the cell (status other than error)
    lr: str  # the learning-rate column on the x axis


def learning_rate_column(trials: pd.DataFrame) -> str:
    """`lr_d` or `lr_g`, whichever takes more distinct values (divergence usually starts in D,
    so `lr_d` on a tie)."""
    return "lr_g" if trials["lr_g"].nunique() > trials["lr_d"].nunique() else "lr_d"


def get_divergence_info(
    trials: pd.DataFrame, lr: str | None = None, max_bins: int = 8
) -> DivergenceInfo:
    """Diverged seeds / judged seeds (`results.JUDGED_STATUSES`: pruned ones left out), per
    loss and learning-rate bin (log-spaced quantile bins where the sweep sampled many learning
    rates)."""
    lr = lr or learning_rate_column(trials)
    ran = trials[trials["status"].isin(JUDGED_STATUSES)].reset_index(drop=True)
    codes, labels = parameter_bins(ran[lr], max_bins)
    known = codes >= 0  # a missing learning rate has no bin
    frame = pd.DataFrame(
        {
            "loss": ran["loss"].to_numpy()[known],
            "bin": np.asarray(labels, dtype=object)[codes[known]],
            "diverged": (ran["status"] == "diverged").to_numpy()[known],
        }
    )
    grouped = frame.groupby(["loss", "bin"])["diverged"]
    rate = grouped.mean().unstack("bin").reindex(columns=labels)
    seeds = grouped.size().unstack("bin").reindex(columns=labels).fillna(0).astype(int)
    return DivergenceInfo(rate, seeds, lr)


def plot_divergence(info: DivergenceInfo) -> go.Figure:
    """Heatmap from white (no seed diverged) to red (all did), each cell labelled with its
    rate and seed count; blank cells had no seeds."""
    if info.rate.empty:
        return empty_figure("No seed ran.")
    text = [
        [f"{100 * r:.0f}%<br>n={n}" if n else "" for r, n in zip(rr, nn, strict=True)]
        for rr, nn in zip(info.rate.to_numpy(), info.seeds.to_numpy(), strict=True)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=info.rate.to_numpy(),
            x=list(info.rate.columns),
            y=list(info.rate.index),
            zmin=0,
            zmax=1,
            colorscale="Reds",
            text=text,
            texttemplate="%{text}",
            colorbar={"title": {"text": "diverged"}, "tickformat": ".0%"},
            hovertemplate="loss %{y}<br>" + info.lr + " %{x}<br>diverged %{z:.1%}<extra></extra>",
            xgap=2,
            ygap=2,
        )
    )
    fig.update_xaxes(title_text=info.lr, type="category")
    fig.update_yaxes(title_text="loss", type="category")
    return base_layout(fig, "share of seeds diverged", 120 + 45 * len(info.rate.index))
