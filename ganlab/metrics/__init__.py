"""Evaluation metrics: feature extractors, Fréchet distance, KID, PRDC, mode statistics.

`METRICS` names every metric an evaluation may report, with its direction and the finite worst
value a diverged seed counts as in the robust objective: 1e5 for the min-metrics, -1 for the
max-metrics (all of which are >= 0 on real results, so a diverged seed ranks below a real zero);
1 for `mode_dropping`, a 0/1 flag.
"""

from dataclasses import dataclass

from ganlab.registry import register

MODES = ("min", "max")  # which way is better: the objective's `mode` in sweep files


@dataclass(frozen=True)
class Metric:
    mode: str  # a name in MODES
    worst: float  # the value a diverged seed counts as (finite, worse than any real result)
    doc: str
    needs_modes: bool = False  # defined only on data whose modes the protocol counts


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
    "mixture_mode_statistics",
    "probabilities_to_inception_score",
    "reference_statistics",
    "statistics_to_frechet",
    "train_classifier",
]
