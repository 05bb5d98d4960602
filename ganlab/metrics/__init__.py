"""Evaluation metrics: feature extractors, Fréchet distance, KID, PRDC, mode statistics.

`METRICS` names every metric an evaluation may report, with its direction and the finite worst
value a diverged seed counts as in the robust objective.
"""

from dataclasses import dataclass

from ganlab.registry import register


@dataclass(frozen=True)
class Metric:
    mode: str  # "min" or "max": which way is better
    worst: float  # the value a diverged seed counts as (finite, worse than any real result)
    doc: str


METRICS: dict[str, Metric] = {}

for _name, _metric in {
    "fid": Metric("min", 1e5, "Fréchet distance between real and fake feature Gaussians"),
    "kid": Metric("min", 1e5, "kernel inception distance (unbiased MMD², cubic kernel)"),
    "is": Metric("max", 0.0, "Inception Score (classifier probabilities on digit-like data)"),
    "precision": Metric("max", 0.0, "share of fakes inside the real k-NN manifold (k=5)"),
    "recall": Metric("max", 0.0, "share of reals inside the fake k-NN manifold (k=5)"),
    "density": Metric("max", 0.0, "PRDC density (k=5)"),
    "coverage": Metric("max", 0.0, "share of reals whose k-NN ball holds a fake (k=5)"),
    "modes": Metric("max", 0.0, "modes captured"),
    "hq": Metric("max", 0.0, "share of high-quality samples"),
    "kl_modes": Metric("min", 1e5, "KL(captured-mode histogram || uniform)"),
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
