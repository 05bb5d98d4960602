"""The evaluator a trial calls: values, determinism, protocol, defensive paths."""

import json
import math

import pytest
import torch

from ganlab.data import load
from ganlab.metrics import METRICS, Evaluator, Protocol
from ganlab.metrics.kid import features_to_kid
from ganlab.metrics.prdc import features_to_prdc
from ganlab.metrics.reference import reference_statistics

RING8 = load("ring8")
DIGITS = load("digits")
MIXTURE_METRICS = (
    "fid", "kid", "precision", "recall", "density", "coverage", "fid_inf", "kid_std",
    "modes", "hq", "kl_modes", "modes_dropped", "mode_dropping",
)  # fmt: skip


@pytest.fixture(scope="module")
def ring8() -> Evaluator:
    return Evaluator(RING8)


@pytest.fixture(scope="module")
def digits() -> Evaluator:
    return Evaluator(DIGITS)


def _collapsed_ring8(n: int) -> torch.Tensor:
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
    return RING8.centres[0] + RING8.sigma * noise


def test_ring8_real_samples_score_well(ring8):
    values = ring8(RING8.sample(2500, torch.Generator().manual_seed(1)))
    assert tuple(values) == MIXTURE_METRICS
    assert all(type(v) is float and math.isfinite(v) for v in values.values())
    assert values["fid"] < 0.01
    assert abs(values["kid"]) < 0.05
    assert values["modes"] == 8
    assert values["hq"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert min(values["precision"], values["recall"], values["coverage"]) > 0.9


def test_collapse_scores_worse_on_every_metric(ring8):
    real = ring8(RING8.sample(2500, torch.Generator().manual_seed(1)))
    collapsed = ring8(_collapsed_ring8(2500))
    assert collapsed["modes"] == 1
    assert collapsed["kl_modes"] == pytest.approx(math.log(8))
    for name in ("fid", "kid"):
        assert collapsed[name] > 100 * max(real[name], 0.01)
    for name in ("recall", "coverage"):
        assert collapsed[name] < 0.2 < real[name]


def test_values_are_deterministic(ring8):
    fake = RING8.sample(2500, torch.Generator().manual_seed(2))
    assert ring8(fake) == ring8(fake.clone())
    assert Evaluator(RING8)(fake) == ring8(fake)


def test_evaluator_agrees_with_the_standalone_functions(ring8):
    fake = RING8.sample(2500, torch.Generator().manual_seed(3)).double()
    reference = reference_statistics(RING8, ring8.extractor, 2500)
    values = ring8(fake)
    # The metric functions return 0-d tensors (they stay on a card); approx wants numbers.
    kid = float(features_to_kid(reference.features, fake))
    assert values["kid"] == pytest.approx(kid, rel=1e-9)
    prdc = {name: float(v) for name, v in features_to_prdc(reference.features, fake).items()}
    assert {name: values[name] for name in prdc} == pytest.approx(prdc, rel=1e-12)


def test_protocol_is_recorded(ring8):
    floor = ring8.protocol.fid_floor  # its value: tests/test_metrics_reference.py
    sha = ring8.protocol.reference_sha  # its meaning: tests/test_metrics_assets.py
    assert ring8.protocol == Protocol(
        "raw", "", 2500, 2500, "mixture", k=5, dim=2, fid_floor=floor, reference_sha=sha,
        fid_inf_n=(500, 1000, 1500, 2000, 2500), mode_min_count=62,  # round(0.2 · 2500 / 8)
    )  # fmt: skip
    assert ring8.protocol.departures == ()  # VEEGAN/PacGAN's 2,500 samples
    assert len(sha) == 16 and int(sha, 16) >= 0
    text = ring8.protocol.to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(text)["n_real"] == 2500
    smaller = Evaluator(RING8, n_eval=500)
    assert (smaller.n_fake, smaller.protocol.n_real) == (500, 500)


def test_non_finite_samples_get_the_worst_values(ring8):
    for bad in (math.nan, math.inf):
        fake = RING8.sample(2500, torch.Generator().manual_seed(4))
        fake[17, 1] = bad
        assert ring8(fake) == {name: METRICS[name].worst for name in MIXTURE_METRICS}


def test_wrong_shape_is_a_clear_error(ring8):
    with pytest.raises(ValueError, match=r"expected fake samples of shape \(2500, 2\)"):
        ring8(torch.zeros(100, 2))


def test_digits_protocol_says_where_it_departs_from_papers(digits):
    assert digits.protocol.mode_min_count == 20  # a fifth of 1,000 / 10
    assert digits.protocol.departures == (
        "FID from 1000 fakes (papers: at least 10000)",
        f"FID against {len(DIGITS.test)} real images (papers: at least 10000)",
        f"KID subsets of {len(DIGITS.test)} (Bińkowski et al.: 1000)",
        "IS from 1000 samples in 10 splits (papers: 50000 in 10)",
    )
    assert json.loads(digits.protocol.to_json())["fid_inf_n"] == [200, 400, 600, 800, 1000]


def test_digits_real_images_score_well_and_collapse_does_not(digits):
    assert digits.protocol.extractor == "classifier"
    assert digits.protocol.reference == "test"
    assert digits.protocol.n_real == len(DIGITS.test)
    assert len(digits.protocol.weights) == 16
    real = digits(DIGITS.sample(1000, torch.Generator().manual_seed(1)))
    assert set(real) == set(MIXTURE_METRICS) | {"is"}
    assert set(real) <= set(METRICS)
    assert real["modes"] == 10
    assert real["is"] > 8
    assert real["kl_modes"] < 0.05
    assert (real["modes_dropped"], real["mode_dropping"]) == (0.0, 0.0)  # ~89 hq per class
    collapsed = digits(DIGITS.train[torch.zeros(1000, dtype=torch.long)])
    assert collapsed["modes"] == 1
    assert collapsed["modes_dropped"] >= 9 and collapsed["mode_dropping"] == 1.0
    assert collapsed["is"] == pytest.approx(1.0)
    assert collapsed["fid"] > 100 * real["fid"]
    assert collapsed["coverage"] < 0.05 < 0.9 < real["coverage"]
