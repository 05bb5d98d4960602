"""Pre-registered comparisons of a few seeds per level: tests that can fail, and say how much.

A claim about a sweep's levels (pack sizes, losses) is checked here with tests fixed before the
data are seen, and every function is deterministic (seeded generators):

- `permutation_test`: one-sided two-sample permutation test of the difference in means. Every
  split of the pooled seeds is enumerated when there are at most `EXACT_MAX` of them (5 + 5
  seeds: 252; 10 + 10: 184,756), else `N_MONTE_CARLO` random splits are drawn, and the p-value
  is (1 + splits at least as extreme) / (1 + splits drawn).
- `holm`: Holm's step-down adjustment of the p-values of several comparisons (levels), which
  keeps the chance of any false rejection at most α.
- `median_difference`, `cliffs_delta`: effect sizes with percentile bootstrap intervals (95 %),
  seeds resampled with replacement within each level.
- `equivalence`: two one-sided tests (TOST) that the shift Δ lies within ± `margin`, under
  the location-shift model (x = y + Δ in distribution, so Δ is the median difference, and the
  mean difference too): the permutation test of x + margin against y (H0: Δ ≤ −margin) and of
  x − margin against y (H0: Δ ≥ margin), each on the difference in means (more powerful than
  medians on a few seeds, and not blind on tied values); p = the larger of the two. A small p
  says "equivalent within margin"; a large one says nothing.
- `sign_test`: one-sided exact binomial test that more than half of a level's seeds succeed.
- `power`: seeds per level that detect the smallest effect of interest at 80 % power, by
  simulation from the observed spread (the levels' centred values, resampled).

Every test works on arrays with leading batch dimensions, so the null simulations of the tests
(tests/test_stats.py) run thousands of data sets at once.
"""

import math
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
from scipy.stats import binom

ALPHA = 0.05
LEVEL = 0.95  # bootstrap intervals
EXACT_MAX = 200_000  # splits enumerated exactly up to this many
N_MONTE_CARLO = 10_000  # random splits drawn beyond that
N_BOOT = 2_000
SEED = 0
TARGET_POWER = 0.8
POWER_SEEDS = (3, 5, 8, 10, 15, 20, 30, 50)  # seeds per level the power line tries
POWER_SIMULATIONS = 400
POWER_SPLITS = 400  # random splits per simulated data set (exact where fewer)
_TIE = 1e-9  # relative: splits whose statistic equals the observed one count as extreme


class PermutationTest(NamedTuple):
    statistic: float  # observed statistic (mean or median of x minus that of y)
    p: float  # one-sided p-value
    exact: bool  # every split enumerated (else Monte Carlo)
    n_splits: int


class Interval(NamedTuple):
    estimate: float
    lo: float  # bootstrap (1 − LEVEL)/2 quantile
    hi: float


class Equivalence(NamedTuple):
    margin: float
    estimate: float  # median(x) − median(y)
    p_lower: float  # H0: difference ≤ −margin
    p_upper: float  # H0: difference ≥ margin
    p: float  # max of the two: small means equivalent within ± margin


NO_SPREAD = "no spread: every value the same"


class Power(NamedTuple):
    effect: float  # the smallest effect of interest
    alpha: float  # the level each simulated test is judged at
    seeds: int | None  # seeds per level first reaching TARGET_POWER; None: more than tried
    curve: tuple[tuple[int, float], ...]  # (seeds per level, estimated power)
    model: str = "simulated from the observed spread"

    def line(self, what: str, unit: str = "seeds") -> str:
        """One sentence: how many seeds (or other `unit`s) per level `what` needs."""
        if not self.curve:
            return f"power: no values to simulate {what} from"
        if self.model == NO_SPREAD:
            return (f"power: not computed for {what}: every seed had the same value (a "
                    "ceiling or a floor: no spread to simulate a shift from)")  # fmt: skip
        tried = ", ".join(f"{n}: {p:.0%}" for n, p in self.curve)
        need = f"{self.seeds}" if self.seeds else f"more than {self.curve[-1][0]}"
        return (f"power: {need} {unit} per level detect {what} at {TARGET_POWER:.0%} power "
                f"(α {self.alpha:.3g}; {self.model}; {unit}: power {tried})")  # fmt: skip


# --- permutation tests --------------------------------------------------------------------------


