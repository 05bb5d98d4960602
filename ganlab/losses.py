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


@register(LOSSES, "rpgan")
def rpgan(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """RpGAN (Jolicoeur-Martineau 2018; R3GAN, Huang et al. 2024): each real logit paired with
    the fake one at the same index, D asked that the real beat its fake, G the other way."""
    return F.softplus(d_fake - d_real).mean(), F.softplus(d_real - d_fake).mean()


@register(LOSSES, "ragan")
def ragan(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """RaGAN (Jolicoeur-Martineau 2018), the standard-GAN form: each logit against the mean
    logit of the other batch; D asks reals above the average fake and fakes below the average
    real, G the reverse."""
    real_vs_fake, fake_vs_real = d_real - d_fake.mean(), d_fake - d_real.mean()
    d_loss = F.softplus(-real_vs_fake).mean() + F.softplus(fake_vs_real).mean()
    g_loss = F.softplus(-fake_vs_real).mean() + F.softplus(real_vs_fake).mean()
    return d_loss, g_loss
