"""The summary that leads the report: counts, failure shares, the evaluation protocol and what
it means for the numbers (warnings, the real-data floor), the best configurations and whether
their seeds can tell them apart."""

import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.aggregate import Objective, format_value, per_trial
from analysis.effects import get_verdict
from ganlab.results import ENDED_STATUSES, STATUSES, rates


class SummaryInfo(NamedTuple):
    sweep: str
    n_trials: int
    n_configs: int
    n_seed_rows: int
    status_counts: dict[str, int]  # seed rows per status
    diverged_share: float  # diverged seeds / judged seeds (`results.rates`: pruned left out)
    trials_with_divergence: float  # trials with at least one diverged seed / trials
    collapsed_share: float  # collapsed seeds / seeds that trained every step (ENDED_STATUSES)
    n_ended: int  # seeds that trained every step: the only ones judged for collapse
    n_judged: int  # seeds that trained every step or diverged: those judged for divergence
    objective: Objective
    protocols: list[dict]  # each distinct evaluation protocol, parsed from its JSON
    setup: dict[str, str]  # evaluation settings from the configuration columns
    best: pd.DataFrame  # the best configurations: rank, parameters, objective, rates, metrics
    versions: list[str]  # ganlab version @ git sha, each distinct
    verdict: str = ""  # whether the seeds support the best configuration over the next ones
    warnings: tuple[str, ...] = ()  # what makes the numbers incomparable, said first
    fid_floor: str = ""  # the real-data floor of FID, in words ("" when none recorded)


def get_summary_info(
    trials: pd.DataFrame,
    stats: pd.DataFrame,
    objective: Objective,
    params: list[str],
    top: int = 10,
    confirmed: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> SummaryInfo:
    """Counts and shares over the search, and the `top` best-ranked configurations: the
    confirmation's (its rows and stats, `confirmed`) where the run has one."""
    shares = rates(trials["status"])
    statuses = trials["status"].value_counts()
    counts = {s: int(statuses.get(s, 0)) for s in STATUSES}
    counts.update({str(s): int(n) for s, n in statuses.items() if s not in counts})  # shown too
    trial_div = trials.groupby("trial_id")["status"].agg(lambda s: (s == "diverged").any())
    ended = trials["status"].isin(ENDED_STATUSES)
    protocols = run_protocols(trials)
    metric = objective.metric
    columns = [
        "rank",
        *params,
        "at_step",
        "statuses",
        "objective",
        f"{metric}_median",
        f"{metric}_iqr",
        "div_rate",
        "collapse_rate",
        "n_seeds",
    ]
    ranked_trials, ranked = confirmed if confirmed is not None else (trials, stats)
    best = ranked[[c for c in columns if c in ranked.columns]].head(top)
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
        diverged_share=shares.diverged,
        trials_with_divergence=_share(int(trial_div.sum()), len(trial_div)),
        collapsed_share=_share((trials["status"] == "collapsed").sum(), int(ended.sum())),
        n_ended=int(ended.sum()),
        n_judged=shares.n_judged,
        objective=objective,
        protocols=protocols,
        setup=_setup(trials),
        best=best,
        versions=versions,
        verdict=get_verdict(ranked_trials, ranked, metric, objective.mode, top).sentence,
        warnings=tuple(_warnings(protocols, objective)),
        fid_floor=fid_floors(protocols),
    )


def _warnings(protocols: list[dict], objective: Objective) -> list[str]:
    found = []
    measured = final_protocols(protocols)
    if len(measured) > 1:
        found.append(
            f"This run mixes {len(measured)} evaluation protocols: numbers from "
            "different protocols are not comparable."
        )
    if objective.mixed:
        found.append("Trials disagree on the objective's metric or mode.")
    return found + protocol_warnings(protocols)


def final_protocols(protocols: list[dict]) -> list[dict]:
    """The protocols apart from those of evaluations before the last (`n_eval_rung`) whose last
    evaluation's protocol is among them: one per measurement, not one per sample count."""
    shas = {p.get("reference_sha") for p in protocols if not p.get("final_reference_sha")}
    return [p for p in protocols if p.get("final_reference_sha", "") not in shas - {None, ""}]


def fid_floors(protocols: list[dict]) -> str:
    """The real-data floor of FID under each protocol, in words ("" when none recorded); each
    with its sample count where the counts differ (`n_eval_rung`)."""
    floors = [(p["fid_floor"], p.get("n_fake")) for p in protocols if "fid_floor" in p]
    if not floors:
        return ""
    counts = len({n for _, n in floors}) > 1
    values = " / ".join(
        format_value(float(f)) + (f" ({n} fakes)" if counts else "") for f, n in floors
    )
    return (
        f"{values}: the FID of training samples against the held-out reference, what a "
        "generator that copies its training data scores. No FID below it means anything."
    )


def protocol_warnings(protocols: list[dict]) -> list[str]:
    """What makes a run's FID incomparable with published numbers, from its protocols."""
    warnings = []
    for p in protocols:
        if p.get("rank_deficient"):
            warnings.append(
                f"FID here is computed from fewer samples ({min(p['n_real'], p['n_fake'])}) "
                f"than feature dimensions ({p['dim']}): its covariances are singular and "
                "the value is biased; compare it only within this run."
            )
        if p.get("extractor") == "inception" and p.get("standard_weights") is False:
            warnings.append(
                "The Inception weights are not the standard FID file (hash checked): FID "
                "is not comparable with published numbers."
            )
    return warnings


def _share(part: int, whole: int) -> float:
    return float(part) / whole if whole else float("nan")


def run_protocols(trials: pd.DataFrame) -> list[dict]:
    """Each distinct evaluation protocol of the rows, parsed; a trial that failed before its
    first evaluation measured nothing and has none (it is not a protocol of its own)."""
    return [parse_protocol(p) for p in trials["protocol"].dropna().unique() if p]


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
    rung = trials["n_eval_rung"].dropna() if "n_eval_rung" in trials.columns else []
    if len(rung):
        setup["n_eval_rung"] = (
            f"{_values(rung)} fakes for every evaluation before the last (ASHA's rungs, the "
            "curves, the numbers of trials stopped early); the last, at steps, used n_eval"
        )
    return setup


def _values(column: pd.Series) -> str:
    uniques = column.dropna().unique()
    if len(uniques) == 0:
        return "default (dataset protocol)"
    if len(uniques) <= 4:
        return ", ".join(str(v) for v in sorted(uniques, key=str))
    return f"{np.min(uniques)} … {np.max(uniques)} ({len(uniques)} values)"
