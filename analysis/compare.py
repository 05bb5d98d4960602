"""Two runs side by side (`ganlab report --compare RUN_A RUN_B`): headline numbers, budget
curves, objective per loss and divergence per loss."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis._style import base_layout, color, empty_figure, points_box, wants_log
from analysis.aggregate import BudgetCurve, budget_curves, is_better, per_trial
from analysis.summary import SummaryInfo
from ganlab.results import JUDGED_STATUSES

DASHES = ("solid", "dash")


class ComparisonInfo(NamedTuple):
    names: list[str]  # "A: <sweep>", "B: <sweep>"
    summaries: list[SummaryInfo]
    warnings: list[str]  # reasons the runs' numbers may not be comparable


def comparison_warnings(summaries: list[SummaryInfo]) -> list[str]:
    """Protocols or objectives that differ between the runs, said before any number."""
    a, b = summaries
    found = []
    if sorted(map(str, a.protocols)) != sorted(map(str, b.protocols)):
        found.append(
            "The runs used different evaluation protocols: their metric values are not comparable."
        )
    if (a.objective.metric, a.objective.mode) != (b.objective.metric, b.objective.mode):
        found.append(
            f"The runs optimise different objectives ({a.objective.metric}/"
            f"{a.objective.mode} and {b.objective.metric}/{b.objective.mode})."
        )
    return found


def headline_rows(info: ComparisonInfo) -> list[tuple[str, list[str]]]:
    """(label, [value for A, value for B]) for the comparison's summary table."""

    def percent(x: float) -> str:
        return "–" if x != x else f"{100 * x:.1f} %"

    def best(s: SummaryInfo) -> str:
        return f"{s.best['objective'].iloc[0]:.4g}" if len(s.best) else "–"

    rows = [
        ("trials", [str(s.n_trials) for s in info.summaries]),
        ("configurations", [str(s.n_configs) for s in info.summaries]),
        ("objective", [f"{s.objective.metric} ({s.objective.mode})" for s in info.summaries]),
        ("best objective", [best(s) for s in info.summaries]),
        ("diverged seeds", [percent(s.diverged_share) for s in info.summaries]),
        ("collapsed seeds", [percent(s.collapsed_share) for s in info.summaries]),
        (
            "protocol",
            [
                "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in s.protocols)
                for s in info.summaries
            ],
        ),
    ]
    return rows


class BudgetComparisonInfo(NamedTuple):
    runs: list[str]
    curves: list[dict[str, BudgetCurve]]  # per run: "all trials", then per loss
    metric: str
    mode: str


def get_budget_comparison_info(
    names: list[str], trials: list[pd.DataFrame], metric: str, mode: str
) -> BudgetComparisonInfo:
    return BudgetComparisonInfo(names, [budget_curves(t) for t in trials], metric, mode)


def plot_budget_comparison(info: BudgetComparisonInfo) -> go.Figure:
    """Expected best versus budget: a colour per curve name, a dash style per run."""
    names = list(dict.fromkeys(k for curves in info.curves for k in curves))
    if not any(len(c.n) for curves in info.curves for c in curves.values()):
        return empty_figure("No trial has a finite objective.")
    fig = go.Figure()
    for r, (run, curves) in enumerate(zip(info.runs, info.curves, strict=True)):
        for name, curve in curves.items():
            main = name == "all trials"
            fig.add_trace(
                go.Scatter(
                    x=curve.n,
                    y=curve.mean,
                    mode="lines",
                    name=f"{run} · {name}",
                    line={
                        "color": "rgb(30,30,30)" if main else color(names.index(name) - 1),
                        "width": 3 if main else 1.5,
                        "dash": DASHES[r % 2],
                    },
                    hovertemplate=f"{run} · {name}<br>n=%{{x}}<br>%{{y:.4g}}<extra></extra>",
                )
            )
    longest = max(c.n[-1] for curves in info.curves for c in curves.values() if len(c.n))
    ys = np.concatenate([c.mean for curves in info.curves for c in curves.values()])
    fig.update_xaxes(title_text="budget: trials drawn", type="log" if longest > 100 else "linear")
    better = "lower" if is_better(info.mode) else "higher"
    fig.update_yaxes(
        title_text=f"expected best ({info.metric}, {better} is better)",
        type="log" if wants_log(ys) else "linear",
    )
    return base_layout(fig, "solid: run A, dashed: run B", 480)


class PerLossInfo(NamedTuple):
    runs: list[str]
    objectives: list[pd.DataFrame]  # per run, one row per trial: loss, objective
    divergence: pd.DataFrame  # index loss, a column per run: share of seeds diverged
    metric: str
    mode: str


def get_per_loss_info(
    names: list[str], trials: list[pd.DataFrame], metric: str, mode: str
) -> PerLossInfo:
    """Per run: every trial's objective by loss, and diverged seeds / judged seeds (pruned ones
    left out: `results.JUDGED_STATUSES`)."""
    objectives, rates = [], {}
    for name, table in zip(names, trials, strict=True):
        rows = per_trial(table)
        objectives.append(rows.loc[np.isfinite(rows["objective"]), ["loss", "objective"]])
        ran = table[table["status"].isin(JUDGED_STATUSES)]
        rates[name] = (ran["status"] == "diverged").groupby(ran["loss"]).mean()
    return PerLossInfo(names, objectives, pd.DataFrame(rates).sort_index(), metric, mode)


def plot_objective_per_loss(info: PerLossInfo) -> go.Figure:
    """Grouped boxes: a box per run within each loss, every trial as a point."""
    if all(o.empty for o in info.objectives):
        return empty_figure("No trial has a finite objective.")
    fig = go.Figure()
    for r, (run, rows) in enumerate(zip(info.runs, info.objectives, strict=True)):
        fig.add_trace(
            points_box(
                rows["objective"].to_numpy(),
                r,
                x=rows["loss"].to_numpy(),
                name=run,
                jitter=0.4,
                offsetgroup=str(r),
            )
        )
    fig.update_layout(boxmode="group")
    values = np.concatenate([o["objective"].to_numpy() for o in info.objectives])
    better = "lower" if is_better(info.mode) else "higher"
    fig.update_yaxes(
        title_text=f"objective ({info.metric}, {better} is better)",
        type="log" if wants_log(values) else "linear",
    )
    return base_layout(fig, "objective per loss", 460)


def plot_divergence_per_loss(info: PerLossInfo) -> go.Figure:
    """Grouped bars of the share of seeds that diverged, per loss and run."""
    if info.divergence.empty:
        return empty_figure("No seed ran.")
    fig = go.Figure()
    for r, run in enumerate(info.runs):
        rates = info.divergence[run]
        fig.add_trace(
            go.Bar(
                x=list(rates.index),
                y=rates.to_numpy(),
                name=run,
                marker_color=color(r),
                hovertemplate=f"{run}<br>%{{x}}: %{{y:.1%}} diverged<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share of seeds diverged", tickformat=".0%", range=[0, 1])
    return base_layout(fig, "divergence per loss", 400)
