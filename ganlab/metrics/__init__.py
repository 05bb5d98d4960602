"""Evaluation metrics: feature extractors, Fréchet distance, KID, PRDC, mode statistics.

`METRICS` names every metric an evaluation may report, with its direction and the finite worst
value a diverged seed counts as in the robust objective: 1e5 for the min-metrics, -1 for the
max-metrics (all of which are >= 0 on real results, so a diverged seed ranks below a real zero);
1 for `mode_dropping`, a 0/1 flag. A plugin adds its own (`ganlab.register.metric`): they come
after the built-ins, each with the function that measures it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganlab.registry import register

MODES = ("min", "max")  # which way is better: the objective's `mode` in sweep files


@dataclass(frozen=True)
class Metric:
    mode: str  # a name in MODES
    worst: float  # the value a diverged seed counts as (finite, worse than any real result)
    doc: str
    needs_modes: bool = False  # defined only on data whose modes the protocol counts
    # A plugin's metric: fn(fake, features, data) -> 0-d tensor (`ganlab.register.metric`);
    # None for the built-ins, which the evaluator measures itself.
    measure: Callable[..., Any] | None = None


METRICS: dict[str, Metric] = {}

WORST_MIN, WORST_MAX = 1e5, -1.0

for _name, _metric in {
    "fid": Metric("min", WORST_MIN, "Fréchet distance between real and fake feature Gaussians"),
    "kid": Metric("min", WORST_MIN, "kernel inception distance (unbiased MMD², cubic kernel)"),
    "is": Metric("max", WORST_MAX, "Inception Score (class probabilities on digit-like data)"),
    "precision": Metric("max", WORST_MAX, "share of fakes inside the real k-NN manifold (k=5)"),
    "recall": Metric("max", WORST_MAX, "share of reals inside the fake k-NN manifold (k=5)"),
    "density": Metric("max", WORST_MAX, "PRDC density (k=5)"),
    "coverage": Metric("max", WORST_MAX, "share of reals whose k-NN ball holds a fake (k=5)"),
    "modes": Metric("max", WORST_MAX, "modes captured", needs_modes=True),
    "hq": Metric("max", WORST_MAX, "share of high-quality samples", needs_modes=True),
    "kl_modes": Metric(
        "min", WORST_MIN, "KL(captured-mode histogram || uniform)", needs_modes=True
    ),
    "good_modes": Metric(
        "max",
        WORST_MAX,
        "modes covered well: hq · n_modes · exp(-kl_modes) (ganlab.objective)",
        needs_modes=True,
    ),
    "fid_inf": Metric(
        "min", WORST_MIN, "FID extrapolated to infinitely many fakes (Chong & Forsyth 2020)"
    ),
    "kid_std": Metric("min", WORST_MIN, "standard deviation of KID over its subsets"),
    "modes_dropped": Metric(
        "min",
        WORST_MIN,
        "modes with fewer high-quality samples than the protocol's mode_min_count",
        needs_modes=True,
    ),
    # a flag: 1.0 where at most half of the modes are kept, its worst value
    "mode_dropping": Metric(
        "min", 1.0, "1 where at most half of the modes keep mode_min_count", needs_modes=True
    ),
}.items():
    register(METRICS, _name)(_metric)

BUILT_IN: tuple[str, ...] = tuple(METRICS)
"""The built-in metrics: the results tables' fixed columns, whatever plugins add later."""


RECORDED: dict[str, Metric] = {}
"""Plugin metrics known from a run's tables only (`ganlab.results.read_table` fills it from what
the files record), in a process that did not import the plugin: read, never measured, and apart
from `METRICS`, so that importing the plugin later still registers its name."""


def lookup(name: str) -> Metric:
    """The metric `name`: registered here, or recorded by the tables read (KeyError if
    neither)."""
    return METRICS[name] if name in METRICS else RECORDED[name]


def known() -> tuple[str, ...]:
    """Every metric name a table read here may have columns of: registered, then recorded."""
    return tuple(METRICS) + tuple(name for name in RECORDED if name not in METRICS)