def split_masks(
    n_x: int, n_y: int, n_random: int = N_MONTE_CARLO, seed: int = SEED, exact_max: int = EXACT_MAX
):
    """(masks, exact): boolean (splits, n_x + n_y) rows marking the x-group of each split;
    every split when there are at most `exact_max`, else `n_random` seeded random ones."""
    n = n_x + n_y
    total = math.comb(n, n_x)
    if total <= exact_max:
        masks = np.zeros((total, n), dtype=bool)
        chosen = np.fromiter(combinations(range(n), n_x), dtype=(np.intp, n_x), count=total)
        np.put_along_axis(masks, chosen, True, axis=1)
        return masks, True
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_random, n)), axis=1)[:, :n_x]
    masks = np.zeros((n_random, n), dtype=bool)
    np.put_along_axis(masks, order, True, axis=1)
    return masks, False


def _split_statistics(pooled: np.ndarray, masks: np.ndarray, n_x: int, statistic: str):
    """The statistic (x-group minus y-group) of every split: shape (..., splits)."""
    if statistic == "mean":
        n_y = pooled.shape[-1] - n_x
        sum_x = pooled @ masks.T.astype(float)
        return sum_x / n_x - (pooled.sum(-1, keepdims=True) - sum_x) / n_y
    order = np.argsort(~masks, axis=1, kind="stable")  # x-group indices first
    grouped = pooled[..., order]  # (..., splits, n)
    return np.median(grouped[..., :n_x], -1) - np.median(grouped[..., n_x:], -1)


def permutation_pvalues(
    x: np.ndarray,
    y: np.ndarray,
    statistic: str = "mean",
    n_random: int = N_MONTE_CARLO,
    seed: int = SEED,
    exact_max: int = EXACT_MAX,
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Batched one-sided permutation test that x is larger than y: x (..., n_x), y (..., n_y).
    Returns (observed statistic, p-value), both shaped (...), whether exact, and the splits."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n_x = x.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    pooled = np.concatenate([np.broadcast_to(x, (*lead, n_x)),
                             np.broadcast_to(y, (*lead, y.shape[-1]))], -1)  # fmt: skip
    masks, exact = split_masks(n_x, y.shape[-1], n_random, seed, exact_max)
    stats = _split_statistics(pooled, masks, n_x, statistic)
    observed = _split_statistics(pooled, _observed_mask(n_x, y.shape[-1]), n_x, statistic)
    tol = _TIE * (1 + np.abs(observed))
    extreme = (stats >= observed - tol).sum(-1)
    p = extreme / len(masks) if exact else (1 + extreme) / (1 + len(masks))
    return observed[..., 0], p, exact, len(masks)


def _observed_mask(n_x: int, n_y: int) -> np.ndarray:
    return np.concatenate([np.ones(n_x, bool), np.zeros(n_y, bool)])[None]


def permutation_test(
    x: Sequence[float], y: Sequence[float], alternative: str = "greater", statistic: str = "mean"
) -> PermutationTest:
    """One-sided permutation test that x is `alternative` ("greater" or "less") than y."""
    sign = {"greater": 1.0, "less": -1.0}[alternative]
    observed, p, exact, n = permutation_pvalues(sign * np.asarray(x), sign * np.asarray(y),
                                                statistic)  # fmt: skip
    return PermutationTest(float(sign * observed), float(p), exact, n)


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis: reject where ≤ α."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, -1) * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, -1)
    return adjusted


# --- effect sizes -------------------------------------------------------------------------------


def cliffs_delta_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cliff's δ = P(X > Y) − P(X < Y) over all pairs, batched over leading dimensions."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return np.sign(x[..., :, None] - y[..., None, :]).mean((-2, -1))


def _bootstrap(
    x: Sequence[float], y: Sequence[float], effect: Callable, n_boot: int, seed: int
) -> Interval:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, len(x), (n_boot, len(x)))]
    ys = y[rng.integers(0, len(y), (n_boot, len(y)))]
    draws = effect(xs, ys)
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(effect(x, y)), float(lo), float(hi))


def _median_diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.median(x, -1) - np.median(y, -1)


def median_difference(
    x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = SEED
) -> Interval:
    """median(x) − median(y) with its percentile bootstrap interval."""
    return _bootstrap(x, y, _median_diff, n_boot, seed)


def cliffs_delta(
    x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = SEED
) -> Interval:
    """Cliff's δ of x against y (−1 … 1; 0: neither tends to be larger) with its interval."""
    return _bootstrap(x, y, cliffs_delta_values, n_boot, seed)


# --- equivalence and proportions ----------------------------------------------------------------


