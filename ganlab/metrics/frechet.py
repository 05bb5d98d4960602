"""Fréchet distance between the Gaussians fitted to two feature sets (FID on any features).

    d² = |μ1 − μ2|² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^½

Tr (Σ1 Σ2)^½ is the sum of the square roots of the eigenvalues of Σ1 Σ2, which are those of the
symmetric positive semi-definite S Σ2 S with S = Σ1^½ (AB and BA share their spectrum). Using
the symmetric form and `eigh` in float64 keeps the spectrum real and non-negative up to rounding
(clamped to 0), so singular covariances (fewer samples than dimensions, dead ReLU features) need
none of the eps·I offsets that `scipy.linalg.sqrtm` of the non-symmetric product needs.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Statistics:
    """Mean and covariance (float64) of a feature set."""

    mean: Tensor
    cov: Tensor


def features_to_statistics(features: Tensor) -> Statistics:
    """Mean and unbiased covariance (float64) of `features`, shape (n, d), n ≥ 2."""
    x = features.to(torch.float64)
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (len(x) - 1)
    return Statistics(mean, cov)


def covariance_sqrt(cov: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix (negative rounding noise in the spectrum → 0)."""
    values, vectors = torch.linalg.eigh(cov.to(torch.float64))
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def statistics_to_frechet(
    real: Statistics, fake: Statistics, real_cov_sqrt: Tensor | None = None
) -> Tensor:
    """Fréchet distance between N(real) and N(fake), a 0-d float64 tensor on their device;
    pass `real_cov_sqrt` to reuse it."""
    s = covariance_sqrt(real.cov) if real_cov_sqrt is None else real_cov_sqrt
    middle = s @ fake.cov.to(torch.float64) @ s
    middle = (middle + middle.T) / 2  # exact symmetry for eigvalsh
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    mean_term = (real.mean - fake.mean).square().sum()
    value = mean_term + real.cov.trace() + fake.cov.trace() - 2 * trace_sqrt
    # Rounding can leave a distance of identical statistics a hair below zero.
    return value.clamp(min=0.0)