def plugin_metrics() -> tuple[str, ...]:
    """The metrics plugins registered in this process, in the order they were registered."""
    return tuple(name for name, metric in METRICS.items() if metric.measure is not None)


def measure_plugin_metrics(
    names: tuple[str, ...], fake: Any, features: Any, finite: Any, data: Any
) -> dict[str, Any]:
    """Each plugin metric among `names`, of `fake` (with its `features`, the extractor's, and
    `data`, as `ganlab.metrics.Evaluator` holds them), as a 0-d float64 tensor on the fakes'
    device; nothing is read to the host. Where the samples or features are not all finite
    (`finite`, a 0-d bool tensor) the plugin sees them zeroed, as the built-ins do, and the
    evaluator reports the worst anyway; a non-finite value of its own counts as its metric's
    worst. A metric that raises, or gives more than one number, fails the trial with a
    ConfigError naming it (not retried: the same code fails the same way again)."""
    import torch

    from ganlab.config import ConfigError

    plugins = [(name, METRICS[name]) for name in names if METRICS[name].measure is not None]
    if not plugins:
        return {}
    fake = torch.where(finite, fake, 0.0)
    values = {}
    for name, metric in plugins:
        fn = metric.measure
        qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
        where = f"plugin metric {name!r} ({getattr(fn, '__module__', '?')}.{qualname})"
        try:
            value = fn(fake, features, data)
        except torch.OutOfMemoryError:
            raise  # the card's state, not the plugin's code: Ray may retry it
        except Exception as error:
            raise ConfigError("metric", f"{where} raised {type(error).__name__}: "
                              f"{error}") from error  # fmt: skip
        value = torch.as_tensor(value, dtype=torch.float64, device=fake.device)
        if value.ndim != 0:
            raise ConfigError("metric", f"{where} must return a 0-d tensor (one number), got "
                              f"shape {tuple(value.shape)}")  # fmt: skip
        values[name] = torch.where(torch.isfinite(value), value, metric.worst)
    return values


# The public API, imported on first use: `ganlab.metrics.METRICS` stays cheap to import (the
# results tables and the report need only the names), while the extractors pull in torch.
_LAZY = {
    "EXTRACTORS": "ganlab.metrics.extractors",
    "Evaluator": "ganlab.metrics.evaluate",
    "Extractor": "ganlab.metrics.extractors",
    "Features": "ganlab.metrics.features",
    "Protocol": "ganlab.metrics.evaluate",
    "Reference": "ganlab.metrics.reference",
    "SmallCNN": "ganlab.metrics.classifier",
    "Statistics": "ganlab.metrics.frechet",
    "cache_dir": "ganlab.metrics.cache",
    "class_mode_statistics": "ganlab.metrics.modes",
    "features_to_kid": "ganlab.metrics.kid",
    "features_to_prdc": "ganlab.metrics.prdc",
    "features_to_statistics": "ganlab.metrics.frechet",
    "load_classifier": "ganlab.metrics.classifier",
    "load_extractor": "ganlab.metrics.extractors",
    "mixture_mode_statistics": "ganlab.metrics.modes",
    "probabilities_to_inception_score": "ganlab.metrics.inception_score",
    "reference_statistics": "ganlab.metrics.reference",
    "statistics_to_frechet": "ganlab.metrics.frechet",
    "train_classifier": "ganlab.metrics.classifier",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganlab.metrics' has no attribute {name!r}")


__all__ = [
    "BUILT_IN",
    "EXTRACTORS",
    "METRICS",
    "MODES",
    "Evaluator",
    "Extractor",
    "Features",
    "Metric",
    "Protocol",
    "Reference",
    "SmallCNN",
    "Statistics",
    "cache_dir",
    "class_mode_statistics",
    "features_to_kid",
    "features_to_prdc",
    "features_to_statistics",
    "load_classifier",
    "load_extractor",
    "measure_plugin_metrics",
    "mixture_mode_statistics",
    "plugin_metrics",
    "probabilities_to_inception_score",
    "reference_statistics",
    "statistics_to_frechet",
    "train_classifier",
]
