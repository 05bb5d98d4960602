"""Penalties against closed forms, on a discriminator whose input gradient is known exactly.

D(x) = 0.5 * sum(A * x**2) over each sample's features, so dD/dx = A * x and every gradient
penalty is a polynomial of the data (numbers exact in binary, so no machine's rounding matters).
"""

import pytest
import torch
from torch import nn

from ganlab.config import ConfigError, TrialConfig
from ganlab.penalties import PENALTIES, combine, parse

A = torch.tensor([1.0, 2.0])
REAL = torch.tensor([[1.0, 0.5], [-2.0, 1.0]])
FAKE = torch.tensor([[0.5, -1.0], [3.0, 0.0]])


class Quadratic(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (A * x**2).sum(1)


def squared_grad_norms(x: torch.Tensor) -> list[float]:
    return [float(((A * row) ** 2).sum()) for row in x]  # ||A * x||^2 per sample


R1 = 0.5 * sum(squared_grad_norms(REAL)) / 2  # (1 + 1) and (4 + 4): 0.5 * mean = 2.5
R2 = 0.5 * sum(squared_grad_norms(FAKE)) / 2  # (0.25 + 4) and (9 + 0): 0.5 * mean = 3.3125


def penalty(expression: str, weight: float) -> float:
    fn = combine(expression, weight, PENALTIES)
    return fn(Quadratic(), REAL, FAKE, torch.Generator().manual_seed(0)).item()


def test_r1_and_r2_are_half_the_mean_squared_input_gradient_on_reals_and_on_fakes():
    assert (R1, R2) == (2.5, 3.3125)
    assert penalty("r1", 1.0) == pytest.approx(R1)
    assert penalty("r2", 1.0) == pytest.approx(R2)


@pytest.mark.parametrize(
    "expression,weight,expected",
    [("r1+r2", 10.0, 10 * R1 + 10 * R2), ("r2+0.5*r1", 2.0, 2 * R2 + R1),
     ("0.25*r1", 4.0, R1)],
)  # fmt: skip
def test_a_sum_of_penalties_adds_each_with_its_factor_times_the_weight(expression, weight,
                                                                       expected):  # fmt: skip
    assert penalty(expression, weight) == pytest.approx(expected)


def test_a_sum_is_differentiable_through_d():
    d = nn.Linear(2, 1)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[3.0, 4.0]]))
    fn = combine("r1+r2", 1.0, PENALTIES)
    total = fn(lambda x: d(x).flatten(), REAL, FAKE, torch.Generator())
    assert total.item() == pytest.approx(0.5 * 25 + 0.5 * 25)  # ||w||^2 = 25 on every sample
    (grad,) = torch.autograd.grad(total, d.weight)
    assert grad.tolist() == [pytest.approx([6.0, 8.0])]  # d/dw of ||w||^2 (twice 0.5)


def test_nothing_runs_for_none_or_a_weight_of_zero():
    assert combine("none", 10.0, PENALTIES) is None
    assert combine("r1+r2", 0.0, PENALTIES) is None


def test_terms_are_parsed_in_order_with_their_factors():
    assert parse("r1 + 0.1*gp", PENALTIES) == ((1.0, "r1"), (0.1, "gp"))


@pytest.mark.parametrize(
    "expression,said",
    [("r1+r3", "'r3' is not one of: dragan, gp, none, r1, r2"),
     ("r1+r1", "names each penalty once"), ("none+r1", "and not 'none'"),
     ("-1*r1", "must be a number > 0"), ("r1+", "is not [factor*]name")],
)  # fmt: skip
def test_a_bad_sum_names_the_field_and_what_is_allowed(expression, said):
    with pytest.raises(ConfigError, match="penalty") as caught:
        TrialConfig.from_dict({"penalty": expression})
    assert said in caught.value.message
