"""The summary that leads the report: counts, failure shares, the evaluation protocol, the best
configurations and whether their seeds can tell them apart."""

import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.aggregate import Objective, per_trial
from analysis.effects import get_verdict
from ganlab.results import STATUSES


class SummaryInfo(NamedTuple):
    sweep: str
    n_trials: int
    n_configs: int
    n_seed_rows: int
    status_counts: dict[str, int]  # seed rows per status
    diverged_share: float  # diverged seeds / seeds that ran (not errored)
    trials_with_divergence: float  # trials with at least one diverged seed / trials
    collapsed_share: float  # collapsed seeds / seeds that ran
    objective: Objective
    protocols: list[dict]  # each distinct evaluation protocol, parsed from its JSON
    setup: dict[str, str]  # evaluation settings from the configuration columns
    best: pd.DataFrame  # the best configurations: rank, parameters, objective, rates, metrics
    versions: list[str]  # ganlab version @ git sha, each distinct
    verdict: str = ""  # whether the seeds support the best configuration over the next ones


def get_summary_info(
    trials: pd.DataFrame,
    stats: pd.DataFrame,
    objective: Objective,
    params: list[str],
    top: int = 10,
) -> SummaryInfo:
    """Counts and shares over the whole run, and the `top` best-ranked configurations."""
    ran = trials[trials["status"] != "error"]
    statuses = trials["status"].value_counts()
    counts = {s: int(statuses.get(s, 0)) for s in STATUSES}
    counts.update({str(s): int(n) for s, n in statuses.items() if s not in counts})  # shown too
    trial_div = trials.groupby("trial_id")["status"].agg(lambda s: (s == "diverged").any())
    protocols = [parse_protocol(p) for p in trials["protocol"].dropna().unique()]
    metric = objective.metric
    columns = [
        "rank",
        *params,
        "objective",
        f"{metric}_median",
        f"{metric}_iqr",
        "div_rate",
        "collapse_rate",
        "n_seeds",
    ]
    best = stats[[c for c in columns if c in stats.columns]].head(top)
    rows = per_trial(trials)
    versions = sorted(
        {
            f"{v} @ {str(s)[:10]}"
            for v, s in zip(rows["ganlab_version"], rows["git_sha"], strict=True)
        }
    )
    return SummaryInfo(
        sweep=str(trials["sweep"].iloc[0]) if len(trials) else "",
        n_trials=int(trials["trial_id"].nunique()),
        n_configs=int(trials["config_id"].nunique()),
        n_seed_rows=len(trials),
        status_counts=counts,
        diverged_share=_share((ran["status"] == "diverged").sum(), len(ran)),
        trials_with_divergence=_share(int(trial_div.sum()), len(trial_div)),
        collapsed_share=_share((ran["status"] == "collapsed").sum(), len(ran)),
        objective=objective,
        protocols=protocols,
        setup=_setup(trials),
        best=best,
        versions=versions,
        verdict=get_verdict(trials, stats, metric, objective.mode, top).sentence,
    )


def _share(part: int, whole: int) -> float:
    return float(part) / whole if whole else float("nan")


def parse_protocol(text: str) -> dict:
    """A protocol's JSON as a dict (anything else kept under `protocol`)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"protocol": str(text)}
    return value if isinstance(value, dict) else {"protocol": value}


def _setup(trials: pd.DataFrame) -> dict[str, str]:
    """The protocol-relevant configuration values, each listed once (or as its range)."""
    setup = {}
    seeds = trials.groupby("trial_id").size()
    setup["seeds per trial"] = _values(seeds)
    for column in ("dataset", "steps", "eval_every", "n_eval", "metric", "mode"):
        if column in trials.columns:
            setup[column] = _values(trials[column])
    return setup


def _values(column: pd.Series) -> str:
    uniques = column.dropna().unique()
    if len(uniques) == 0:
        return "default (dataset protocol)"
    if len(uniques) <= 4:
        return ", ".join(str(v) for v in sorted(uniques, key=str))
    return f"{np.min(uniques)} … {np.max(uniques)} ({len(uniques)} values)"
