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

# The public API. Imported after METRICS exists: `evaluate` reads it at import time.
from ganlab.metrics.cache import cache_dir  # noqa: E402
from ganlab.metrics.classifier import SmallCNN, load_classifier, train_classifier  # noqa: E402
from ganlab.metrics.evaluate import Evaluator, Protocol  # noqa: E402
from ganlab.metrics.extractors import EXTRACTORS, Extractor, load_extractor  # noqa: E402
from ganlab.metrics.features import Features  # noqa: E402
from ganlab.metrics.frechet import (  # noqa: E402
    Statistics,
    features_to_statistics,
    statistics_to_frechet,
)
from ganlab.metrics.inception_score import probabilities_to_inception_score  # noqa: E402
from ganlab.metrics.kid import features_to_kid  # noqa: E402
from ganlab.metrics.modes import class_mode_statistics, mixture_mode_statistics  # noqa: E402
from ganlab.metrics.prdc import features_to_prdc  # noqa: E402
from ganlab.metrics.reference import Reference, reference_statistics  # noqa: E402

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
