"""FID∞ against a closed form, and KID's spread over its subsets."""

import math

import pytest
import torch

from ganlab.metrics.fid_infinity import (
    features_to_fid_infinity,
    fid_infinity_sizes,
    fit_infinity,
)
from ganlab.metrics.frechet import Statistics, features_to_statistics, statistics_to_frechet
from ganlab.metrics.kid import kernel_sums_to_kid, kernel_sums_to_kid_std


def test_sizes_are_fractions_of_n_fake():
    assert fid_infinity_sizes(1000) == (200, 400, 600, 800, 1000)
    assert fid_infinity_sizes(6) == (2, 4, 5, 6)  # distinct, at least 2


def test_fit_recovers_an_exact_line_in_one_over_n():
    sizes = (200, 400, 600, 800, 1000)
    values = [torch.tensor(8.3 + 2125.0 / n, dtype=torch.float64) for n in sizes]
    assert float(fit_infinity(sizes, values)) == pytest.approx(8.3, rel=1e-12)
    two = (100, 300)  # through two points: f = a + b/n exactly
    assert fit_infinity(two, [torch.tensor(3.0), torch.tensor(1.0)]) == pytest.approx(0.0)


def test_fid_infinity_of_two_gaussians_approaches_the_closed_form():
    """Real: the population statistics of N(0, I_d); fakes: n draws of N(μ, I_d). The Fréchet
    distance is |μ|² (4.0 here), and FID at n fakes is biased up, mostly by the square root of
    the sample covariance's spread eigenvalues (of the order d² / 4n: about 1 at d = 64,
    n = 1,000). FID∞ must remove most of it. Tolerances are wide: any machine's draws pass,
    a broken fit (or none) does not."""
    d, n = 64, 1000
    mu = torch.full((d,), 0.25, dtype=torch.float64)
    truth = float(mu.square().sum())
    real = Statistics(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    errors_n, errors_inf = [], []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        fake = mu + torch.randn(n, d, generator=g, dtype=torch.float64)
        at_n = float(statistics_to_frechet(real, features_to_statistics(fake)))
        inf = float(features_to_fid_infinity(real, fake, fid_infinity_sizes(n)))
        errors_n.append(at_n - truth)
        errors_inf.append(inf - truth)
    bias_n, bias_inf = sum(errors_n) / 5, sum(errors_inf) / 5
    assert bias_n > 0.5  # measured 1.14
    assert bias_inf == pytest.approx(0.0, abs=0.25)  # measured -0.04
    assert abs(bias_inf) < bias_n / 4


def test_kid_std_is_the_spread_of_the_subsets():
    m = 4  # per-subset MMD² = (rw + fw) / 12 − 2 c / 16
    real_within = torch.tensor([12.0, 36.0], dtype=torch.float64)  # 1, 3
    fake_within = torch.zeros(2, dtype=torch.float64)
    cross = torch.zeros(2, dtype=torch.float64)
    assert float(kernel_sums_to_kid(real_within, fake_within, cross, m)) == pytest.approx(2.0)
    std = kernel_sums_to_kid_std(real_within, fake_within, cross, m)
    assert float(std) == pytest.approx(1.0)  # population std of (1, 3), as torch-fidelity
    assert math.isfinite(float(std))
