"""FID∞: the Fréchet distance extrapolated to infinitely many generated samples.

FID is biased upward by a term that falls as 1/n in the number of fakes n (Chong & Forsyth
2020, "Effectively Unbiased FID and Inception Score and where to find them"): on digits, FID at
1,000 fakes is mostly that bias (fitted 8.3 + 2125/n). FID∞ measures FID on nested subsets of the
fakes of sizes `fid_infinity_sizes(n_fake)` (fractions `FID_INF_FRACTIONS` of them; the fakes
are i.i.d., so a prefix is a random subset), fits FID(n) = FID∞ + b/n by least squares and
reports the intercept. Chong & Forsyth fit 15 sizes from 5,000 to 50,000; a protocol records
its sizes (`fid_inf_n`). Only the fakes' bias is removed: the reference's own (359 held-out
digits) stays, and `fid_floor` shows it.
"""

from collections.abc import Sequence

from torch import Tensor

from ganlab.metrics.frechet import Statistics, features_to_statistics, statistics_to_frechet

FID_INF_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def fid_infinity_sizes(n_fake: int) -> tuple[int, ...]:
    """The subset sizes FID∞ is fitted on: fractions of `n_fake`, distinct, at least 2."""
    return tuple(sorted({max(2, round(f * n_fake)) for f in FID_INF_FRACTIONS}))


def intercept_weights(sizes: Sequence[int]) -> list[float]:
    """w with Σ w_i f_i = the intercept of the least-squares line of f against 1/n: the fit is
    linear in the values, so its weights are plain numbers (nothing copied to a card)."""
    u = [1.0 / n for n in sizes]
    mean = sum(u) / len(u)
    spread = sum((x - mean) ** 2 for x in u)
    return [1 / len(u) - mean * (x - mean) / spread for x in u]


def fit_infinity(sizes: Sequence[int], values: Sequence[Tensor]) -> Tensor:
    """Intercept of the least-squares line of `values` (0-d tensors) against 1/`sizes`."""
    return sum(w * v for w, v in zip(intercept_weights(sizes), values, strict=True))


def features_to_fid_infinity(
    real: Statistics,
    fake_features: Tensor,
    sizes: tuple[int, ...],
    real_cov_sqrt: Tensor | None = None,
    full: Tensor | None = None,
) -> Tensor:
    """FID∞ of `fake_features` (n, d) against `real`, fitted on the first `sizes` fakes.
    `full`: the FID of all n fakes where it was measured already (one distance fewer)."""
    values = [
        full if full is not None and n == len(fake_features)
        else statistics_to_frechet(real, features_to_statistics(fake_features[:n]), real_cov_sqrt)
        for n in sizes
    ]  # fmt: skip
    return fit_infinity(sizes, values)
