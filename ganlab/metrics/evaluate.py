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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from ganlab.data import Data
from ganlab.metrics import METRICS, measure_plugin_metrics, plugin_metrics
from ganlab.metrics.assets import EvalAssets, build_assets
from ganlab.metrics.conventions import departures
from ganlab.metrics.extractors import Extractor
from ganlab.metrics.features import Features
from ganlab.metrics.fid_infinity import features_to_fid_infinity, fid_infinity_sizes
from ganlab.metrics.frechet import Statistics, features_to_statistics, statistics_to_frechet
from ganlab.metrics.inception import WEIGHTS_SHA256_PREFIX
from ganlab.metrics.inception_score import IS_SPLITS, probabilities_to_inception_score
from ganlab.metrics.kid import (
    kernel_sums_to_kid,
    kernel_sums_to_kid_std,
    subset_kernel_sums,
    within_subset_sums,
)
from ganlab.metrics.modes import (
    class_hq_counts,
    class_mode_statistics,
    drop_statistics,
    min_mode_count,
    mixture_hq_counts,
    mixture_mode_statistics,
)
from ganlab.metrics.prdc import PRDC_K, features_to_prdc, prdc_features

# Bump when a constant of the metrics changes (KID subsets, PRDC cap, IS splits, hq thresholds):
# results computed under different versions then carry different protocols.
# 4: fid_inf, kid_std, modes_dropped, mode_dropping; 3: the shipped digits classifier
PROTOCOL_VERSION = 4


@dataclass(frozen=True)
class Protocol:
    """How an evaluation was made; recorded with every result so protocols never mix.

    What a reader needs to compare a number with a paper's: the features (extractor, their
    dimension, the weights' hash, whether they are the standard FID Inception file, what data
    they were trained on), the sample counts and the real split compared against, the FID a
    copy of the training data scores (`fid_floor`), and whether FID's covariances are rank
    deficient (fewer samples than feature dimensions: FID is then biased, not comparable),
    the subset sizes FID∞ is fitted on, the high-quality count below which a mode is dropped,
    and every setting papers do not use (`ganlab.metrics.conventions`).
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
    reference_sha: str = ""  # hash of the reference statistics and real side (`EvalAssets`)
    rank_deficient: bool = False  # min(n_real, n_fake) <= dim: FID's covariances are singular
    sampling: str = "eval"  # how G drew the samples (BatchNorm in eval mode)
    fid_inf_n: tuple[int, ...] = ()  # fake subset sizes FID∞ is fitted on
    mode_min_count: int = 0  # high-quality samples a mode needs not to be dropped; 0: no modes
    departures: tuple[str, ...] = ()  # settings papers do not use, in words
    # An evaluation before the last with its own count (`n_eval_rung`): the `reference_sha` of
    # the last evaluation's protocol, the measurement its numbers belong to (`rung_protocol`).
    final_reference_sha: str = ""

    def to_json(self) -> str:
        """Stable JSON: sorted keys, no spaces; `final_reference_sha` only where it is set, so
        the last evaluation's protocol reads as it did before there was one."""
        fields = asdict(self)
        if not self.final_reference_sha:
            del fields["final_reference_sha"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def build_protocol(data: Data, extractor: Extractor, assets: EvalAssets) -> Protocol:
    """The protocol of evaluating `assets.n_fake` samples of `data` against its assets."""
    features_from = {"classifier": f"{data.classifier_data}/train", "inception": "imagenet"}
    reference, n_fake = assets.reference, assets.n_fake
    has_modes = data.is_2d or (extractor.has_probs and bool(data.n_modes))
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
        reference_sha=assets.sha[:16],
        rank_deficient=min(reference.n, n_fake) <= reference.dim,
        fid_inf_n=fid_infinity_sizes(n_fake),
        mode_min_count=min_mode_count(n_fake, data.n_modes) if has_modes else 0,
        departures=departures(
            is_2d=data.is_2d,
            stacked=data.stacked > 1,
            n_fake=n_fake,
            n_real=reference.n,
            kid_subset=assets.kid_m,
            is_splits=IS_SPLITS if extractor.has_probs else None,
        ),
    )


