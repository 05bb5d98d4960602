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
