"""Aggregates of a trials table: statistics over seeds, failure rates, budget curves, importance.

Conventions, stated once because every figure relies on them:

- A *configuration* is a `config_id`; it pools the seed rows of every trial that ran it.
- Metric statistics (median, IQR) are over the seeds that neither diverged nor errored: a
  diverged seed has no final value, and its share is reported beside as the divergence rate.
- Rates are over seeds that ran (status other than `error`): `div_rate` is the share with
  status `diverged`. Collapse is judged only on seeds that trained every step (a seed ASHA
  stopped is `pruned`, whatever its modes), so `collapse_rate` is the share `collapsed` of the
  seeds that did (`completed` or `collapsed`), blank where none did.
- Configurations are ranked by `ganlab.results.ranking`, the one ranking `ganlab results`
  shares: those that trained every step first, then those stopped early (ASHA) by the step
  they reached; each by the robust objective at its `at_step`, the median of its trials'.
"""

import itertools
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ganlab.metrics import MODES, known
from ganlab.results import (
    ENDED_STATUSES,
    JUDGED_STATUSES,
    config_columns,
    ranking,
    status_counts,
)
from ganlab.rundir import JOURNAL

NO_METRICS = ("diverged", "error")  # statuses whose seeds carry no final metric values
QUANTILES = (0.25, 0.5, 0.75)
BLANK = "—"  # what the page shows for a value that does not apply or was not measured


class Objective(NamedTuple):
    metric: str  # the metric the robust objective is built from, e.g. "fid"
    mode: str  # "min" or "max"
    mixed: bool  # trials disagree on metric or mode: objectives are not comparable


def objective_of(trials: pd.DataFrame) -> Objective:
    """The objective's metric and direction: the most common (metric, mode) in the table."""
    if trials.empty:
        return Objective("fid", "min", False)
    pairs = trials[["metric", "mode"]].value_counts()
    metric, mode = pairs.index[0]
    return Objective(str(metric), str(mode), len(pairs) > 1)


def searched_parameters(trials: pd.DataFrame) -> list[str]:
    """Configuration columns that take more than one value across the trials, in schema order
    (a blank, a field that does not apply, is not a value of its own)."""
    return [c for c in config_columns(trials) if trials[c].nunique() > 1]


