"""What a trial calls: `Evaluator(data)(fake) -> {metric: float}` under a recorded `Protocol`.

Everything that depends only on the real data (reference statistics, the square root of the real
covariance, the real k-NN radii, the real half of KID and its subsets) is prepared once when the
evaluator is built, so each call pays only for the fake samples.

Non-finite input: the trial marks a seed whose samples are not finite as diverged before it
evaluates, but the evaluator is defensive all the same. If the samples, or their features, are
not all finite, it returns every metric it reports at its `METRICS[name].worst` value (finite,
worse than any real result) rather than raising, since a raised error makes Ray retry the trial.
"""

import json
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ganlab.data import Data
from ganlab.metrics import METRICS
from ganlab.metrics.extractors import load_extractor
from ganlab.metrics.frechet import (
    Statistics,
    covariance_sqrt,
    features_to_statistics,
    statistics_to_frechet,
)
from ganlab.metrics.inception_score import probabilities_to_inception_score
from ganlab.metrics.kid import (
    KID_SEED,
    KID_SUBSETS,
    kernel_sums_to_kid,
    kid_subset_size,
    kid_subsets,
    subset_kernel_sums,
    within_subset_sums,
)
from ganlab.metrics.modes import class_mode_statistics, mixture_mode_statistics
from ganlab.metrics.prdc import PRDC_K, features_to_prdc, knn_radii, prdc_features
from ganlab.metrics.reference import reference_statistics

# Bump when a constant of the metrics changes (KID subsets, PRDC cap, IS splits, hq thresholds):
# results computed under different versions then carry different protocols.
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Protocol:
    """How an evaluation was made; recorded with every result so protocols never mix."""

    extractor: str  # "raw", "classifier" or "inception"
    weights: str  # hash of the extractor's weights; "" for raw
    n_real: int  # real samples behind the reference statistics
    n_fake: int  # generated samples per evaluation
    reference: str  # which real data: "mixture" (fresh 2-D samples) or "train"
    k: int = PRDC_K
    version: int = PROTOCOL_VERSION

    def to_json(self) -> str:
        """Stable JSON: sorted keys, no spaces."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


class Evaluator:
    """Scores `n_fake` generated samples against the dataset's real data.

    `n_eval` None takes the dataset's protocol size (`data.n_eval`). Reported metrics:
    `fid`, `kid`, `precision`, `recall`, `density`, `coverage` always; `is` where the extractor
    has class probabilities; `modes`, `hq`, `kl_modes` where modes are defined (2-D mixtures,
    and class data with `data.n_modes`). `metrics` lists them.
    """

    def __init__(self, data: Data, n_eval: int | None = None, device: str = "cpu"):
        self.data = data
        self.n_fake = data.n_eval if n_eval is None else n_eval
        if self.n_fake <= PRDC_K:
            raise ValueError(f"n_eval must exceed k={PRDC_K} (k-NN metrics), got {self.n_fake}")
        self.device = device
        self.extractor = load_extractor(data, device)
        reference = reference_statistics(data, self.extractor, self.n_fake)
        self.protocol = Protocol(
            self.extractor.name, self.extractor.weights, reference.n, self.n_fake, reference.split
        )
        self._real_stats = Statistics(
            reference.stats.mean.to(device), reference.stats.cov.to(device)
        )
        self._real_cov_sqrt = covariance_sqrt(self._real_stats.cov)
        real = reference.features.to(device)
        self._prdc_real = prdc_features(real)
        self._prdc_real_radii = knn_radii(self._prdc_real, PRDC_K)
        self._kid_m = kid_subset_size(len(real), self.n_fake)
        self._kid_real_idx = kid_subsets(len(real), self._kid_m, KID_SUBSETS, KID_SEED)
        self._kid_fake_idx = kid_subsets(self.n_fake, self._kid_m, KID_SUBSETS, KID_SEED + 1)
        self._kid_real_within = within_subset_sums(real, self._kid_real_idx)
        self._kid_real = real
        self.metrics = self._metric_names()

    def _metric_names(self) -> tuple[str, ...]:
        names = ["fid", "kid", "precision", "recall", "density", "coverage"]
        if self.extractor.has_probs:
            names.append("is")
        if self.data.is_2d or (self.extractor.has_probs and self.data.n_modes):
            names += ["modes", "hq", "kl_modes"]
        assert set(names) <= set(METRICS), "every reported metric is registered"
        return tuple(names)

    def worst(self) -> dict[str, float]:
        """Every reported metric at its registered worst value."""
        return {name: METRICS[name].worst for name in self.metrics}

    @torch.inference_mode()
    def __call__(self, fake: Tensor) -> dict[str, float]:
        """Metrics of `fake`, shape (n_fake, *data.shape), as plain floats."""
        expected = (self.n_fake, *self.data.shape)
        if tuple(fake.shape) != expected:
            raise ValueError(f"expected fake samples of shape {expected}, got {tuple(fake.shape)}")
        fake = fake.to(self.device)
        if not torch.isfinite(fake).all():
            return self.worst()
        extracted = self.extractor(fake)
        features = extracted.features
        if not torch.isfinite(features).all():
            return self.worst()
        values = {"fid": self._fid(features), "kid": self._kid(features)}
        values.update(features_to_prdc(self._prdc_real, features, PRDC_K, self._prdc_real_radii))
        if "is" in self.metrics:
            values["is"] = probabilities_to_inception_score(extracted.probs)
        if self.data.is_2d:
            values.update(mixture_mode_statistics(fake, self.data.centres, self.data.sigma))
        elif "modes" in self.metrics:
            values.update(class_mode_statistics(extracted.probs, self.data.n_modes))
        return {name: float(values[name]) for name in self.metrics}

    def _fid(self, features: Tensor) -> float:
        fake = features_to_statistics(features)
        return statistics_to_frechet(self._real_stats, fake, self._real_cov_sqrt)

    def _kid(self, features: Tensor) -> float:
        fake_within = within_subset_sums(features, self._kid_fake_idx)
        real, real_idx = self._kid_real, self._kid_real_idx
        cross = subset_kernel_sums(real, features, real_idx, self._kid_fake_idx)
        return kernel_sums_to_kid(self._kid_real_within, fake_within, cross, self._kid_m)
