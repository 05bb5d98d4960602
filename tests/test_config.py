import pytest

from ganlab.config import ConfigError, TrialConfig
from ganlab.losses import LOSSES
from ganlab.metrics import METRICS, MODES


def test_defaults_are_a_valid_configuration():
    config = TrialConfig.from_dict({})
    assert config.dataset == "ring8" and config.seeds == (0, 1, 2)
    assert (config.fp32_precision, config.deterministic) == ("ieee", False)


def test_integers_are_accepted_where_floats_are_wanted():
    config = TrialConfig.from_dict({"lr_g": 1, "seeds": [4, 5]})
    assert config.lr_g == 1.0 and isinstance(config.lr_g, float) and config.seeds == (4, 5)


def test_round_trip_through_a_dict():
    config = TrialConfig.from_dict({"loss": "hinge", "penalty": "r1", "pack": 2})
    assert TrialConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "values,field,message",
    [
        ({"lr": 1e-3}, "lr", "unknown field; allowed: dataset"),
        ({"loss": "hinged"}, "loss", "'hinged' is not one of: hinge, least-squares"),
        ({"dataset": "ring9"}, "dataset", "not one of: cifar10"),
        ({"penalty": "gp2"}, "penalty", "dragan, gp, none, r1"),
        ({"lr_d": "fast"}, "lr_d", "expected float, got 'fast'"),
        ({"lr_d": -1e-3}, "lr_d", "must be positive"),
        ({"beta1": 1.0}, "beta1", r"must be in \[0, 1\)"),
        ({"steps": 0}, "steps", "at least 1"),
        ({"spectral_norm": "yes"}, "spectral_norm", "expected bool"),
        ({"clip": 0.01}, "clip", "option of loss `wasserstein` only"),
        ({"batch_size": 30, "pack": 4}, "pack", "must divide batch_size"),
        ({"seeds": [1, 1]}, "seeds", "distinct"),
        ({"arch": "dcgan"}, "arch", "needs square images"),
        ({"metric": "modes", "dataset": "cifar10"}, "metric", "needs a dataset with modes"),
        ({"metric": "is"}, "metric", "needs class probabilities"),
        ({"norm_g": "group"}, "norm_g", "batch, instance, layer, none"),
        ({"fp32_precision": "bf16"}, "fp32_precision", "'bf16' is not one of: ieee, tf32"),
        ({"deterministic": 1}, "deterministic", "expected bool, got 1"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(values, field, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrialConfig.from_dict(values)
    assert caught.value.field == field


def test_a_config_error_carries_its_field_and_message_apart():
    with pytest.raises(ConfigError) as caught:
        TrialConfig.from_dict({"loss": "hinged"})
    error = caught.value
    assert error.field == "loss"
    assert error.message == f"'hinged' is not one of: {', '.join(sorted(LOSSES))}"
    assert str(error) == f"loss: {error.message}"


MODE_METRICS = [name for name, metric in METRICS.items() if metric.needs_modes]


def test_the_metric_registry_knows_which_metrics_need_modes():
    assert MODE_METRICS == [
        "modes",
        "hq",
        "kl_modes",
        "good_modes",
        "modes_dropped",
        "mode_dropping",
    ]


@pytest.mark.parametrize("metric", MODE_METRICS)
def test_metrics_that_need_modes_need_a_dataset_with_modes(metric):
    values = {"metric": metric, "mode": METRICS[metric].mode}
    assert TrialConfig.from_dict({**values, "dataset": "ring8"}).metric == metric
    with pytest.raises(ConfigError, match=f"'{metric}' needs a dataset with modes"):
        TrialConfig.from_dict({**values, "dataset": "cifar10"})


def test_every_metric_has_a_direction_a_sweep_may_name():
    assert {metric.mode for metric in METRICS.values()} == set(MODES)


@pytest.mark.parametrize(
    ("values", "message"),
    [({"lr_g": 10**400}, "lr_g: beyond the largest float"),  # float() would raise
     ({"seeds": list(range(1001))}, "seeds: at most 1,000 seeds a trial, got 1,001"),
     ({"seeds": [2**63 - 1_000_003]}, r"seeds: each seed must be in \[0, 9223372036853775805\)"),
     ({"seeds": [-1]}, r"seeds: each seed must be in \[0, "),
     ({"depth": 1001}, "depth: must be at most 1,000 hidden layers, got 1,001")],
)  # fmt: skip
def test_values_past_what_a_trial_can_hold_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(values)
    largest = {"lr_g": 1e300, "seeds": [2**63 - 1_000_004], "depth": 1000}
    for name in set(values) & set(largest):
        assert getattr(TrialConfig.from_dict({name: largest[name]}), name) is not None


def test_the_seed_limit_keeps_the_evaluation_streams_seed_an_int64():
    from ganlab.config import seed_limit
    from ganlab.trial import EVAL_SEED_OFFSET

    assert seed_limit() - 1 + EVAL_SEED_OFFSET == 2**63 - 1
