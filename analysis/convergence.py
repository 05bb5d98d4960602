"""Convergence curves: the objective metric and the losses against step, median and IQR band
over seeds, one line per configuration. D's and G's losses are drawn in a column per loss
function: their values mean different things under each (a hinge loss is not a minimax one)."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis._style import base_layout, color, config_hover, config_label, empty_figure, wants_log
from analysis.aggregate import QUANTILES


class ConvergenceInfo(NamedTuple):
    curves: pd.DataFrame  # config_id, signal, step, q25, median, q75 (long form)
    configs: pd.DataFrame  # the configurations drawn, best first: rank, label, hover, group
    signals: list[str]  # one panel each, top to bottom
    n_configs: int  # configurations in the run (the figure may show fewer)
    metric: str = ""  # the objective's metric: one panel over every loss
    losses: tuple[str, ...] = ()  # the loss functions of the drawn configurations, a column each


def select_configs(
    stats: pd.DataFrame, available: set[str], best: int, worst: int
) -> pd.DataFrame:
    """The `best` top-ranked configurations, then the `worst` bottom-ranked others.

    The best are always kept whatever the cap; the worst show what failure looks like.
    """
    ranked = stats[stats.index.isin(available)]
    top = ranked.head(best).assign(group="best")
    rest = ranked.iloc[len(top) :]
    bottom = rest.tail(worst).assign(group="worst") if worst > 0 else rest.iloc[:0]
    return pd.concat([top, bottom])


def thin_steps(steps: np.ndarray, max_points: int) -> np.ndarray:
    """At most `max_points` of the sorted unique `steps`, evenly spread, first and last kept."""
    steps = np.unique(steps)
    if len(steps) <= max_points:
        return steps
    keep = np.unique(np.round(np.linspace(0, len(steps) - 1, max_points)).astype(int))
    return steps[keep]


def get_convergence_info(
    metrics: pd.DataFrame,
    stats: pd.DataFrame,
    params: list[str],
    metric: str,
    signals: tuple[str, ...] = ("loss_d", "loss_g"),
    best: int = 8,
    worst: int = 3,
    max_points: int = 100,
) -> ConvergenceInfo:
    """Median and quartiles over seeds, per step, of `metric` and `signals` for the best
    `best` and worst `worst` configurations (by rank in `stats`), at most `max_points` steps
    per line. NaNs (seeds after divergence) are left out of the quantiles."""
    panels = [s for s in (metric, *signals) if s in metrics.columns]
    chosen = select_configs(stats, set(metrics["config_id"].unique()), best, worst)
    rows = metrics[metrics["config_id"].isin(chosen.index)]
    kept = []
    for _, group in rows.groupby("config_id", sort=False):
        steps = thin_steps(group["step"].to_numpy(), max_points)
        kept.append(group[group["step"].isin(steps)])
    rows = pd.concat(kept) if kept else rows
    grouped = rows.groupby(["config_id", "step"])[panels]
    parts = [
        grouped.quantile(level)
        .melt(var_name="signal", value_name=name, ignore_index=False)
        .set_index("signal", append=True)
        for level, name in zip(QUANTILES, ("q25", "median", "q75"), strict=True)
    ]
    curves = pd.concat(parts, axis=1).reset_index()
    configs = chosen.assign(
        label=[config_label(row, params) for _, row in chosen.iterrows()],
        hover=[config_hover(row, params, metric) for _, row in chosen.iterrows()],
    )
    configs = configs[[c for c in ("rank", "group", "label", "hover", "objective", "loss")
                       if c in configs.columns]]  # fmt: skip
    losses = tuple(sorted(configs["loss"].unique())) if "loss" in configs else ()
    return ConvergenceInfo(curves, configs, panels, len(stats), metric, losses)


def plot_convergence(info: ConvergenceInfo) -> go.Figure:
    """One panel per signal; a median line and an IQR band per configuration; the legend
    toggles a configuration in every panel at once."""
    if info.curves.empty:
        return empty_figure("No metrics were recorded for any configuration.")
    columns = {loss: c for c, loss in enumerate(info.losses or ("",), start=1)}
    fig = make_subplots(
        rows=len(info.signals),
        cols=len(columns),
        specs=[_row_spec(signal == info.metric, len(columns)) for signal in info.signals],
        vertical_spacing=0.06,
        horizontal_spacing=0.05,
        subplot_titles=_titles(info, list(columns)),
    )
    by_key = {key: group for key, group in info.curves.groupby(["config_id", "signal"])}
    for i, (config_id, config) in enumerate(info.configs.iterrows()):
        for r, signal in enumerate(info.signals, start=1):
            col = 1 if signal == info.metric else columns.get(config.get("loss", ""), 1)
            curve = by_key.get((config_id, signal))
            if curve is None:
                continue
            curve = curve.dropna(subset=["median"]).sort_values("step")
            band = curve.dropna(subset=["q25", "q75"])
            x, lo, hi = band["step"].to_numpy(), band["q25"].to_numpy(), band["q75"].to_numpy()
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([hi, lo[::-1]]),
                    mode="lines",
                    fill="toself",
                    fillcolor=color(i, 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=config_id,
                    showlegend=False,
                ),
                row=r,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=curve["step"].to_numpy(),
                    y=curve["median"].to_numpy(),
                    mode="lines",
                    line={
                        "color": color(i),
                        "width": 2 if config["group"] == "best" else 1,
                        "dash": "solid" if config["group"] == "best" else "dot",
                    },
                    name=config["label"],
                    legendgroup=config_id,
                    showlegend=r == 1,
                    hovertemplate=f"{config['hover']}<br>step %{{x}}<br>{signal} %{{y:.4g}}"
                    "<extra></extra>",
                ),
                row=r,
                col=col,
            )
    for r, signal in enumerate(info.signals, start=1):
        for loss, col in columns.items():
            if signal == info.metric and col > 1:
                break
            shown = info.configs.index
            if signal != info.metric and "loss" in info.configs:
                shown = info.configs.index[info.configs["loss"] == loss]
            here = (info.curves["signal"] == signal) & info.curves["config_id"].isin(shown)
            if wants_log(info.curves.loc[here, "median"], span=10):
                fig.update_yaxes(type="log", row=r, col=col)
    for col in columns.values():
        fig.update_xaxes(title_text="step", row=len(info.signals), col=col)
    shown = len(info.configs)
    title = (
        f"{shown} of {info.n_configs} configurations (best ranked, then worst dotted)"
        if shown < info.n_configs
        else f"all {shown} configurations"
    )
    legend = 22 * len(info.configs) + 40  # below the panels: the names are long
    fig = base_layout(fig, title, 240 * len(info.signals) + 120 + legend)
    below = -70 / (240 * len(info.signals) + 10)  # under the x axes' titles, in paper units
    fig.update_layout(
        legend={"title": {"text": "configuration (click to toggle)", "side": "top"},
                "orientation": "h", "x": 0, "y": below, "yanchor": "top",
                "entrywidth": 1.0, "entrywidthmode": "fraction"},
        margin={"b": 50 + legend},
    )  # fmt: skip
    fig.update_annotations(font_size=11)
    if len(columns) > 1:
        fig.update_xaxes(nticks=4)
    return fig


def _row_spec(spans: bool, columns: int) -> list[dict | None]:
    """One panel across every column (the metric), or one per column (a loss function)."""
    return [{"colspan": columns}] + [None] * (columns - 1) if spans else [{}] * columns


def _titles(info: ConvergenceInfo, losses: list[str]) -> list[str]:
    titles = []
    for signal in info.signals:
        if signal == info.metric or losses == [""]:
            titles.append(signal)
        else:
            titles += [f"{signal} · {loss}" for loss in losses]
    return titles
