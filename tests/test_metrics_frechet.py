"""Fréchet distance against closed forms and against torchmetrics' implementation."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from ganlab.metrics.frechet import Statistics, features_to_statistics, statistics_to_frechet


def _rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q.double()


def _stats(mean, cov) -> Statistics:
    return Statistics(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov).double())


def test_commuting_covariances_match_closed_form():
    # Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ: Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ (√a − √b)²
    d = 6
    q = _rotation(d, 0)
    a = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 4.0], dtype=torch.float64)
    b = torch.tensor([1.5, 0.2, 2.0, 1.0, 0.9, 0.3], dtype=torch.float64)
    mu1 = torch.arange(d, dtype=torch.float64)
    mu2 = mu1.flip(0) * 0.5
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    real = _stats(mu1, q @ torch.diag(a) @ q.T)
    fake = _stats(mu2, q @ torch.diag(b) @ q.T)
    assert statistics_to_frechet(real, fake) == pytest.approx(expected, rel=1e-6)


def test_non_commuting_2d_covariances_match_closed_form():
    # For 2×2 M with positive eigenvalues, Tr √M = √(Tr M + 2 √det M).
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    m = s1 @ s2
    trace_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expected = 1.0**2 + 2.0**2 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    value = statistics_to_frechet(_stats([0.0, 0.0], s1), _stats([1.0, -2.0], s2))
    assert value == pytest.approx(expected, rel=1e-6)


def test_singular_covariance_is_finite_and_exact():
    # Σ1 = diag(1, 0), Σ2 = diag(4, 9): Tr(Σ1Σ2)^½ = 2, so d² = 1 + 13 − 4
    value = statistics_to_frechet(
        _stats([0, 0], np.diag([1.0, 0.0])), _stats([0, 0], np.diag([4.0, 9.0]))
    )
    assert value == pytest.approx(10.0, rel=1e-9)


def test_more_dimensions_than_samples():
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(20, 64, generator=torch.Generator().manual_seed(2)) + 0.1
    sx, sy = features_to_statistics(x), features_to_statistics(y)
    assert math.isfinite(statistics_to_frechet(sx, sy))
    assert statistics_to_frechet(sx, sx) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics_on_random_statistics(seed):
    g = torch.Generator().manual_seed(seed)
    d = 32
    a = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    b = torch.randn(d, 3 * d, generator=g, dtype=torch.float64)
    real = Statistics(torch.randn(d, generator=g, dtype=torch.float64), a @ a.T / (2 * d))
    fake = Statistics(torch.randn(d, generator=g, dtype=torch.float64), b @ b.T / (3 * d))
    expected = float(_compute_fid(real.mean, real.cov, fake.mean, fake.cov))
    assert statistics_to_frechet(real, fake) == pytest.approx(expected, rel=1e-6)


def test_statistics_match_numpy():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(3))
    stats = features_to_statistics(x)
    assert stats.mean.dtype == torch.float64
    assert stats.mean.numpy() == pytest.approx(x.double().numpy().mean(0), rel=1e-12)
    assert stats.cov.numpy() == pytest.approx(np.cov(x.double().numpy().T), rel=1e-12)