def rung_protocol(rung: Protocol, final: Protocol) -> Protocol:
    """The protocol of the evaluations before the last (`n_eval_rung` fakes, their own
    reference), tied to the last one's: its rows and the last's are one measurement
    (`ganlab.results.measurements`), each with its own count."""
    if rung.reference_sha == final.reference_sha:
        return rung  # the same count: the same protocol
    return replace(rung, final_reference_sha=final.reference_sha)


class Evaluator:
    """Scores `n_fake` generated samples against the dataset's real data.

    `n_eval` None takes the dataset's protocol size (`data.n_eval`). `assets` are the
    protocol's real side, made once for a whole sweep (`ganlab.metrics.assets`); without them
    they are built here. Reported metrics:
    `fid`, `kid`, `precision`, `recall`, `density`, `coverage`, `fid_inf`, `kid_std` always;
    `is` where the extractor has class probabilities; `modes`, `hq`, `kl_modes`,
    `modes_dropped`, `mode_dropping` where modes are defined (2-D mixtures, and class data with
    `data.n_modes`). `metrics` lists them.
    """

    def __init__(
        self,
        data: Data,
        n_eval: int | None = None,
        device: str = "cpu",
        assets: EvalAssets | None = None,
    ):
        self.data = data
        self.n_fake = data.n_eval if n_eval is None else n_eval
        if self.n_fake <= PRDC_K:
            raise ValueError(f"n_eval must exceed k={PRDC_K} (k-NN metrics), got {self.n_fake}")
        self.device = device
        assets = build_assets(data, self.n_fake) if assets is None else assets
        assets.check(data, self.n_fake)
        self.extractor = assets.extractor_on(data, device)
        self.protocol = build_protocol(data, self.extractor, assets)
        # The real side was computed once, on the CPU, and is only moved here: the same numbers
        # on every device and node, and nothing of it repeated per call.
        reference = assets.reference
        self._real_stats = Statistics(
            reference.stats.mean.to(device), reference.stats.cov.to(device)
        )
        self._real_cov_sqrt = assets.cov_sqrt.to(device)
        self._prdc_real = prdc_features(reference.features).to(device)
        self._prdc_real_radii = assets.prdc_radii.to(device)
        self._kid_m = assets.kid_m
        self._kid_real_idx = assets.kid_real_idx().to(device)
        self._kid_fake_idx = assets.kid_fake_idx().to(device)
        self._kid_real_within = assets.kid_real_within.to(device)
        self._kid_real = reference.features.to(device)
        self._centres = data.centres.to(device) if data.centres is not None else None
        self.metrics = self._metric_names()

    def _metric_names(self) -> tuple[str, ...]:
        names = ["fid", "kid", "precision", "recall", "density", "coverage", "fid_inf", "kid_std"]
        if self.extractor.has_probs:
            names.append("is")
        if self.data.is_2d or (self.extractor.has_probs and self.data.n_modes):
            names += ["modes", "hq", "kl_modes", "modes_dropped", "mode_dropping"]
        names += plugin_metrics()  # after the built-ins: `ganlab.register.metric`
        assert set(names) <= set(METRICS), "every reported metric is registered"
        return tuple(names)

    def worst(self) -> dict[str, float]:
        """Every reported metric at its registered worst value."""
        return {name: METRICS[name].worst for name in self.metrics}

    def __call__(self, fake: Tensor, fid_inf: bool = True) -> dict[str, float]:
        """Metrics of `fake`, shape (n_fake, *data.shape), as plain floats: `measure` on the
        device, then one read to the host."""
        values, finite = self.measure(fake, fid_inf)
        read = torch.stack([finite.double(), *values.values()]).tolist()
        if not read[0]:
            return self.worst()
        return dict(zip(values, read[1:], strict=True))

    def evaluate_seeds(
        self, fakes: Sequence[Tensor], fid_inf: bool = True
    ) -> list[dict[str, float] | None]:
        """Metrics of each seed's fakes, as `__call__` gives them, with one extractor pass over
        all of them and one read to the host; None for a seed whose samples are not all finite
        (the trial marks it diverged)."""
        if not fakes:
            return []
        measured = self.measure_seeds(fakes, fid_inf)
        names = list(measured[0][0])
        rows = torch.stack([
            torch.stack([torch.isfinite(fake).all().double(), finite.double(), *values.values()])
            for fake, (values, finite) in zip(fakes, measured, strict=True)
        ]).tolist()  # fmt: skip
        return [
            None if not samples_finite else dict(zip(names, values, strict=True))
            if finite else self.worst()
            for samples_finite, finite, *values in rows
        ]  # fmt: skip

    @torch.inference_mode()
    def measure(self, fake: Tensor, fid_inf: bool = True) -> tuple[dict[str, Tensor], Tensor]:
        """Every metric of `fake` as a 0-d float64 tensor on the evaluator's device, and whether
        the samples and their features were all finite (where not, the values mean nothing).
        Reads nothing back to the host. `fid_inf` False leaves FID∞ out (not measured): its fit
        costs `len(fid_inf_n) - 1` more Fréchet distances, so a trial measures it at its last
        evaluation only, unless it is the objective."""
        fake = self._checked(fake)
        return self._measure(fake, self.extractor(fake), fid_inf)

    @torch.inference_mode()
    def measure_seeds(
        self, fakes: Sequence[Tensor], fid_inf: bool = True
    ) -> list[tuple[dict[str, Tensor], Tensor]]:
        """`measure` of each seed's fakes, their features extracted in one pass (on a card, the
        extractor's cost is its kernels, not its calls, once all seeds go through together)."""
        fakes = [self._checked(fake) for fake in fakes]
        extracted = self.extractor(torch.cat(fakes))
        n = self.n_fake
        probs = extracted.probs
        return [
            self._measure(fake, Features(extracted.features[i * n : (i + 1) * n],
                                         None if probs is None else probs[i * n : (i + 1) * n]),
                          fid_inf)
            for i, fake in enumerate(fakes)
        ]  # fmt: skip

    def _checked(self, fake: Tensor) -> Tensor:
        expected = (self.n_fake, *self.data.shape)
        if tuple(fake.shape) != expected:
            raise ValueError(f"expected fake samples of shape {expected}, got {tuple(fake.shape)}")
        return fake.to(self.device)

    def _measure(
        self, fake: Tensor, extracted: Features, fid_inf: bool
    ) -> tuple[dict[str, Tensor], Tensor]:
        features = extracted.features
        finite = torch.isfinite(fake).all() & torch.isfinite(features).all()
        # Non-finite features would make eigh raise: they are zeroed, and `finite` says so.
        features = torch.where(finite, features, 0.0)
        values = {"fid": self._fid(features), **self._kid(features)}
        if fid_inf:
            values["fid_inf"] = self._fid_inf(features, values["fid"])
        values.update(features_to_prdc(self._prdc_real, features, PRDC_K, self._prdc_real_radii))
        if "is" in self.metrics:
            values["is"] = probabilities_to_inception_score(extracted.probs)
        if self._centres is not None:
            values.update(mixture_mode_statistics(fake, self._centres, self.data.sigma))
            counts = mixture_hq_counts(fake, self._centres, self.data.sigma)
        elif "modes" in self.metrics:
            values.update(class_mode_statistics(extracted.probs, self.data.n_modes))
            counts = class_hq_counts(extracted.probs, self.data.n_modes)  # the samples hq counts
        if "modes" in self.metrics:
            values.update(drop_statistics(counts, self.protocol.mode_min_count))
        values.update(measure_plugin_metrics(self.metrics, fake, features, finite, self.data))
        return {name: values[name] for name in self.metrics if name in values}, finite

    def _fid_inf(self, features: Tensor, fid: Tensor) -> Tensor:
        sizes, cov_sqrt = self.protocol.fid_inf_n, self._real_cov_sqrt
        return features_to_fid_infinity(self._real_stats, features, sizes, cov_sqrt, full=fid)

    def _fid(self, features: Tensor) -> Tensor:
        fake = features_to_statistics(features)
        return statistics_to_frechet(self._real_stats, fake, self._real_cov_sqrt)

    def _kid(self, features: Tensor) -> dict[str, Tensor]:
        fake_within = within_subset_sums(features, self._kid_fake_idx)
        real, real_idx = self._kid_real, self._kid_real_idx
        cross = subset_kernel_sums(real, features, real_idx, self._kid_fake_idx)
        sums = (self._kid_real_within, fake_within, cross, self._kid_m)
        return {"kid": kernel_sums_to_kid(*sums), "kid_std": kernel_sums_to_kid_std(*sums)}
