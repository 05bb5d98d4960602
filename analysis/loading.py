"""A run directory's tables read once, with the aggregates every section of the report shares."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from analysis import samples
from analysis.aggregate import (
    Importance,
    Objective,
    config_stats,
    objective_of,
    param_importance,
    searched_parameters,
)
from ganlab.results import (
    CONFIRM,
    SEARCH,
    check_comparable,
    load,
    load_samples,
    sample_trial_ids,
)

Progress = Callable[[str], None]


class Run(NamedTuple):
    """Everything the sections draw from, computed once."""

    run_dir: Path
    trials: pd.DataFrame
    metrics: pd.DataFrame
    samples: pd.DataFrame
    objective: Objective
    stats: pd.DataFrame  # per configuration, best first (aggregate.config_stats)
    importance: Importance
    params: list[str]  # searched parameters, the most important first
    # `ganlab confirm`'s rows and their per-configuration stats (best first), where the run has
    # a confirmation: the summary ranks on them; every other section shows the search.
    confirmed: tuple[pd.DataFrame, pd.DataFrame] | None = None


def load_run(run_dir: str | os.PathLike, progress: Progress | None = None) -> Run:
    """Read a run directory's tables and compute the aggregates every section shares."""
    say = progress or (lambda _line: None)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    say(f"reading tables in {run_dir}")
    trials, metrics = load(run_dir)
    confirmed = trials[trials["phase"] == CONFIRM]
    trials, metrics = trials[trials["phase"] == SEARCH], metrics[metrics["phase"] == SEARCH]
    values = [c for c in trials if c.startswith(("final_", "best_"))]
    trials = _numeric(trials, ["objective", "div_rate", *values])
    metrics = _numeric(metrics, [c for c in metrics if c not in NON_NUMERIC_METRIC_COLUMNS])
    say(f"aggregating {len(trials)} trial × seed rows, {len(metrics)} evaluations")
    objective = objective_of(trials)
    check_comparable(trials, str(run_dir))  # never rank numbers of different measurements
    stats = config_stats(trials)
    sample_table = load_samples(run_dir, _shown_trials(run_dir, trials, stats))
    say("parameter importance")
    importance = param_importance(trials, run_dir)
    searched = searched_parameters(trials)
    params = [p for p in importance.params if p in searched]
    params += [p for p in searched if p not in params]
    confirmation = None
    if len(confirmed):
        confirmed = _numeric(confirmed, ["objective", "div_rate", *values])
        check_comparable(pd.concat([trials, confirmed]), str(run_dir))
        confirmation = (confirmed, config_stats(confirmed))
    return Run(run_dir, trials, metrics, sample_table, objective, stats, importance, params,
               confirmation)  # fmt: skip


def _shown_trials(run_dir: Path, trials: pd.DataFrame, stats: pd.DataFrame) -> set[str]:
    """The trials whose samples the report shows: only theirs are read (CIFAR-10 samples take
    some 2 MB a trial)."""
    saved = trials[trials["trial_id"].isin(sample_trial_ids(run_dir))]
    shown = pd.concat(samples.shown_configs(stats, set(saved["config_id"])).values())
    return set(saved.loc[saved["config_id"].isin(shown.index), "trial_id"])


NON_NUMERIC_METRIC_COLUMNS = (
    "sweep", "trial_id", "config_id", "seed", "step", "diverged", "protocol",
)  # fmt: skip


def _numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Value columns as floats: a column written with only missing values (an empty run, a
    metric no trial reported) may come back as objects, which numpy cannot compare."""
    loose = [c for c in columns if c in frame and frame[c].dtype.kind not in "fiu"]
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in loose})


def sweep_name(run: Run) -> str:
    return str(run.trials["sweep"].iloc[0]) if len(run.trials) else run.run_dir.name
