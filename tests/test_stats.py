"""analysis.stats: closed forms on hand-made samples, and each test's false-positive rate on
null data, simulated with a seeded generator and vectorised (each simulation: well under 1 s).

Bands: a rate estimated from S simulations has binomial standard error √(r(1−r)/S); every
simulated rate is asserted within 4 standard errors of the test's exact size, or below α plus
4 standard errors where a test is conservative by design (intersections of tests, TOST), so a
correct test fails one run in some 30,000 and a test off by a few points of α fails at once.
"""

import math

import numpy as np
import pytest
from scipy.stats import binom

from analysis import stats

ALPHA = stats.ALPHA


def _band(rate: float, n: int) -> float:
    return 4 * math.sqrt(rate * (1 - rate) / n)


# --- closed forms -------------------------------------------------------------------------------


def test_exact_permutation_pvalue_by_hand():
    # x = {1, 3}, y = {0, 2}: the six splits' x-sums are 4 (observed), 1, 3, 3, 5, 2, so the
    # mean differences are 1, -2, 0, 0, 2, -1 and two of six are at least the observed 1.
    test = stats.permutation_test([1, 3], [0, 2])
    assert test.exact and test.n_splits == 6
    assert test.statistic == pytest.approx(1.0)
    assert test.p == pytest.approx(2 / 6)
    assert stats.permutation_test([1, 3], [0, 2], "less").p == pytest.approx(5 / 6)
    # complete separation of 3 + 3: only the observed split of 20 is as extreme
    assert stats.permutation_test([3, 4, 5], [0, 1, 2]).p == pytest.approx(1 / 20)


def test_monte_carlo_permutation_when_splits_are_many():
    x, y = np.arange(15.0) + 100, np.arange(15.0)  # C(30, 15) = 155 million splits
    test = stats.permutation_test(x, y)
    assert not test.exact and test.n_splits == stats.N_MONTE_CARLO
    assert test.p == pytest.approx(1 / (stats.N_MONTE_CARLO + 1))


def test_holm_on_known_pvalues():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1


def test_cliffs_delta_by_hand():
    # 1 vs (2, 2, 0): -1 -1 +1; 2 vs: 0 0 +1; 3 vs: +1 +1 +1 -> 3 of 9 pairs net
    assert stats.cliffs_delta([1, 2, 3], [2, 2, 0]).estimate == pytest.approx(1 / 3)
    separated = stats.cliffs_delta([5, 6, 7], [1, 2, 3])
    assert (separated.estimate, separated.lo, separated.hi) == (1.0, 1.0, 1.0)


def test_median_difference_and_its_interval():
    diff = stats.median_difference([1, 2, 3, 10], [0, 1, 1])
    assert diff.estimate == pytest.approx(2.5 - 1)
    assert diff.lo <= diff.estimate <= diff.hi
    constant = stats.median_difference([4, 4, 4], [1, 1])
    assert (constant.estimate, constant.lo, constant.hi) == (3.0, 3.0, 3.0)


def test_equivalence_by_hand():
    # x + 10 = (10, 11, 12) against y = (0, 1, 2): only the observed split of 20 has a mean
    # difference as large as 10 (any swap lowers it by at least 9), and the same by symmetry
    # for x - 10 against y.
    test = stats.equivalence([0, 1, 2], [0, 1, 2], margin=10.0)
    assert test.p_lower == pytest.approx(1 / 20) and test.p_upper == pytest.approx(1 / 20)
    assert test.p == pytest.approx(1 / 20) and test.estimate == 0.0
    # x + 1 = (1, 2, 3) against (0, 1, 2): the pooled values sum to 9, so a split whose
    # x-sum is s has mean difference (2s - 9)/3, at least the observed 1 when s >= 6: the five
    # splits holding 3 and a 2 (3 2 1, 3 2 1', 3 2' 1, 3 2' 1', 3 2 2'), and none without 3.
    narrow = stats.equivalence([0, 1, 2], [0, 1, 2], margin=1.0)
    assert narrow.p_lower == pytest.approx(5 / 20) and narrow.p == pytest.approx(5 / 20)
    far = stats.equivalence([0, 1, 2], [20, 21, 22], margin=10.0)
    assert far.p_lower == pytest.approx(1.0) and far.p == pytest.approx(1.0)  # 20 below


def test_sign_test_and_its_power_in_closed_form():
    assert float(stats.sign_test(3, 3)) == pytest.approx(1 / 8)
    assert float(stats.sign_test(9, 10)) == pytest.approx(11 / 1024)
    # at α 0.05 ten seeds need 9 successes: power 0.9^10 + 10 · 0.9^9 · 0.1
    power = stats.sign_power(0.9, 0.05, seeds=(10,))
    assert power.curve == ((10, pytest.approx(0.9**10 + 10 * 0.9**9 * 0.1)),)
    assert power.seeds is None  # 0.736 < 0.8