def per_trial(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (its first seed's row): the objective is the same on every seed row."""
    return trials.drop_duplicates("trial_id").reset_index(drop=True)


def is_better(mode: str) -> bool:
    """True when smaller is better (`mode` "min"), for sorting."""
    if mode not in MODES:
        raise ValueError(f"mode must be {' or '.join(map(repr, MODES))}, got {mode!r}")
    return mode == "min"


def config_stats(trials: pd.DataFrame, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per configuration: parameters, seed counts, rates, objective and metric quantiles.

    One row per `config_id`, in `ganlab.results.ranking`'s order (best first) with its
    `rank`, `at_step` (the step its numbers are from), `stopped`, `objective` and `statuses`
    (its seeds by status). For each metric `m` defined anywhere in the table: `m_q25`,
    `m_median`, `m_q75` and `m_iqr` of the final values over the seeds that neither diverged
    nor errored.
    """
    metrics = metrics or tuple(
        m for m in known() if f"final_{m}" in trials and trials[f"final_{m}"].notna().any()
    )
    groups = trials.groupby("config_id", sort=False)
    ran = trials["status"] != "error"
    out = groups[config_columns(trials)].first()
    out["n_trials"] = groups["trial_id"].nunique()
    out["n_seeds"] = ran.groupby(trials["config_id"], sort=False).sum()
    by_config = trials["config_id"]
    ended = trials["status"].isin(ENDED_STATUSES).groupby(by_config, sort=False).sum()
    judged = trials["status"].isin(JUDGED_STATUSES).groupby(by_config, sort=False).sum()
    for name, status, whole in (("div_rate", "diverged", judged),
                                ("collapse_rate", "collapsed", ended)):  # fmt: skip
        count = (trials["status"] == status).groupby(by_config, sort=False).sum()
        out[name] = count / whole.where(whole > 0)
    out["n_errors"] = groups.size() - out["n_seeds"]
    out["statuses"] = groups["status"].agg(status_counts)
    usable = trials[~trials["status"].isin(NO_METRICS)]
    if metrics:
        columns = [f"final_{m}" for m in metrics]
        q = usable.groupby("config_id", sort=False)[columns].quantile(list(QUANTILES))
        q = q.unstack()  # columns: (final_m, quantile)
        for m in metrics:
            for level, suffix in zip(QUANTILES, ("q25", "median", "q75"), strict=True):
                column = (f"final_{m}", level)
                values = q[column] if column in q.columns else np.nan
                out[f"{m}_{suffix}"] = pd.Series(values, dtype=float).reindex(out.index)
            out[f"{m}_iqr"] = out[f"{m}_q75"] - out[f"{m}_q25"]
    ranked = ranking(trials)
    out = out.reindex(ranked.index)
    ranked = ranked[["rank", "at_step", "stopped", "objective"]]
    return pd.concat([ranked[["rank"]], out, ranked.drop(columns="rank")], axis=1)


class BudgetCurve(NamedTuple):
    n: np.ndarray  # budgets: number of trials drawn
    mean: np.ndarray  # expected best objective after n trials
    lo: np.ndarray  # 2.5 % quantile of the best after n trials
    hi: np.ndarray  # 97.5 % quantile
    n_trials: int  # trials the curve resamples


def expected_best(
    values: np.ndarray, mode: str, ns: np.ndarray | None = None, level: float = 0.95
) -> BudgetCurve:
    """The best objective after `n` trials, over the bootstrap of `values` (Lucic et al. 2018).

    Drawing n of the N trials with replacement, the best draw is the i-th best trial (in
    sorted order, best first) with probability ((N-i+1)/N)^n - ((N-i)/N)^n. The bootstrap's
    mean and quantiles are therefore computed exactly, with no resampling noise: the mean is
    the sum of the sorted values weighted by these probabilities, and the band holds the
    central `level` of the same distribution.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    big = len(values)
    if big == 0:
        empty = np.array([], dtype=float)
        return BudgetCurve(np.array([], dtype=int), empty, empty, empty, 0)
    ordered = np.sort(values) if is_better(mode) else np.sort(values)[::-1]  # best first
    ns = budget_grid(big) if ns is None else np.asarray(ns, dtype=int)
    i = np.arange(1, big + 1)
    # P(best index <= i) = 1 - ((N - i) / N)^n, for every budget (rows) and index (columns).
    cdf = 1.0 - ((big - i)[None, :] / big) ** ns[:, None]
    pmf = np.diff(cdf, axis=1, prepend=0.0)
    mean = pmf @ ordered
    tail = (1.0 - level) / 2
    # Lower quantile of the index: the first i whose cdf reaches the probability.
    first = (cdf >= tail - 1e-12).argmax(axis=1)
    last = (cdf >= 1 - tail - 1e-12).argmax(axis=1)
    a, b = ordered[first], ordered[last]
    return BudgetCurve(ns, mean, np.minimum(a, b), np.maximum(a, b), big)


def budget_grid(n_trials: int, points: int = 60) -> np.ndarray:
    """Budgets 1..N: every n up to `points`, then log-spaced, always ending at N."""
    if n_trials <= points:
        return np.arange(1, n_trials + 1)
    grid = np.unique(np.round(np.geomspace(1, n_trials, points)).astype(int))
    return np.union1d(np.arange(1, min(10, n_trials) + 1), grid)


def budget_curves(trials: pd.DataFrame, by: str = "loss") -> dict[str, BudgetCurve]:
    """Expected best objective versus budget: "all trials" first, then one curve per `by`."""
    mode = objective_of(trials).mode
    rows = per_trial(trials)
    rows = rows[np.isfinite(rows["objective"])]
    curves = {"all trials": expected_best(rows["objective"].to_numpy(), mode)}
    if by in rows.columns and rows[by].nunique() > 1:
        for value, group in rows.groupby(by, sort=True):
            curves[f"{by}={value}"] = expected_best(group["objective"].to_numpy(), mode)
    return curves


class Importance(NamedTuple):
    params: list[str]  # most important first
    values: list[float]  # normalised to sum to 1
    source: str  # how they were computed, said in the report


def param_importance(trials: pd.DataFrame, run_dir: str | os.PathLike | None = None) -> Importance:
    """Importance of each searched parameter for the objective.

    From Optuna's default evaluator (fANOVA) on the sweep's journal study
    (`RUN_DIR/optuna-journal.log`, study name = the sweep) where there is one with at least two
    completed trials; otherwise from the table, with `table_importance`.
    """
    why = "no Optuna journal"
    if run_dir is not None and (Path(run_dir) / JOURNAL).exists() and not trials.empty:
        found = _optuna_importance(Path(run_dir) / JOURNAL, str(trials["sweep"].iloc[0]))
        if isinstance(found, Importance):
            return found
        why = found
    return table_importance(trials, why=why)


def _optuna_importance(journal: Path, study_name: str) -> Importance | str:
    """Optuna's importance, or why there is none."""
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return f"no study {study_name!r} in the Optuna journal"
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return "fewer than 2 completed trials in the Optuna study"
    try:
        with warnings.catch_warnings():  # experimental-feature and single-value warnings
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:  # e.g. no parameter varies across trials
        return f"Optuna could not evaluate importance ({error})"
    if not found:
        return "the Optuna study has no parameters"
    source = f"Optuna fANOVA on the journal study ({len(done)} completed trials)"
    return Importance(list(found), [float(v) for v in found.values()], source)


def table_importance(
    trials: pd.DataFrame, max_bins: int = 10, why: str = "no Optuna journal"
) -> Importance:
    """Variance-based importance from the table: each parameter's main effect.

    Per searched parameter, the share of the variance of the trials' objective ranks explained
    by the parameter's groups (the correlation ratio η²; continuous values in up to `max_bins`
    quantile bins), normalised to sum to 1. Ranks, because a diverged trial's objective is a
    large penalty value that would otherwise swamp the variance.
    """
    rows = per_trial(trials)
    rows = rows[np.isfinite(rows["objective"])]
    params = searched_parameters(rows)
    source = f"main-effect variance of objective ranks over {len(rows)} trials ({why})"
    if len(rows) < 2 or not params:
        return Importance([], [], source)
    y = rows["objective"].rank().to_numpy()
    total = ((y - y.mean()) ** 2).sum()
    scores = {}
    for p in params:
        codes, _ = parameter_bins(rows[p], max_bins)
        means = pd.Series(y).groupby(codes).transform("mean").to_numpy()
        scores[p] = ((means - y.mean()) ** 2).sum() / total if total > 0 else 0.0
    norm = sum(scores.values())
    ordered = sorted(scores, key=lambda p: -scores[p])
    values = [scores[p] / norm if norm > 0 else 1.0 / len(params) for p in ordered]
    return Importance(ordered, values, source)


def parameter_bins(values: pd.Series, max_bins: int = 8) -> tuple[np.ndarray, list[str]]:
    """Group codes (0..k-1, in value order) and their labels for one parameter's values.

    Few distinct values are their own groups. Many numeric values are cut into quantile bins,
    on a log scale where they are positive and span more than a decade (learning rates).
    """
    values = values.reset_index(drop=True)
    numeric = values.dtype.kind in "iuf"  # bool is kind "b": categories
    if not numeric or values.nunique() <= max_bins:
        uniques = sorted(values.dropna().unique(), key=_sort_key)
        lookup = {v: i for i, v in enumerate(uniques)}
        codes = values.map(lookup).fillna(-1).astype(int).to_numpy()
        return codes, [format_value(v) for v in uniques]
    x = values.to_numpy(dtype=float, na_value=np.nan)
    log = bool(np.nanmin(x) > 0 and np.nanmax(x) / np.nanmin(x) > 10)
    t = np.log10(x) if log else x
    edges = np.unique(np.nanquantile(t, np.linspace(0, 1, max_bins + 1)))
    codes = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    codes[np.isnan(t)] = -1  # a field that does not apply (clip without wasserstein): no bin
    unit = (lambda e: 10**e) if log else (lambda e: e)
    labels = [
        f"{format_value(unit(a))}–{format_value(unit(b))}" for a, b in itertools.pairwise(edges)
    ]
    used = np.unique(codes)  # quantile edges can leave a bin empty; renumber densely
    used = used[used >= 0]
    remap = np.full(len(labels), -1)
    remap[used] = np.arange(len(used))
    return np.where(codes >= 0, remap[codes], -1), [labels[i] for i in used]


def format_value(value: object) -> str:
    """A parameter or metric value for display (tables keep the full precision); `BLANK` for
    a missing one (a field that does not apply, a metric not measured)."""
    if value is None or value is pd.NA:
        return BLANK
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return BLANK
        return f"{value:.3g}"
    return str(value)


def _sort_key(value: object) -> tuple[int, object]:
    # Numbers in numeric order before strings, so mixed columns still sort.
    if isinstance(value, bool | np.bool_):
        return (0, int(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return (0, float(value))
    return (1, str(value))
