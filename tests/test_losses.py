import math

import pytest
import torch

from ganlab.losses import LOSSES

REAL = [1.0, -2.0]
FAKE = [0.5, -1.0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values) -> float:
    return sum(values) / len(values)


d_bce = mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE])
EXPECTED = {
    "minimax": (d_bce, -mean([softplus(f) for f in FAKE])),
    "non-saturating": (d_bce, mean([softplus(-f) for f in FAKE])),
    "least-squares": (
        0.5 * (mean([(r - 1) ** 2 for r in REAL]) + mean([f**2 for f in FAKE])),
        0.5 * mean([(f - 1) ** 2 for f in FAKE]),
    ),
    "wasserstein": (mean(FAKE) - mean(REAL), -mean(FAKE)),
    "hinge": (
        mean([max(0, 1 - r) for r in REAL]) + mean([max(0, 1 + f) for f in FAKE]),
        -mean(FAKE),
    ),
    # RpGAN pairs real i with fake i: D wants D(x) - D(G(z)) high, G the reverse.
    "rpgan": (
        mean([softplus(-(r - f)) for r, f in zip(REAL, FAKE, strict=True)]),
        mean([softplus(-(f - r)) for r, f in zip(REAL, FAKE, strict=True)]),
    ),
    # RaGAN: each logit against the mean of the other batch (mean real -0.5, mean fake -0.25).
    "ragan": (
        mean([softplus(-(r + 0.25)) for r in REAL]) + mean([softplus(f + 0.5) for f in FAKE]),
        mean([softplus(-(f + 0.5)) for f in FAKE]) + mean([softplus(r + 0.25) for r in REAL]),
    ),
}


def test_every_registered_loss_has_a_hand_computed_check():
    assert set(LOSSES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_hand_computed_values(name):
    d_loss, g_loss = LOSSES[name](torch.tensor(REAL), torch.tensor(FAKE))
    assert (d_loss.item(), g_loss.item()) == pytest.approx(EXPECTED[name], rel=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generator_gradient_pushes_fakes_towards_real(name):
    fake = torch.tensor(FAKE, requires_grad=True)
    _, g_loss = LOSSES[name](torch.tensor(REAL), fake)
    (grad,) = torch.autograd.grad(g_loss, fake)
    assert (grad <= 0).all()  # raising D's logit on fakes lowers every G loss
