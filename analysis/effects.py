"""Effects of the searched factors, with bootstrap 95 % intervals over configurations and seeds.

For each searched factor (a parameter; numbers cut into at most three quantile bins), each level
is compared with the factor's first level, the baseline (smallest value, or first name). Three
outcomes per seed that ran (status other than `error`):

- `objective`: the seed's final objective metric, a diverged seed counted as the metric's worst
  value, summarised per level by the median over its seeds: the robust objective, pooled;
- `modes`: the seed's final modes captured, over seeds that did not diverge, by the mean;
- `diverged`: whether the seed diverged, by the mean (the divergence rate).

The effect of a level is its summary minus the baseline's. The interval is a two-stage
bootstrap: configurations are drawn with replacement within each level, then seeds within each
drawn configuration, so both the spread between configurations and the luck of the seeds widen
it. An interval that contains 0 means the data cannot tell the level from the baseline. An
outcome that takes one value over a factor's seeds (no seed diverged, say) is left out for it.

Every compared seed is measured at one budget (`at_common_step`): the last evaluation step that
every trial that ran reached (ASHA's rung where it stopped trials; the last step where none
was stopped), so a trial stopped early is never compared with one that trained on.
"""

import math
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis._style import base_layout, color, empty_figure
from analysis.aggregate import parameter_bins
from ganlab.metrics import known, lookup

N_BOOT = 400
MIN_BOOT = 100
MAX_DRAWS = 1_000_000  # seed draws per level and outcome, bounding the report's time
LEVEL = 0.95
MAX_BINS = 3
BOOT_SEED = 0
NO_EFFECT_GREY = "#999999"
OUTCOMES = {"objective": "objective", "modes": "modes captured", "diverged": "divergence rate"}


class Effect(NamedTuple):
    factor: str
    level: str
    baseline: str
    outcome: str  # a key of OUTCOMES
    estimate: float  # level's summary minus the baseline's
    lo: float  # bootstrap 2.5 % quantile of the difference
    hi: float  # 97.5 %
    n_configs: int  # configurations at this level
    n_seeds: int  # seeds at this level


class EffectsInfo(NamedTuple):
    effects: list[Effect]
    metric: str  # the objective's metric
    mode: str  # "min" or "max"
    n_boot: int
    budget: "Budget | None" = None  # the step every compared seed is measured at


class Budget(NamedTuple):
    """The step the effects compare every seed at, and why that one."""

    step: int
    stopped: int  # trials that stopped before their last step (ASHA, a time budget)
    ended: int  # trials that trained past it or ended at it
    why: str  # one sentence for the page

    @property
    def label(self) -> str:
        return f"step {self.step:,}"


def at_common_step(trials: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, Budget]:
    """`trials` with each seed's final values and divergence as they were at the last
    evaluation step every trial that ran reached (a trial all of whose seeds diverged reached
    its divergence: those seeds count as diverged at any later step), and that step."""
    ran = trials[trials["status"] != "error"]
    if ran.empty:
        return trials, Budget(0, 0, 0, "No trial ran.")
    reach = ran.groupby("trial_id")["steps_done"].max()
    alive = ran[ran["status"] != "diverged"].groupby("trial_id")["steps_done"].max()
    step = int(alive.min()) if len(alive) else int(reach.max())
    ends = ran.groupby("trial_id")["steps"].first()
    stopped = int((alive < ends.reindex(alive.index)).sum())
    if (alive == step).all() and stopped == 0:
        why = f"Every trial that ran ended at step {step:,}: each seed is compared at its end."
        return trials, Budget(step, 0, len(reach), why)
    why = (
        f"Compared at step {step:,}, the last step every trial that ran reached"
        + (f" ({stopped} were stopped early, by ASHA or a time budget)" if stopped else "")
        + ": a trial that trained on is read at that step too, never at its own end."
    )
    return _values_at(trials, metrics, step), Budget(step, stopped, len(reach) - stopped, why)


def _values_at(trials: pd.DataFrame, metrics: pd.DataFrame, step: int) -> pd.DataFrame:
    """Each seed's metric values at `step` in place of its final ones; status `diverged` for
    the seeds that had diverged by then, `ran` for the others (`error` kept)."""
    at = metrics[metrics["step"] == step].set_index(["trial_id", "seed"])
    key = pd.MultiIndex.from_frame(trials[["trial_id", "seed"]])
    out = trials.copy()
    for m in known():
        if m in at.columns and f"final_{m}" in out.columns:
            out[f"final_{m}"] = at[m].reindex(key).to_numpy(dtype=float)
    gone = (out["diverged_step"].astype("Float64") <= step).fillna(False).to_numpy(dtype=bool)
    out["status"] = np.where(out["status"] == "error", "error", np.where(gone, "diverged", "ran"))
    return out


