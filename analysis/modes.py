"""Mode coverage and sample quality: modes captured and high-quality share over the two most
important parameters and per loss, and precision against recall per configuration."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis._style import (
    base_layout,
    color,
    config_hover,
    config_label,
    empty_figure,
    points_box,
)
from analysis.aggregate import NO_METRICS, format_value, parameter_bins, searched_parameters

MODE_METRICS = {"modes": "modes captured", "hq": "high-quality share"}


def mode_metrics(trials: pd.DataFrame) -> list[str]:
    """The mode metrics the table defines (2-D mixtures and digit-like data), else none."""
    return [m for m in MODE_METRICS if trials[f"final_{m}"].notna().any()]


def heatmap_axes(trials: pd.DataFrame, importance: list[str]) -> tuple[str, str | None]:
    """The two most important searched parameters (x, y); loss or nothing to fill in."""
    searched = searched_parameters(trials)
    picked = [p for p in importance if p in searched][:2]
    for extra in ("loss", *searched):
        if len(picked) < 2 and extra not in picked and extra in searched:
            picked.append(extra)
    if not picked:
        return "loss", None
    return picked[0], (picked[1] if len(picked) > 1 else None)


class ModeHeatmapInfo(NamedTuple):
    x: str
    y: str | None  # None: a single row
    x_labels: list[str]
    y_labels: list[str]
    values: dict[str, np.ndarray]  # metric -> (len(y_labels), len(x_labels)) mean, NaN if empty
    seeds: np.ndarray  # seeds averaged per cell


def get_mode_heatmap_info(
    trials: pd.DataFrame, importance: list[str], max_bins: int = 6
) -> ModeHeatmapInfo | None:
    """Mean final value of each mode metric over the seeds that ran and did not diverge, in
    each cell of the two most important parameters (binned where continuous). None where the
    dataset defines no modes."""
    metrics = mode_metrics(trials)
    if not metrics:
        return None
    x, y = heatmap_axes(trials, importance)
    rows = trials[~trials["status"].isin(NO_METRICS)].reset_index(drop=True)
    x_codes, x_labels = parameter_bins(rows[x], max_bins)
    if y is None:
        y_codes, y_labels = np.zeros(len(rows), dtype=int), ["all"]
    else:
        y_codes, y_labels = parameter_bins(rows[y], max_bins)
    known = (x_codes >= 0) & (y_codes >= 0)
    cell = y_codes[known] * len(x_labels) + x_codes[known]
    size = len(x_labels) * len(y_labels)
    seeds = np.bincount(cell, minlength=size)
    values = {}
    for m in metrics:
        v = rows[f"final_{m}"].to_numpy(dtype=float)[known]
        finite = np.isfinite(v)
        total = np.bincount(cell[finite], weights=v[finite], minlength=size)
        count = np.bincount(cell[finite], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            values[m] = (total / count).reshape(len(y_labels), len(x_labels))
    return ModeHeatmapInfo(
        x, y, x_labels, y_labels, values, seeds.reshape(len(y_labels), len(x_labels))
    )


def plot_mode_heatmap(info: ModeHeatmapInfo | None) -> go.Figure:
    """One heatmap per mode metric, side by side, each cell labelled with its value."""
    if info is None:
        return empty_figure("This dataset defines no modes.")
    names = list(info.values)
    fig = make_subplots(
        rows=1,
        cols=len(names),
        horizontal_spacing=0.1,
        shared_yaxes=True,
        subplot_titles=[MODE_METRICS[m] for m in names],
    )
    for c, m in enumerate(names, start=1):
        right = fig.get_subplot(1, c).xaxis.domain[1]
        z = info.values[m]
        text = [[format_value(v) if np.isfinite(v) else "" for v in row] for row in z]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=info.x_labels,
                y=info.y_labels,
                text=text,
                texttemplate="%{text}",
                colorscale="Viridis",
                xgap=2,
                ygap=2,
                colorbar={"x": right + 0.005, "xanchor": "left", "len": 0.9, "thickness": 12},
                hovertemplate=f"{info.x} %{{x}}<br>{info.y or ''} %{{y}}<br>{m} %{{z:.3g}}"
                "<extra></extra>",
            ),
            row=1,
            col=c,
        )
        fig.update_xaxes(title_text=info.x, type="category", row=1, col=c)
        fig.update_yaxes(type="category", row=1, col=c)
    fig.update_yaxes(title_text=info.y or "", row=1, col=1)
    return base_layout(fig, "mean over seeds that did not diverge", 160 + 42 * len(info.y_labels))


class ModesPerLossInfo(NamedTuple):
    seeds: pd.DataFrame  # one row per seed that ran and did not diverge: loss, final_<m>
    metrics: list[str]
    order: list[str]  # losses


def get_modes_per_loss_info(trials: pd.DataFrame) -> ModesPerLossInfo | None:
    """Final mode metrics of every seed that ran and did not diverge, by loss."""
    metrics = mode_metrics(trials)
    if not metrics:
        return None
    rows = trials[~trials["status"].isin(NO_METRICS)]
    columns = ["trial_id", "seed", "loss", *(f"final_{m}" for m in metrics)]
    return ModesPerLossInfo(
        rows[columns].reset_index(drop=True), metrics, sorted(rows["loss"].unique())
    )


def plot_modes_per_loss(info: ModesPerLossInfo | None) -> go.Figure:
    """A box per loss for each mode metric, every seed as a point."""
    if info is None:
        return empty_figure("This dataset defines no modes.")
    fig = make_subplots(
        rows=1,
        cols=len(info.metrics),
        horizontal_spacing=0.08,
        subplot_titles=[MODE_METRICS[m] for m in info.metrics],
    )
    for c, m in enumerate(info.metrics, start=1):
        for i, loss in enumerate(info.order):
            rows = info.seeds[info.seeds["loss"] == loss]
            fig.add_trace(
                points_box(rows[f"final_{m}"].to_numpy(), i, name=loss, showlegend=False),
                row=1,
                col=c,
            )
    return base_layout(fig, "per seed, by loss", 420)


class PrecisionRecallInfo(NamedTuple):
    points: pd.DataFrame  # per configuration: loss, precision, recall (medians), label, hover


def get_precision_recall_info(
    stats: pd.DataFrame, params: list[str], metric: str
) -> PrecisionRecallInfo | None:
    """Median final precision and recall over seeds, per configuration; None if undefined."""
    if "precision_median" not in stats or "recall_median" not in stats:
        return None
    points = stats.dropna(subset=["precision_median", "recall_median"])
    points = points.assign(
        label=[config_label(row, params) for _, row in points.iterrows()],
        hover=[config_hover(row, params, metric) for _, row in points.iterrows()],
    )
    columns = ["rank", "loss", "precision_median", "recall_median", "label", "hover"]
    return PrecisionRecallInfo(points[columns])


def plot_precision_recall(info: PrecisionRecallInfo | None) -> go.Figure:
    """Precision (quality) against recall (diversity), a colour per loss."""
    if info is None or info.points.empty:
        return empty_figure("Precision and recall were not recorded.")
    fig = go.Figure()
    for i, (loss, rows) in enumerate(info.points.groupby("loss", sort=True)):
        fig.add_trace(
            go.Scatter(
                x=rows["recall_median"].to_numpy(),
                y=rows["precision_median"].to_numpy(),
                mode="markers",
                name=str(loss),
                text=rows["hover"].to_numpy(),
                marker={
                    "color": color(i),
                    "size": 7,
                    "opacity": 0.7,
                    "line": {"width": 0.5, "color": "white"},
                },
                hovertemplate="%{text}<br>recall %{x:.3f}<br>precision %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="recall (median over seeds)", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="precision (median over seeds)", range=[-0.02, 1.02])
    fig = base_layout(fig, f"{len(info.points)} configurations", 480)
    fig.update_layout(legend={"title": {"text": "loss"}})
    return fig
