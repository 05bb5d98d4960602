"""Discriminator penalties, plug-ins with a do-nothing default.

Each is `fn(d, real, fake, generator) -> scalar`; the loop adds `weight * penalty`. Random draws
(interpolation points, perturbations) come from the seed's generator, so runs stay deterministic.

A trial's `penalty` names one penalty or a sum of them, each term optionally scaled:
`r1+r2` is `weight * r1 + weight * r2` (R3GAN's gamma on both), `r1+0.1*gp` is
`weight * r1 + 0.1 * weight * gp`, with `weight` the trial's `penalty_weight`. A sum is one
string, so it is one choice of a search and one typed column of the tables. `combine` turns the
string into the one function the loop calls, added in the order written.
"""

import math
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import Tensor, nn

from ganlab.registry import register

Penalty = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]
P = TypeVar("P", bound=Callable[..., Tensor])

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


@register(PENALTIES, "r2")
def r2_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """Zero-centred R2 (Mescheder et al. 2018; R3GAN, Huang et al. 2024): 0.5 * ||dD/dx||^2 on
    fake data, as R1 on real data."""
    return 0.5 * _input_grad_norm(d, fake).pow(2).mean()


@register(PENALTIES, "dragan")
def dragan_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """DRAGAN (Kodali et al. 2017): (||dD/dx|| - 1)^2 around perturbed real data."""
    noise = torch.rand(real.shape, generator=generator, device=real.device)
    x = real + 0.5 * real.std() * noise
    return (_input_grad_norm(d, x) - 1).pow(2).mean()


# --- sums of penalties -------------------------------------------------------------------------

_TERM = re.compile(r"^(?:(?P<factor>[0-9.eE-]+)\*)?(?P<name>[A-Za-z0-9_.-]+)$")


def parse(expression: str, names: Mapping[str, object]) -> tuple[tuple[float, str], ...]:
    """The (factor, name) terms of a `penalty` value such as `r1`, `r1+r2` or `r1+0.1*gp`;
    raises ValueError saying what is wrong and what is allowed (the names of `names`)."""
    allowed = ", ".join(sorted(names))
    how = f"a penalty ({allowed}) or a sum of them such as r1+r2 or r1+0.1*gp"
    terms = []
    for text in expression.replace(" ", "").split("+") if isinstance(expression, str) else [""]:
        found = _TERM.match(text)
        if found is None:
            raise ValueError(f"{expression!r}: term {text!r} is not [factor*]name; give {how}")
        factor, name = _factor(found["factor"], expression, text), found["name"]
        if name not in names:
            raise ValueError(f"{expression!r}: {name!r} is not one of: {allowed}")
        terms.append((factor, name))
    picked = [name for _, name in terms]
    if len(terms) > 1 and ("none" in picked or len(set(picked)) < len(picked)):
        raise ValueError(f"{expression!r}: a sum names each penalty once, and not 'none'")
    return tuple(terms)


def _factor(text: str | None, expression: str, term: str) -> float:
    if text is None:
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{expression!r}: the factor of {term!r} must be a number > 0")
    return factor


def combine(expression: str, weight: float, registry: Mapping[str, P]) -> P | None:
    """The function adding `weight * factor * penalty` of each term of `expression`, looked up
    in `registry` (PENALTIES, or another registry of the same names); None where nothing would
    be added (a weight of 0, or `none`), so the loop runs no kernel at all."""
    terms = [(weight * factor, registry[name]) for factor, name in parse(expression, registry)
             if name != "none"]  # fmt: skip
    if not weight or not terms:
        return None

    def penalty(*args, **kwargs) -> Tensor:
        total = None
        for scale, fn in terms:
            term = scale * fn(*args, **kwargs)
            total = term if total is None else total + term
        return total

    return penalty
