"""Mode statistics and Inception Score against closed forms."""

import math

import pytest
import torch

from ganlab.data import load
from ganlab.metrics.inception_score import joint_probabilities, probabilities_to_inception_score
from ganlab.metrics.modes import (
    class_hq_counts,
    class_mode_statistics,
    drop_statistics,
    histogram_to_kl_uniform,
    min_mode_count,
    mixture_hq_counts,
    mixture_mode_statistics,
)

RING8 = load("ring8")
GRID25 = load("grid25")


def _ring8(n: int, seed: int = 0) -> torch.Tensor:
    return RING8.sample(n, torch.Generator().manual_seed(seed))


def test_exact_ring8_samples_cover_every_mode():
    stats = mixture_mode_statistics(_ring8(200_000), RING8.centres, RING8.sigma)
    assert stats["modes"] == 8
    # |x − centre|/σ is Rayleigh in 2-D: P(within 3σ) = 1 − exp(−9/2)
    assert stats["hq"] == pytest.approx(1 - math.exp(-4.5), rel=3e-3)
    assert stats["kl_modes"] == pytest.approx(0.0, abs=1e-3)


def test_single_mode():
    g = torch.Generator().manual_seed(1)
    x = RING8.centres[3] + RING8.sigma * torch.randn(5000, 2, generator=g)
    stats = mixture_mode_statistics(x, RING8.centres, RING8.sigma)
    assert stats["modes"] == 1
    assert stats["kl_modes"] == pytest.approx(math.log(8), rel=1e-12)


def test_uniform_noise_is_rarely_high_quality():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100_000, 2, generator=g) * 6 - 3
    # expected share: 8 discs of radius 3σ over a 6×6 square, 8π(0.06)²/36 ≈ 0.0025
    assert mixture_mode_statistics(x, RING8.centres, RING8.sigma)["hq"] < 0.01


def test_no_high_quality_sample_has_finite_worst_kl():
    far = torch.full((100, 2), 50.0)
    stats = mixture_mode_statistics(far, RING8.centres, RING8.sigma)
    assert stats == {"modes": 0.0, "hq": 0.0, "kl_modes": pytest.approx(math.log(8))}


def test_kl_of_histograms():
    assert histogram_to_kl_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0, abs=1e-15)
    assert histogram_to_kl_uniform(torch.tensor([0, 7, 0, 0])) == pytest.approx(math.log(4))
    # p = (1/2, 1/2, 0, 0): KL = log 2
    assert histogram_to_kl_uniform(torch.tensor([3, 3, 0, 0])) == pytest.approx(math.log(2))


def _one_hot(labels: list[int], n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), n_classes).double()


def test_class_modes_uniform_and_collapsed():
    balanced = _one_hot(list(range(10)) * 20, 10)[:, None]
    assert class_mode_statistics(balanced, 10) == {"modes": 10.0, "hq": 1.0, "kl_modes": 0.0}
    collapsed = _one_hot([4] * 50, 10)[:, None]
    assert class_mode_statistics(collapsed, 10)["kl_modes"] == pytest.approx(math.log(10))


def test_class_confidence_threshold():
    probs = torch.full((4, 1, 10), 0.0, dtype=torch.float64)
    probs[:2, 0, 0], probs[:2, 0, 1:] = 0.99, 0.01 / 9  # confident at exactly 0.99
    probs[2:, 0, 0], probs[2:, 0, 1:] = 0.98, 0.02 / 9
    assert class_mode_statistics(probs, 10)["hq"] == 0.5


def test_stacked_modes_read_channels_in_base_10():
    # channels (1, 2, 3) → mode 123, (9, 0, 0) → 900; confidence is the product of the tops
    probs = torch.stack([_one_hot([1, 2, 3], 10), _one_hot([9, 0, 0], 10)])
    probs[1] = 0.7 * probs[1] + 0.3 / 10
    stats = class_mode_statistics(probs, 1000)
    assert stats["modes"] == 2
    assert stats["hq"] == 0.5  # 0.73³ ≈ 0.39 < 0.99
    assert stats["kl_modes"] == pytest.approx(math.log(1000 / 2))


