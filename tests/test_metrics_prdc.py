"""PRDC against a brute-force loop over points, on the k-d tree and the blockwise routes."""

import math

import pytest
import torch

from ganlab.metrics.prdc import features_to_prdc, knn_radii


def _distance(a, b) -> float:
    return math.sqrt(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True)))


def brute_force_prdc(real, fake, k: int) -> dict[str, float]:
    """Naeem et al.'s definitions, one pair of points at a time."""

    def radii(points):
        out = []
        for i, p in enumerate(points):
            others = sorted(_distance(p, q) for j, q in enumerate(points) if j != i)
            out.append(others[k - 1])
        return out

    real_r, fake_r = radii(real), radii(fake)
    d = [[_distance(r, f) for f in fake] for r in real]
    n_real, n_fake = len(real), len(fake)
    holding = [sum(d[i][j] < real_r[i] for i in range(n_real)) for j in range(n_fake)]
    return {
        "precision": sum(h > 0 for h in holding) / n_fake,
        "recall": sum(any(d[i][j] < fake_r[j] for j in range(n_fake)) for i in range(n_real))
        / n_real,
        "density": sum(holding) / (k * n_fake),
        "coverage": sum(min(d[i]) < real_r[i] for i in range(n_real)) / n_real,
    }


@pytest.mark.parametrize("d", [2, 20])  # 2: k-d trees; 20: blockwise distances
@pytest.mark.parametrize("k", [1, 5])
def test_matches_brute_force(d, k):
    g = torch.Generator().manual_seed(d * 10 + k)
    real = torch.randn(40, d, generator=g, dtype=torch.float64)
    fake = 0.7 * torch.randn(30, d, generator=g, dtype=torch.float64) + 0.4
    expected = brute_force_prdc(real.tolist(), fake.tolist(), k)
    assert features_to_prdc(real, fake, k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [2, 20])
def test_identical_sets(d):
    # Each real ball holds the point itself and its k − 1 nearest neighbours (the k-th lies on
    # the edge, outside by the strict inequality): every share is 1 and density is nk / nk = 1.
    x = torch.randn(200, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    assert features_to_prdc(x, x.clone()) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}, rel=1e-12
    )


def test_reused_real_radii_give_the_same_values():
    g = torch.Generator().manual_seed(7)
    real = torch.randn(100, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(80, 3, generator=g, dtype=torch.float64)
    assert features_to_prdc(real, fake, 5, knn_radii(real, 5)) == features_to_prdc(real, fake, 5)


def test_disjoint_sets_score_zero():
    real = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = features_to_prdc(real, real + 100.0)
    assert values == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