# --- false-positive rates on null data ----------------------------------------------------------


def test_permutation_test_false_positive_rate_exact():
    """5 + 5 seeds from one distribution: the exact test's p-values are k/252, so it rejects at
    α 0.05 with probability exactly 12/252."""
    rng = np.random.default_rng(1)
    n_sim = 4000
    x, y = rng.standard_normal((2, n_sim, 5))
    size = math.floor(ALPHA * 252) / 252
    for sign in (1, -1):  # both alternatives
        _, p, exact, _ = stats.permutation_pvalues(sign * x, sign * y)
        assert exact
        assert np.mean(p <= ALPHA) == pytest.approx(size, abs=_band(size, n_sim))


def test_permutation_test_false_positive_rate_monte_carlo():
    rng = np.random.default_rng(2)
    n_sim, n_random = 1000, 999
    x, y = rng.standard_normal((2, n_sim, 12))  # C(24, 12) = 2.7 million splits
    _, p, exact, _ = stats.permutation_pvalues(x, y, n_random=n_random)
    assert not exact
    size = math.floor(ALPHA * (n_random + 1)) / (n_random + 1)  # (1 + k) / (1 + B) ≤ α
    assert np.mean(p <= ALPHA) == pytest.approx(size, abs=_band(size, n_sim))


def test_holm_family_wise_rate_on_null_levels():
    """Three levels against one shared baseline, all from one distribution (the packing
    layout): the chance that Holm rejects any of the three stays at most α, and the
    correction is not so strict that it rejects almost never (Bonferroni-like: near α)."""
    rng = np.random.default_rng(3)
    n_sim = 3000
    levels = rng.standard_normal((4, n_sim, 5))
    p = np.stack([stats.permutation_pvalues(levels[k], levels[0])[1] for k in (1, 2, 3)], -1)
    rate = np.mean((stats.holm(p) <= ALPHA).any(-1))
    assert rate <= ALPHA + _band(ALPHA, n_sim)
    assert rate >= ALPHA / 2
    assert np.mean((p <= ALPHA).any(-1)) > 2 * ALPHA  # uncorrected, it would be far above


def test_equivalence_false_positive_rate_at_the_margin():
    """The true shift exactly at the margin (the least favourable null of TOST): declaring
    equivalence happens at most α of the time, and close to it when the far side is clear
    (then TOST is one exact test of 5 + 5 seeds: size 12/252)."""
    rng = np.random.default_rng(4)
    n_sim, margin = 4000, 3.0  # margin 3 σ: the test on the far side always rejects
    x = rng.standard_normal((n_sim, 5))
    y = rng.standard_normal((n_sim, 5)) - margin  # x = y + margin in distribution
    p_lower, p_upper = stats.equivalence_pvalues(x, y, margin)
    rate = np.mean(np.maximum(p_lower, p_upper) <= ALPHA)
    assert np.mean(p_lower <= ALPHA) > 0.99
    size = 12 / 252
    assert rate <= size + _band(size, n_sim)
    assert rate >= size - _band(size, n_sim) - 0.01  # at most the far side's 1 % misses


def test_sign_test_false_positive_rate():
    rng = np.random.default_rng(5)
    n_sim, n = 4000, 10
    wins = rng.binomial(n, 0.5, n_sim)
    size = float(binom.sf(8, n, 0.5))  # 9 or 10 of 10: 11/1024
    assert np.mean(stats.sign_test(wins, n) <= ALPHA) == pytest.approx(
        size, abs=_band(size, n_sim)
    )


def test_power_simulation_is_the_size_without_an_effect_and_grows_with_one():
    spread = np.random.default_rng(6).standard_normal(40)
    null = stats.power(spread, 0.0, stats.shift_rejects(ALPHA), seeds=(5,), n_sim=2000)
    assert null.curve[0][1] == pytest.approx(12 / 252, abs=_band(12 / 252, 2000))
    big = stats.power(spread, 3.0, stats.shift_rejects(ALPHA), seeds=(2, 3, 5))
    assert big.curve[0] == (2, 0.0)  # 2 + 2 seeds: the smallest p is 1/6 > α
    assert big.seeds == 3 and big.curve[1][1] > 0.8  # 3 σ apart: 1/20 reached mostly


def test_power_is_not_claimed_from_seeds_that_all_had_one_value():
    """Every seed at 25 of 25 modes: a shift of a spread of 0 is "detected" by any test, so the
    line says that no power can be read from these seeds instead of printing 100 %."""
    ceiling = stats.residuals([[25.0] * 10, [25.0] * 10])
    found = stats.power(ceiling, 1.0, stats.shift_rejects(ALPHA))
    assert found.seeds is None
    assert "every seed had the same value" in found.line("a gain of 1 mode")