def test_inception_score_closed_forms():
    balanced = _one_hot(list(range(10)) * 30, 10)[:, None]
    assert probabilities_to_inception_score(balanced, splits=1) == pytest.approx(10.0)
    assert probabilities_to_inception_score(balanced, splits=10) == pytest.approx(10.0)
    same = torch.full((100, 1, 10), 0.1, dtype=torch.float64)
    assert probabilities_to_inception_score(same) == pytest.approx(1.0)


def test_stacked_inception_score_uses_joint_classes():
    # two channels of two classes, each of the 4 combinations once: IS = 4
    combos = [(0, 0), (0, 1), (1, 0), (1, 1)]
    probs = torch.stack(
        [torch.stack([_one_hot([a], 2)[0], _one_hot([b], 2)[0]]) for a, b in combos]
    )
    assert probabilities_to_inception_score(probs, splits=1) == pytest.approx(4.0)
    p = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])
    expected = torch.tensor([[0.12, 0.08, 0.48, 0.32]], dtype=torch.float64)
    assert joint_probabilities(p) == pytest.approx(expected)


def _on_modes(data, counts: list[int]) -> torch.Tensor:
    """counts[i] samples exactly on mode i's centre: every one high quality."""
    return torch.cat([data.centres[i].expand(c, 2) for i, c in enumerate(counts) if c])


def _dropping(data, counts: list[int]) -> dict[str, float]:
    x = _on_modes(data, counts)
    hist = mixture_hq_counts(x, data.centres, data.sigma)
    assert hist.tolist() == counts
    min_count = min_mode_count(len(x), len(data.centres))
    stats = mixture_mode_statistics(x, data.centres, data.sigma)
    return {"modes": float(stats["modes"]),
            **{k: float(v) for k, v in drop_statistics(hist, min_count).items()}}  # fmt: skip


def test_min_mode_count_is_a_fifth_of_the_fair_share():
    assert min_mode_count(2500, 25) == 20  # PacGAN's grid: BourGAN's 20
    assert min_mode_count(2500, 8) == 62  # round(62.5), Python rounds half to even
    assert min_mode_count(1000, 10) == 20
    assert min_mode_count(26_000, 1000) == 5
    assert min_mode_count(10, 1000) == 1


@pytest.mark.parametrize(
    "data,counts,expected",
    [(RING8, [1250, 1250, 0, 0, 0, 0, 0, 0], (2, 6, 1.0)),  # 2 of 8
     (RING8, [2400] + [14] * 6 + [16], (8, 7, 1.0)),  # 96 % on one mode: all 8 "captured"
     (RING8, [500, 500, 500, 500, 500, 0, 0, 0], (5, 3, 0.0)),  # 5 of 8: dropping, not flagged
     (RING8, [312] * 4 + [313] * 4, (8, 0, 0.0)),  # even
     (RING8, [2500 - 7 * 61] + [61] * 7, (8, 7, 1.0)),  # 61 < 62 per mode: dropped
     (GRID25, [834, 833, 833] + [0] * 22, (3, 22, 1.0)),  # 3 of 25
     (GRID25, [100] * 12 + [1300] + [0] * 12, (13, 12, 0.0))],  # 13 of 25 kept: over half
)  # fmt: skip
def test_partial_collapse_on_constructed_samples(data, counts, expected):
    got = _dropping(data, counts)
    assert (got["modes"], got["modes_dropped"], got["mode_dropping"]) == expected


def test_class_hq_histogram_counts_the_samples_hq_counts():
    """Half the samples confidently class 0, the other half spread over 1-9 unconfidently:
    every class is 'captured' (argmax over all samples), but only class 0 has high-quality
    samples, so 9 modes are dropped and the generator is flagged."""
    confident = _one_hot([0] * 500, 10)
    unsure = torch.full((500, 10), 0.5 / 9, dtype=torch.float64)
    unsure[torch.arange(500), 1 + torch.arange(500) % 9] = 0.5
    probs = torch.cat([confident, unsure])[:, None]
    assert class_mode_statistics(probs, 10)["modes"] == 10
    assert class_mode_statistics(probs, 10)["hq"] == 0.5
    counts = class_hq_counts(probs, 10)
    assert counts.tolist() == [500] + [0] * 9
    dropped = drop_statistics(counts, min_mode_count(1000, 10))
    assert (float(dropped["modes_dropped"]), float(dropped["mode_dropping"])) == (9.0, 1.0)
