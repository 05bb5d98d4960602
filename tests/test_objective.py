"""The robust objective, the objective's direction, and the one collapse rule."""

import math

import pytest
import torch

from ganlab.cli import main
from ganlab.config import ConfigError, TrialConfig
from ganlab.data import load, to_float
from ganlab.metrics import METRICS, Evaluator
from ganlab.objective import (
    check_direction,
    collapse_threshold,
    good_modes,
    mode_outcome,
    robust_objective,
)
from ganlab.reports import SeedReport


def _per_seed(values, metric="fid"):
    return [SeedReport(diverged_step=1) if v is None else SeedReport({metric: v}) for v in values]


@pytest.mark.parametrize(
    "values,metric,expected",
    [
        ([3.0, 1.0, 2.0], "fid", 2.0),
        ([3.0, None, 2.0], "fid", 3.0),  # a diverged seed counts as the worst: median(2, 3, 1e5)
        ([None, None, 2.0], "fid", 1e5),
        ([float("nan"), 1.0], "fid", 1e5),  # even: the worse middle value, not (1 + 1e5) / 2
        ([1.0, 2.0, 3.0, 4.0], "fid", 3.0),  # even, min-metric: the larger middle value
        ([1.0, 2.0, 3.0, 4.0], "modes", 2.0),  # even, max-metric: the smaller middle value
        ([25.0, None], "modes", -1.0),
        ([7.0, 8.0, 8.0, 6.0, 8.0, 5.0], "modes", 7.0),
    ],
)
def test_robust_objective(values, metric, expected):
    mode = METRICS[metric].mode
    assert robust_objective(_per_seed(values, metric), metric, mode) == pytest.approx(expected)


@pytest.mark.parametrize("metric", [m for m in METRICS if METRICS[m].mode == "max"])
def test_a_diverged_seed_ranks_below_a_real_zero(metric):
    zeros = robust_objective(_per_seed([0.0, 0.0], metric), metric, "max")
    one_diverged = robust_objective(_per_seed([0.0, None], metric), metric, "max")
    assert zeros == 0.0
    assert one_diverged == METRICS[metric].worst < 0.0


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_mode_must_agree_with_the_metric(metric):
    right = METRICS[metric].mode
    wrong = {"min": "max", "max": "min"}[right]
    assert check_direction(metric, right) is None
    assert f"use mode {right!r}" in check_direction(metric, wrong)


def test_trial_config_rejects_a_mode_against_the_metric():
    with pytest.raises(ConfigError, match="'max' disagrees with 'fid'.*use mode 'min'") as caught:
        TrialConfig.from_dict({"metric": "fid", "mode": "max"})
    assert caught.value.field == "mode"
    assert TrialConfig.from_dict({"metric": "good_modes", "mode": "max"}).mode == "max"


def test_ganlab_trial_with_a_wrong_mode_exits_2_before_training(capsys):
    assert main(["trial", "--metric", "kl_modes", "--mode", "max", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "mode: 'max' disagrees with 'kl_modes', where lower is better" in err


# --- collapse: one rule on both kinds of data ---------------------------------------------------


def test_good_modes_closed_form():
    # half the samples high quality, spread evenly over 2 of 8 modes: KL = log(8/2)
    assert good_modes({"hq": 0.5, "kl_modes": math.log(4)}, 8) == pytest.approx(1.0)
    assert good_modes({"hq": 1.0, "kl_modes": 0.0}, 25) == pytest.approx(25.0)
    assert collapse_threshold(8) == 1 and collapse_threshold(25) == 2
    assert collapse_threshold(1000) == 100
    assert mode_outcome({"fid": 1.0}, 0) == {}


GRID25 = load("grid25")


@pytest.fixture(scope="module")
def grid25():
    return Evaluator(GRID25, n_eval=2500)


def _grid25_subset(n_modes: int, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n_modes, (n,), generator=generator)
    return GRID25.centres[idx] + GRID25.sigma * torch.randn(n, 2, generator=generator)


def test_2d_diffuse_generator_is_collapsed_though_it_touches_most_modes(grid25):
    diffuse = 2.5 * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    metrics = grid25(diffuse)
    assert metrics["modes"] >= 15  # a few stray high-quality samples near most modes
    assert metrics["hq"] < 0.05
    assert mode_outcome(metrics, 25)["collapsed"]


@pytest.mark.parametrize("n_modes,collapsed", [(25, False), (17, False), (3, False), (2, True)])
def test_2d_modes_covered_at_high_quality(grid25, n_modes, collapsed):
    metrics = grid25(_grid25_subset(n_modes, 2500, seed=n_modes))
    outcome = mode_outcome(metrics, 25)
    assert outcome["good_modes"] == pytest.approx(n_modes, rel=0.02)
    assert outcome["collapsed"] is collapsed


DIGITS = load("digits")


@pytest.fixture(scope="module")
def digits():
    return Evaluator(DIGITS)


def test_class_data_noise_generator_is_collapsed_though_argmax_spreads(digits):
    noise = 2 * torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 1
    metrics = digits(noise)
    # The shipped classifier's argmax spreads noise over most classes (9 of 10; every class it
    # hits holds 22 samples or more, so no float rounding elsewhere takes one away).
    assert metrics["modes"] >= 8
    assert mode_outcome(metrics, 10)["collapsed"]


def test_class_data_real_digits_are_not_collapsed_and_one_digit_is(digits):
    held_out = to_float(DIGITS.test).repeat(3, 1, 1, 1)[:1000]
    real = mode_outcome(digits(held_out), 10)
    assert real["good_modes"] > 7 and not real["collapsed"]
    one = digits(DIGITS.train[torch.zeros(1000, dtype=torch.long)])
    assert mode_outcome(one, 10) == {"good_modes": pytest.approx(1.0), "collapsed": True}


def test_a_trial_reports_good_modes_and_collapse_per_seed():
    from ganlab.trial import Trial

    config = TrialConfig.from_dict(
        {
            "steps": 2,
            "eval_every": 2,
            "n_eval": 50,
            "seeds": [0, 1],
            "batch_size": 8,
            "metric": "good_modes",
            "mode": "max",
            "device": "cpu",
        }
    )
    last = Trial(config).run()[-1]
    for seed in last.seeds.values():
        assert seed.metrics["good_modes"] == pytest.approx(good_modes(seed.metrics, 8))
        assert seed.collapsed is (seed.metrics["good_modes"] <= 1)
    values = sorted(s.metrics["good_modes"] for s in last.seeds.values())
    assert last.objective == pytest.approx(values[0])  # two seeds: the worse one