def seed_outcomes(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed that ran: config_id, `objective`, `modes` (NaN if diverged), `diverged`."""
    ran = trials[trials["status"] != "error"]
    diverged = (ran["status"] == "diverged").to_numpy()
    value = ran[f"final_{metric}"].to_numpy(dtype=float)
    objective = np.where(diverged | ~np.isfinite(value), lookup(metric).worst, value)
    modes = ran["final_modes"].to_numpy(dtype=float) if "final_modes" in ran else np.nan
    out = pd.DataFrame(
        {"config_id": ran["config_id"].to_numpy(), "objective": objective,
         "modes": np.where(diverged, np.nan, modes), "diverged": diverged.astype(float)},
        index=ran.index,
    )  # fmt: skip
    return out


def _summary(outcome: str):
    return nanmedian_rows if outcome == "objective" else _nanmean_rows


def nanmedian_rows(x: np.ndarray) -> np.ndarray | float:
    """Median of each row ignoring NaN (NaN where a row has none); 1-D input gives a float.
    Sorting once is much faster than `np.nanmedian` on many short rows."""
    rows = np.sort(np.atleast_2d(x), axis=1)  # NaN sorts last
    n = (~np.isnan(rows)).sum(1)
    last = rows.shape[1] - 1
    lo = np.take_along_axis(rows, np.clip((n - 1) // 2, 0, last)[:, None], 1)[:, 0]
    hi = np.take_along_axis(rows, np.clip(n // 2, 0, last)[:, None], 1)[:, 0]
    median = np.where(n > 0, (lo + hi) / 2, np.nan)
    return float(median[0]) if np.ndim(x) == 1 else median


def _nanmean_rows(x: np.ndarray) -> np.ndarray | float:
    with warnings.catch_warnings():  # a row of NaN only (every seed diverged) has no mean
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x) if np.ndim(x) == 1 else np.nanmean(x, axis=1)


def _padded(values: np.ndarray, configs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(configs, max_seeds) matrix of seed values, NaN-padded, and the seeds of each row."""
    codes, _ = pd.factorize(configs)
    counts = np.bincount(codes)
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    matrix = np.full((len(counts), counts.max()), np.nan)
    matrix[codes, position] = values
    return matrix, counts


def bootstrap_summaries(
    matrix: np.ndarray, counts: np.ndarray, outcome: str, rng: np.random.Generator, n_boot: int
) -> np.ndarray:
    """`n_boot` summaries of a level: configurations, then seeds within each, with replacement."""
    k, width = matrix.shape
    rows = rng.integers(0, k, (n_boot, k))
    seeds = counts[rows][..., None]  # (n_boot, k, 1): seeds of each drawn configuration
    cols = (rng.random((n_boot, k, width), dtype=np.float32) * seeds).astype(np.intp)
    draws = matrix.ravel()[rows[..., None] * width + np.minimum(cols, seeds - 1)]
    draws[np.arange(width) >= seeds] = np.nan  # a configuration keeps its own seed count
    return _summary(outcome)(draws.reshape(n_boot, -1))


def _replicates(matrix: np.ndarray, n_boot: int) -> int:
    # Big levels (thousands of configurations) get fewer replicates, at least MIN_BOOT: their
    # intervals are narrow, and the report must stay fast on 10,000-row runs.
    return int(np.clip(MAX_DRAWS // matrix.size, MIN_BOOT, n_boot))


def factor_effects(
    outcomes: pd.DataFrame, levels: np.ndarray, labels: list[str], factor: str, n_boot: int
) -> list[Effect]:
    """Effects of every level of one factor against its first level, on every outcome."""
    rng = np.random.default_rng(BOOT_SEED)
    effects = []
    for outcome in OUTCOMES:
        if outcomes[outcome].nunique() <= 1:  # one value (or none) over the factor's seeds
            continue
        groups = [outcomes[levels == code] for code in range(len(labels))]
        padded = [_padded(g[outcome].to_numpy(float), g["config_id"].to_numpy()) for g in groups]
        n = min(_replicates(matrix, n_boot) for matrix, _ in padded)
        boots = [bootstrap_summaries(m, c, outcome, rng, n) for m, c in padded]
        estimates = [_summary(outcome)(g[outcome].to_numpy(float)) for g in groups]
        for code in range(1, len(labels)):
            lo, hi = _interval(boots[code] - boots[0])
            effects.append(
                Effect(
                    factor,
                    labels[code],
                    labels[0],
                    outcome,
                    float(estimates[code] - estimates[0]),
                    lo,
                    hi,
                    len(padded[code][1]),
                    len(groups[code]),
                )
            )
    return effects


def _interval(diff: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return math.nan, math.nan
    lo, hi = np.quantile(diff, [tail, 1 - tail])
    return float(lo), float(hi)


def get_effects_info(
    trials: pd.DataFrame,
    params: list[str],
    metric: str,
    mode: str,
    n_boot: int = N_BOOT,
    budget: Budget | None = None,
) -> EffectsInfo:
    """Every searched factor's effects on the objective, modes and divergence, from the seeds'
    final values in `trials` (`at_common_step` gives them at one `budget`)."""
    outcomes = seed_outcomes(trials, metric)
    effects = []
    for factor in params:
        levels, labels = parameter_bins(trials.loc[outcomes.index, factor], MAX_BINS)
        if len(labels) < 2:
            continue
        defined = levels >= 0  # a conditional field (clip, penalty_weight) only where it applies
        rows = outcomes[defined].reset_index(drop=True)
        effects += factor_effects(rows, levels[defined], labels, factor, n_boot)
    return EffectsInfo(effects, metric, mode, n_boot, budget)


def includes_no_effect(effect: Effect) -> bool:
    """Whether the interval contains 0 (or could not be computed)."""
    return not (effect.lo > 0 or effect.hi < 0)


def describe(effect: Effect, mode: str) -> str:
    """One sentence: the effect, its interval, and whether the data support it."""
    head = (
        f"{effect.factor} = {effect.level} against {effect.baseline}: "
        f"{OUTCOMES[effect.outcome]} {effect.estimate:+.3g} "
        f"(95 % interval {effect.lo:+.3g} to {effect.hi:+.3g}; "
        f"{effect.n_configs} configurations, {effect.n_seeds} seeds)"
    )
    if includes_no_effect(effect):
        return f"{head}: the interval includes zero, the data cannot tell them apart."
    up = effect.estimate > 0
    if effect.outcome == "objective":
        word = "better" if up == (mode == "max") else "worse"
    elif effect.outcome == "modes":
        word = "more modes" if up else "fewer modes"
    else:
        word = "diverges more often" if up else "diverges less often"
    return f"{head}: {word}, the interval excludes zero."


def plot_effects(info: EffectsInfo) -> go.Figure:
    """One panel per outcome: each level's effect against its baseline with its interval."""
    outcomes = [o for o in OUTCOMES if any(e.outcome == o for e in info.effects)]
    if not outcomes:
        return empty_figure("No searched factor has two levels whose seeds differ in any outcome.")
    fig = make_subplots(
        rows=1, cols=len(outcomes), shared_yaxes=True,
        subplot_titles=[f"{OUTCOMES[o]} (vs baseline)" for o in outcomes],
    )  # fmt: skip
    for col, outcome in enumerate(outcomes, start=1):
        rows = [e for e in info.effects if e.outcome == outcome]
        fig.add_trace(
            go.Scatter(
                x=[e.estimate for e in rows],
                y=[f"{e.factor} = {e.level} (vs {e.baseline})" for e in rows],
                mode="markers",
                marker={"color": [_marker_color(e) for e in rows]},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [e.hi - e.estimate for e in rows],
                    "arrayminus": [e.estimate - e.lo for e in rows],
                },
                hovertext=[describe(e, info.mode) for e in rows],
                hoverinfo="text",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        fig.add_vline(x=0, line={"color": "#888", "dash": "dot"}, row=1, col=col)
    height = 160 + 28 * len({(e.factor, e.level) for e in info.effects})
    at = f" at {info.budget.label}" if info.budget else ""
    return base_layout(fig, f"Effect of each searched factor{at} (bootstrap 95 % intervals)",
                       height)  # fmt: skip


def _marker_color(effect: Effect) -> str:
    return NO_EFFECT_GREY if includes_no_effect(effect) else color(1)


def ordered(info: EffectsInfo) -> list[Effect]:
    """The effects, the objective's first, then by factor and level."""
    order = {o: i for i, o in enumerate(OUTCOMES)}
    return sorted(info.effects, key=lambda e: (order[e.outcome], e.factor, e.level))


def effect_sentences(info: EffectsInfo) -> list[str]:
    """In words, only the effects whose interval excludes zero (or one line saying none does),
    each at the budget it was measured at."""
    at = f"At {info.budget.label}: " if info.budget else ""
    found = [at + describe(e, info.mode) for e in ordered(info) if not includes_no_effect(e)]
    if found:
        return found
    line = (
        "no outcome differs between the levels of any searched factor: there is no effect to "
        "estimate."
        if not info.effects
        else "no effect's 95 % interval excludes zero: the data cannot tell any level of a "
        "searched factor from its baseline."
    )
    return [at + line if at else line[0].upper() + line[1:]]


EFFECT_COLUMNS = ("outcome", "factor", "level", "baseline", "effect", "95 % interval",
                  "configurations", "seeds", "excludes 0")  # fmt: skip


def effect_rows(info: EffectsInfo) -> list[tuple[str | float | int, ...]]:
    """The effects as rows of `EFFECT_COLUMNS` (numbers kept as numbers, for sorting)."""
    return [
        (OUTCOMES[e.outcome], e.factor, e.level, e.baseline, e.estimate,
         f"{e.lo:+.3g} to {e.hi:+.3g}", e.n_configs, e.n_seeds,
         "no" if includes_no_effect(e) else "yes")
        for e in ordered(info)
    ]  # fmt: skip


class Verdict(NamedTuple):
    """Whether the best-ranked configuration is supported by the seeds behind it."""

    ties: list[int]  # ranks (2, 3, ...) whose difference to rank 1 includes no effect
    compared: int  # configurations compared with rank 1
    sentence: str


def seed_bootstrap(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """`n_boot` medians of `values` resampled with replacement (one configuration's seeds)."""
    draws = values[rng.integers(0, len(values), (n_boot, len(values)))]
    return np.median(draws, axis=1)


def get_verdict(
    trials: pd.DataFrame, stats: pd.DataFrame, metric: str, mode: str, top: int = 10
) -> Verdict:
    """Rank 1 against the next `top - 1` configurations at its budget (the same `at_step`, and
    trained to the end or stopped alike), by a bootstrap over their seeds."""
    outcomes = seed_outcomes(trials, metric)
    by_config = {c: g["objective"].to_numpy() for c, g in outcomes.groupby("config_id")}
    ranked = [c for c in stats.index if c in by_config]
    if ranked and "at_step" in stats:
        first = stats.loc[ranked[0], ["at_step", "stopped"]]
        same = (stats["at_step"] == first["at_step"]) & (stats["stopped"] == first["stopped"])
        ranked = [c for c in ranked if same[c]]
    ranked = ranked[:top]
    if len(ranked) < 2:
        return Verdict([], 0, "No other configuration trained as far as the best one: there is "
                       "nothing to rank it against at its budget.")  # fmt: skip
    rng = np.random.default_rng(BOOT_SEED)
    best = seed_bootstrap(by_config[ranked[0]], rng, N_BOOT)
    tail = (1 - LEVEL) / 2
    ties = []
    for position, config in enumerate(ranked[1:], start=2):
        rank = int(stats.loc[config, "rank"]) if "rank" in stats else position
        diff = best - seed_bootstrap(by_config[config], rng, N_BOOT)
        lo, hi = np.quantile(diff, [tail, 1 - tail])
        if lo <= 0 <= hi:
            ties.append(rank)
    at = ""
    if "at_step" in stats:
        first = stats.loc[ranked[0]]
        how = "stopped" if first["stopped"] else "trained to their end"
        at = f" Compared at step {int(first['at_step']):,}, among configurations {how} there."
    return Verdict(ties, len(ranked) - 1, _verdict_sentence(ties, len(ranked) - 1) + at)


def _verdict_sentence(ties: list[int], compared: int) -> str:
    if not ties:
        return (
            f"The best configuration is better than each of the next {compared} "
            "(the 95 % bootstrap interval of each difference, over their seeds, excludes zero)."
        )
    ranks = ", ".join(f"#{r}" for r in ties)
    return (
        f"No winner: the seeds cannot separate #1 from {ranks} (the 95 % bootstrap interval "
        "of each difference includes zero). Treat them as tied, or run more seeds."
    )