def equivalence_pvalues(
    x: np.ndarray,
    y: np.ndarray,
    margin: float,
    n_random: int = N_MONTE_CARLO,
    exact_max: int = EXACT_MAX,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched TOST (see the module doc): (p_lower, p_upper), each shaped (...)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _, p_lower, _, _ = permutation_pvalues(x + margin, y, "mean", n_random, SEED, exact_max)
    _, p_upper, _, _ = permutation_pvalues(margin - x, -y, "mean", n_random, SEED, exact_max)
    return p_lower, p_upper


def equivalence(x: Sequence[float], y: Sequence[float], margin: float) -> Equivalence:
    """Whether the shift of x against y lies within ± margin (TOST; small p: equivalent);
    `estimate` is median(x) − median(y)."""
    p_lower, p_upper = equivalence_pvalues(np.asarray(x), np.asarray(y), margin)
    estimate = float(np.median(x) - np.median(y))
    return Equivalence(margin, estimate, float(p_lower), float(p_upper),
                       float(max(p_lower, p_upper)))  # fmt: skip


def sign_test(successes: int | np.ndarray, n: int | np.ndarray, share: float = 0.5):
    """P(at least `successes` of `n`) when each succeeds with probability `share`: the exact
    one-sided p-value that the success rate exceeds `share`."""
    return binom.sf(np.asarray(successes) - 1, n, share)


# --- power --------------------------------------------------------------------------------------


def residuals(groups: Sequence[Sequence[float]]) -> np.ndarray:
    """Every level's values minus its median: the observed spread, location removed."""
    parts = [np.asarray(g, float) - np.median(g) for g in groups if len(g)]
    return np.concatenate(parts) if parts else np.zeros(0)


def power(
    spread: np.ndarray,
    effect: float,
    reject: Callable[[np.ndarray, np.ndarray], np.ndarray],
    alpha: float = ALPHA,
    seeds: Sequence[int] = POWER_SEEDS,
    n_sim: int = POWER_SIMULATIONS,
    seed: int = SEED,
) -> Power:
    """Seeds per level at which `reject(x, y)` (batched: (n_sim, n) each → boolean (n_sim,))
    rejects in TARGET_POWER of simulated data sets, x and y drawn from `spread` with x shifted
    by `effect`."""
    rng = np.random.default_rng(seed)
    spread = np.asarray(spread, dtype=float)
    if not len(spread):
        return Power(effect, alpha, None, ())
    if not spread.any():  # any shift would be "detected" by 2 seeds: a number that misleads
        return Power(effect, alpha, None, ((0, 0.0),), NO_SPREAD)
    curve = []
    for n in seeds:
        x = rng.choice(spread, (n_sim, n)) + effect
        y = rng.choice(spread, (n_sim, n))
        curve.append((n, float(np.mean(reject(x, y)))))
        if curve[-1][1] >= TARGET_POWER:
            break
    found = next((n for n, p in curve if p >= TARGET_POWER), None)
    return Power(effect, alpha, found, tuple(curve))


def shift_rejects(alpha: float, alternative: str = "greater") -> Callable:
    """A `power` criterion: the one-sided permutation test (means) rejects at `alpha`."""
    sign = 1.0 if alternative == "greater" else -1.0

    def reject(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        _, p, _, _ = permutation_pvalues(sign * x, sign * y, "mean", POWER_SPLITS, SEED,
                                         POWER_SPLITS)  # fmt: skip
        return p <= alpha

    return reject


def equivalence_rejects(alpha: float, margin: float) -> Callable:
    """A `power` criterion: TOST declares equivalence within ± margin at `alpha`."""

    def reject(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        p_lower, p_upper = equivalence_pvalues(x, y, margin, POWER_SPLITS, POWER_SPLITS)
        return np.maximum(p_lower, p_upper) <= alpha

    return reject


def sign_power(share: float, alpha: float = ALPHA, seeds: Sequence[int] = POWER_SEEDS) -> Power:
    """Seeds per level at which the sign test (H0: success rate ≤ 1/2) rejects with
    TARGET_POWER when each seed succeeds with probability `share` (exact binomial)."""
    curve = []
    for n in seeds:
        k = np.arange(n + 1)
        rejects = sign_test(k, n) <= alpha
        curve.append((n, float(binom.pmf(k, n, share)[rejects].sum())))
        if curve[-1][1] >= TARGET_POWER:
            break
    found = next((n for n, p in curve if p >= TARGET_POWER), None)
    return Power(share, alpha, found, tuple(curve), "exact binomial")
