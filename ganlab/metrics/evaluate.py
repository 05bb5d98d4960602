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
from ganlab.metrics.extractors import Extractor, load_extractor
from ganlab.metrics.frechet import (
    Statistics,
    covariance_sqrt,
    features_to_statistics,
    statistics_to_frechet,
)
from ganlab.metrics.inception import WEIGHTS_SHA256_PREFIX
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
from ganlab.metrics.reference import Reference, reference_statistics

# Bump when a constant of the metrics changes (KID subsets, PRDC cap, IS splits, hq thresholds):
# results computed under different versions then carry different protocols.
PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class Protocol:
    """How an evaluation was made; recorded with every result so protocols never mix.

    What a reader needs to compare a number with a paper's: the features (extractor, their
    dimension, the weights' hash, whether they are the standard FID Inception file, what data
    they were trained on), the sample counts and the real split compared against, the FID a
    copy of the training data scores (`fid_floor`), and whether FID's covariances are rank
    deficient (fewer samples than feature dimensions: FID is then biased, not comparable).
    """

    extractor: str  # "raw", "classifier" or "inception"
    weights: str  # hash of the extractor's weights; "" for raw
    n_real: int  # real samples behind the reference statistics
    n_fake: int  # generated samples per evaluation
    reference: str  # which real data: "mixture" (fresh 2-D samples) or "test" (held out)
    k: int = PRDC_K
    version: int = PROTOCOL_VERSION
    dim: int = 0  # feature dimension
    standard_weights: bool = False  # Inception only: the sha256 prefix of the standard file
    features_from: str = ""  # what the extractor was trained on: "digits/train", "imagenet"
    fid_floor: float = 0.0  # FID of n_fake training samples against the reference
    rank_deficient: bool = False  # min(n_real, n_fake) <= dim: FID's covariances are singular
    sampling: str = "eval"  # how G drew the samples (BatchNorm in eval mode)

    def to_json(self) -> str:
        """Stable JSON: sorted keys, no spaces."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def build_protocol(
    data: Data, extractor: Extractor, reference: Reference, n_fake: int
) -> Protocol:
    """The protocol of evaluating `n_fake` samples of `data` against `reference`."""
    features_from = {"classifier": f"{data.classifier_data}/train", "inception": "imagenet"}
    return Protocol(
        extractor.name,
        extractor.weights,
        reference.n,
        n_fake,
        reference.split,
        dim=reference.dim,
        standard_weights=extractor.name == "inception"
        and extractor.weights.startswith(WEIGHTS_SHA256_PREFIX),
        features_from=features_from.get(extractor.name, ""),
        fid_floor=reference.floor,
        rank_deficient=min(reference.n, n_fake) <= reference.dim,
    )


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
        self.protocol = build_protocol(data, self.extractor, reference, self.n_fake)
        # The real side is computed once, on the CPU, and then moved: the same numbers on every
        # device, and nothing of it repeated per call.
        real = reference.features
        prdc_real = prdc_features(real)
        kid_m = kid_subset_size(len(real), self.n_fake)
        kid_real_idx = kid_subsets(len(real), kid_m, KID_SUBSETS, KID_SEED)
        self._real_stats = Statistics(
            reference.stats.mean.to(device), reference.stats.cov.to(device)
        )
        self._real_cov_sqrt = covariance_sqrt(reference.stats.cov).to(device)
        self._prdc_real = prdc_real.to(device)
        self._prdc_real_radii = knn_radii(prdc_real, PRDC_K).to(device)
        self._kid_m = kid_m
        self._kid_real_idx = kid_real_idx.to(device)
        self._kid_fake_idx = kid_subsets(self.n_fake, kid_m, KID_SUBSETS, KID_SEED + 1).to(device)
        self._kid_real_within = within_subset_sums(real, kid_real_idx).to(device)
        self._kid_real = real.to(device)
        self._centres = data.centres.to(device) if data.centres is not None else None
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

    def __call__(self, fake: Tensor) -> dict[str, float]:
        """Metrics of `fake`, shape (n_fake, *data.shape), as plain floats: `measure` on the
        device, then one read to the host."""
        values, finite = self.measure(fake)
        read = torch.stack([finite.double(), *(values[name] for name in self.metrics)]).tolist()
        if not read[0]:
            return self.worst()
        return dict(zip(self.metrics, read[1:], strict=True))

    @torch.inference_mode()
    def measure(self, fake: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Every metric of `fake` as a 0-d float64 tensor on the evaluator's device, and whether
        the samples and their features were all finite (where not, the values mean nothing).
        Reads nothing back to the host."""
        expected = (self.n_fake, *self.data.shape)
        if tuple(fake.shape) != expected:
            raise ValueError(f"expected fake samples of shape {expected}, got {tuple(fake.shape)}")
        fake = fake.to(self.device)
        extracted = self.extractor(fake)
        features = extracted.features
        finite = torch.isfinite(fake).all() & torch.isfinite(features).all()
        # Non-finite features would make eigh raise: they are zeroed, and `finite` says so.
        features = torch.where(finite, features, 0.0)
        values = {"fid": self._fid(features), "kid": self._kid(features)}
        values.update(features_to_prdc(self._prdc_real, features, PRDC_K, self._prdc_real_radii))
        if "is" in self.metrics:
            values["is"] = probabilities_to_inception_score(extracted.probs)
        if self._centres is not None:
            values.update(mixture_mode_statistics(fake, self._centres, self.data.sigma))
        elif "modes" in self.metrics:
            values.update(class_mode_statistics(extracted.probs, self.data.n_modes))
        return {name: values[name] for name in self.metrics}, finite

    def _fid(self, features: Tensor) -> Tensor:
        fake = features_to_statistics(features)
        return statistics_to_frechet(self._real_stats, fake, self._real_cov_sqrt)

    def _kid(self, features: Tensor) -> Tensor:
        fake_within = within_subset_sums(features, self._kid_fake_idx)
        real, real_idx = self._kid_real, self._kid_real_idx
        cross = subset_kernel_sums(real, features, real_idx, self._kid_fake_idx)
        return kernel_sums_to_kid(self._kid_real_within, fake_within, cross, self._kid_m)
