"""Discriminator penalties, plug-ins with a do-nothing default.

Each is `fn(d, real, fake, generator) -> scalar`; the loop adds `weight * penalty`. Random draws
(interpolation points, perturbations) come from the seed's generator, so runs stay deterministic.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ganlab.registry import register

Penalty = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]

PENALTIES: dict[str, Penalty] = {}


def _input_grad_norm(d: nn.Module, x: Tensor) -> Tensor:
    """Per-sample norm of dD/dx, kept in the graph so the penalty can be minimised."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    return grad.flatten(1).norm(dim=1)


def _uniform_like(x: Tensor, generator: torch.Generator) -> Tensor:
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return torch.rand(shape, generator=generator, device=x.device)


@register(PENALTIES, "none")
def no_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    return real.new_zeros(())


@register(PENALTIES, "gp")
def gradient_penalty(
    d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||dD/dx|| - 1)^2 on real-fake interpolates."""
    eps = _uniform_like(real, generator)
    x = eps * real + (1 - eps) * fake.detach()
    return (_input_grad_norm(d, x) - 1).pow(2).mean()


@register(PENALTIES, "r1")
def r1_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """Zero-centred R1 (Mescheder et al. 2018): 0.5 * ||dD/dx||^2 on real data."""
    return 0.5 * _input_grad_norm(d, real).pow(2).mean()


@register(PENALTIES, "dragan")
def dragan_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """DRAGAN (Kodali et al. 2017): (||dD/dx|| - 1)^2 around perturbed real data."""
    noise = torch.rand(real.shape, generator=generator, device=real.device)
    x = real + 0.5 * real.std() * noise
    return (_input_grad_norm(d, x) - 1).pow(2).mean()
