"""KID against a brute-force loop, on every route `subset_kernel_sums` can take."""

import numpy as np
import pytest
import torch

from ganlab.metrics.kid import features_to_kid, kid_subset_size, kid_subsets


def brute_force_kid(real, fake, n_subsets: int, seed: int = 0) -> float:
    """The unbiased MMD² of torch-fidelity, from whole kernel blocks built pair by pair."""
    real, fake = real.double().numpy(), fake.double().numpy()
    d = real.shape[1]
    m = kid_subset_size(len(real), len(fake))
    idx_real = kid_subsets(len(real), m, n_subsets, seed).numpy()
    idx_fake = kid_subsets(len(fake), m, n_subsets, seed + 1).numpy()

    def kernel(a, b):  # every pair by broadcasting, no matrix product
        return ((a[:, None, :] * b[None, :, :]).sum(-1) / d + 1.0) ** 3

    off_diagonal = ~np.eye(m, dtype=bool)
    values = []
    for ir, jf in zip(idx_real, idx_fake, strict=True):
        x, y = real[ir], fake[jf]
        xx = kernel(x, x)[off_diagonal].sum()
        yy = kernel(y, y)[off_diagonal].sum()
        xy = kernel(x, y).sum()
        values.append(xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m))
    return float(np.mean(values))


@pytest.mark.parametrize(
    ("d", "n_real", "n_fake", "n_subsets"),
    [
        (2, 30, 25, 4),  # explicit cubic features
        (12, 30, 25, 4),  # whole kernel matrix, every fake subset is all the fakes
        (12, 1100, 1050, 2),  # whole kernel matrix, subsets of 1000
        (12, 1100, 1050, 1),  # one kernel block per subset
    ],
)
def test_matches_brute_force(d, n_real, n_fake, n_subsets):
    g = torch.Generator().manual_seed(d + n_real)
    real = torch.randn(n_real, d, generator=g)
    fake = 0.8 * torch.randn(n_fake, d, generator=g) + 0.3
    expected = brute_force_kid(real, fake, n_subsets)
    assert features_to_kid(real, fake, n_subsets) == pytest.approx(expected, rel=1e-9)


def test_subsets_are_seeded_and_without_replacement():
    a, b = kid_subsets(50, 20, 5, seed=3), kid_subsets(50, 20, 5, seed=3)
    assert torch.equal(a, b)
    assert all(len(set(row.tolist())) == 20 for row in a)


def test_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g)
    same = torch.randn(2000, 8, generator=g)
    shifted = torch.randn(2000, 8, generator=g) + 0.5
    # sampling noise of the estimate here is ~3e-3; a 0.5 shift in every coordinate gives ~1.1
    assert abs(features_to_kid(real, same)) < 1e-2
    assert features_to_kid(real, shifted) > 0.5
