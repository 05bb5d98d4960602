"""GAN losses, all of one shape: `fn(d_real, d_fake) -> (d_loss, g_loss)` on raw logits.

The training loop calls `LOSSES[name]` and never branches on a name. Each function takes the
discriminator's logits on a real and a fake batch and returns the two scalar losses to minimise.
"""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ganlab.registry import register

Loss = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

LOSSES: dict[str, Loss] = {}


@register(LOSSES, "minimax")
def minimax(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Goodfellow et al. 2014: D maximises log D(x) + log(1 - D(G(z))), G minimises the latter."""
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return d_loss, -F.softplus(d_fake).mean()


@register(LOSSES, "non-saturating")
def non_saturating(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """The minimax D loss; G maximises log D(G(z)) instead, for useful early gradients."""
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return d_loss, F.softplus(-d_fake).mean()


@register(LOSSES, "least-squares")
def least_squares(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real), c=1 (G's target)."""
    d_loss = 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())
    return d_loss, 0.5 * (d_fake - 1).pow(2).mean()


@register(LOSSES, "wasserstein")
def wasserstein(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """WGAN critic loss; Lipschitz control comes from `clip` or the `gp` penalty."""
    return d_fake.mean() - d_real.mean(), -d_fake.mean()


@register(LOSSES, "hinge")
def hinge(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Hinge loss (Lim & Ye 2017; SNGAN, BigGAN)."""
    d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return d_loss, -d_fake.mean()
