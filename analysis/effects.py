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
it. An interval that contains 0 means the data cannot tell the level from the baseline.
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
from ganlab.metrics import METRICS

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


def seed_outcomes(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed that ran: config_id, `objective`, `modes` (NaN if diverged), `diverged`."""
    ran = trials[trials["status"] != "error"]
    diverged = (ran["status"] == "diverged").to_numpy()
    value = ran[f"final_{metric}"].to_numpy(dtype=float)
    objective = np.where(diverged | ~np.isfinite(value), METRICS[metric].worst, value)
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
        if outcomes[outcome].isna().all():
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
    trials: pd.DataFrame, params: list[str], metric: str, mode: str, n_boot: int = N_BOOT
) -> EffectsInfo:
    """Every searched factor's effects on the objective, modes and divergence."""
    outcomes = seed_outcomes(trials, metric)
    effects = []
    for factor in params:
        levels, labels = parameter_bins(trials.loc[outcomes.index, factor], MAX_BINS)
        if len(labels) < 2:
            continue
        defined = levels >= 0  # a conditional field (clip, penalty_weight) only where it applies
        rows = outcomes[defined].reset_index(drop=True)
        effects += factor_effects(rows, levels[defined], labels, factor, n_boot)
    return EffectsInfo(effects, metric, mode, n_boot)


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
        return f"{head}: the interval includes no effect, the data cannot tell them apart."
    up = effect.estimate > 0
    if effect.outcome == "objective":
        word = "better" if up == (mode == "max") else "worse"
    elif effect.outcome == "modes":
        word = "more modes" if up else "fewer modes"
    else:
        word = "diverges more often" if up else "diverges less often"
    return f"{head}: {word}, the interval excludes no effect."


def plot_effects(info: EffectsInfo) -> go.Figure:
    """One panel per outcome: each level's effect against its baseline with its interval."""
    outcomes = [o for o in OUTCOMES if any(e.outcome == o for e in info.effects)]
    if not outcomes:
        return empty_figure("No searched factor has two levels with seeds that ran.")
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
    return base_layout(fig, "Effect of each searched factor (bootstrap 95 % intervals)", height)


def _marker_color(effect: Effect) -> str:
    return NO_EFFECT_GREY if includes_no_effect(effect) else color(1)


def effect_sentences(info: EffectsInfo) -> list[str]:
    """The effects in words, the objective's first."""
    order = {o: i for i, o in enumerate(OUTCOMES)}
    ranked = sorted(info.effects, key=lambda e: (order[e.outcome], e.factor, e.level))
    return [describe(e, info.mode) for e in ranked]


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
    """Rank 1 against the next `top - 1` configurations, by a bootstrap over their seeds."""
    outcomes = seed_outcomes(trials, metric)
    by_config = {c: g["objective"].to_numpy() for c, g in outcomes.groupby("config_id")}
    ranked = [c for c in stats.index if c in by_config][:top]
    if len(ranked) < 2:
        return Verdict([], 0, "Only one configuration ran: there is nothing to rank it against.")
    rng = np.random.default_rng(BOOT_SEED)
    best = seed_bootstrap(by_config[ranked[0]], rng, N_BOOT)
    tail = (1 - LEVEL) / 2
    ties = []
    for rank, config in enumerate(ranked[1:], start=2):
        diff = best - seed_bootstrap(by_config[config], rng, N_BOOT)
        lo, hi = np.quantile(diff, [tail, 1 - tail])
        if lo <= 0 <= hi:
            ties.append(rank)
    return Verdict(ties, len(ranked) - 1, _verdict_sentence(ties, len(ranked) - 1))


def _verdict_sentence(ties: list[int], compared: int) -> str:
    if not ties:
        return (
            f"The best configuration is better than each of the next {compared} "
            "(95 % bootstrap intervals over their seeds exclude no difference)."
        )
    ranks = ", ".join(f"#{r}" for r in ties)
    return (
        f"No winner: the seeds cannot separate #1 from {ranks} (the 95 % bootstrap interval "
        "of each difference includes none). Treat them as tied, or run more seeds."
    )
