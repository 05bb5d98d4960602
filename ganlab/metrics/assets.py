"""The evaluation assets of one protocol: made once, on the CPU, then shipped as one file.

A number from one node must mean what the same number means on another, so nothing a metric
compares against is recomputed where a trial runs. `build_assets(data, n_fake)` makes, on the
CPU, everything that depends only on the real data and the extractor:

- the extractor's identity: its weights hash, and for the classifier its weights themselves
  (shipped in the package for digits, trained once on the sweep's driver for MNIST-like sets);
  Inception's weights are one file every node provides, checked against the hash;
- the reference statistics (`ganlab.metrics.reference`) and the real-data FID floor;
- the real side of every metric: the covariance's square root (FID), the real k-NN radii
  (PRDC) and the real half of KID's subset sums.

A sweep's driver builds them once per (data set, n_fake), keeps them in the run directory and
hands them to every trial (`ganlab.protocols`), so every node measures against the same
numbers; `sha` (the protocol's `reference_sha`) names them in every row. `ganlab trial` and the
tests build them where they run.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ganlab.data import Data
from ganlab.metrics.cache import tensors_sha256
from ganlab.metrics.classifier import ClassifierExtractor, classifier_file, classifier_from_state
from ganlab.metrics.extractors import Extractor, load_extractor
from ganlab.metrics.frechet import Statistics, covariance_sqrt
from ganlab.metrics.kid import (
    KID_SEED,
    KID_SUBSETS,
    kid_subset_size,
    kid_subsets,
    within_subset_sums,
)
from ganlab.metrics.prdc import PRDC_K, knn_radii, prdc_features
from ganlab.metrics.reference import Reference, reference_statistics

ASSETS_VERSION = 1  # bump when what the file holds changes


class ExtractorMismatch(ValueError):
    """An extractor here that is not the one the protocol was made with."""


@dataclass(frozen=True)
class EvalAssets:
    """Everything an `Evaluator` needs of the real data, for one (data set, n_fake)."""

    dataset: str
    n_fake: int
    extractor: str  # "raw", "classifier" or "inception"
    weights: str  # the extractor's weights hash ("" for raw)
    classifier: dict[str, Any] | None  # the classifier file's dict; None for other extractors
    reference: Reference
    cov_sqrt: Tensor  # symmetric square root of the reference covariance (float64)
    prdc_radii: Tensor  # k-NN radii of the real PRDC features
    kid_real_within: Tensor  # the real half of KID: kernel sums within each real subset
    sha: str  # SHA-256 of the reference and the real side: the protocol's `reference_sha`

    @property
    def kid_m(self) -> int:
        return kid_subset_size(len(self.reference.features), self.n_fake)

    def kid_real_idx(self) -> Tensor:
        """The real KID subsets (a seeded integer draw: the same on every machine)."""
        return kid_subsets(len(self.reference.features), self.kid_m, KID_SUBSETS, KID_SEED)

    def kid_fake_idx(self) -> Tensor:
        return kid_subsets(self.n_fake, self.kid_m, KID_SUBSETS, KID_SEED + 1)

    def extractor_on(self, data: Data, device: str) -> Extractor:
        """The protocol's extractor on `device`: the classifier from these weights, others as
        this machine has them, checked against the protocol's hash."""
        made = _extractor(data, self.classifier, device)
        if made.weights != self.weights:
            raise ExtractorMismatch(
                f"{data.name}: this machine's {made.name} weights hash to {made.weights}, but "
                f"the sweep's protocol was made with {self.weights}; give every node the same "
                "weights file (for Inception, $GANLAB_INCEPTION_WEIGHTS)"
            )
        return made

    def check(self, data: Data, n_fake: int) -> None:
        if (self.dataset, self.n_fake) != (data.name, n_fake):
            raise ValueError(
                f"evaluation assets of {self.dataset} at n_fake={self.n_fake} given for "
                f"{data.name} at n_fake={n_fake}"
            )

    def to_state(self) -> dict[str, Any]:
        """Plain tensors, numbers and strings: what the file holds (`weights_only` loading)."""
        ref = self.reference
        return {
            "version": ASSETS_VERSION,
            "dataset": self.dataset,
            "n_fake": self.n_fake,
            "extractor": self.extractor,
            "weights": self.weights,
            "classifier": self.classifier,
            "reference": {
                "split": ref.split,
                "n": ref.n,
                "mean": ref.stats.mean,
                "cov": ref.stats.cov,
                "features": ref.features,
                "floor": ref.floor,
                "dim": ref.dim,
            },
            "cov_sqrt": self.cov_sqrt,
            "prdc_radii": self.prdc_radii,
            "kid_real_within": self.kid_real_within,
            "sha": self.sha,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "EvalAssets":
        """The assets of `to_state()`'s dict, checked against their own hash."""
        if state.get("version") != ASSETS_VERSION:
            raise ValueError(f"evaluation assets of version {state.get('version')}, "
                             f"expected {ASSETS_VERSION}")  # fmt: skip
        ref = state["reference"]
        reference = Reference(
            ref["split"], ref["n"], Statistics(ref["mean"], ref["cov"]), ref["features"],
            ref["floor"], ref["dim"],
        )  # fmt: skip
        parts = (state["cov_sqrt"], state["prdc_radii"], state["kid_real_within"])
        sha = _sha(reference, *parts)
        if sha != state["sha"]:
            raise ValueError(f"evaluation assets of {state['dataset']} hash to {sha[:16]}, "
                             f"not {state['sha'][:16]}: the file was changed")  # fmt: skip
        keys = ("dataset", "n_fake", "extractor", "weights", "classifier")
        return cls(**{k: state[k] for k in keys}, reference=reference, cov_sqrt=parts[0],
                   prdc_radii=parts[1], kid_real_within=parts[2], sha=sha)  # fmt: skip

    def save(self, path) -> None:
        torch.save(self.to_state(), path)

    @classmethod
    def load(cls, path) -> "EvalAssets":
        return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))


def build_assets(data: Data, n_fake: int) -> "EvalAssets":
    """The assets of evaluating `n_fake` samples of `data`, made on the CPU (the reference
    statistics from the cache, or computed into it)."""
    data = data.to(torch.device("cpu"))
    saved = classifier_file(data) if data.extractor == "classifier" else None
    extractor = _extractor(data, saved, "cpu")
    reference = reference_statistics(data, extractor, n_fake)
    real = prdc_features(reference.features)
    kid_m = kid_subset_size(len(reference.features), n_fake)
    kid_idx = kid_subsets(len(reference.features), kid_m, KID_SUBSETS, KID_SEED)
    cov_sqrt = covariance_sqrt(reference.stats.cov)
    radii = knn_radii(real, PRDC_K)
    within = within_subset_sums(reference.features, kid_idx)
    return EvalAssets(
        dataset=data.name,
        n_fake=n_fake,
        extractor=extractor.name,
        weights=extractor.weights,
        classifier=saved,
        reference=reference,
        cov_sqrt=cov_sqrt,
        prdc_radii=radii,
        kid_real_within=within,
        sha=_sha(reference, cov_sqrt, radii, within),
    )


def _extractor(data: Data, classifier: dict[str, Any] | None, device: str) -> Extractor:
    """The classifier of the saved weights `classifier`, or the data's other extractor."""
    if classifier is None:
        return load_extractor(data, device)
    return ClassifierExtractor(classifier_from_state(classifier), data.stacked, device)


def _sha(reference: Reference, cov_sqrt: Tensor, radii: Tensor, within: Tensor) -> str:
    floor = torch.tensor(reference.floor, dtype=torch.float64)
    return tensors_sha256({
        "mean": reference.stats.mean, "cov": reference.stats.cov,
        "features": reference.features, "floor": floor, "cov_sqrt": cov_sqrt,
        "prdc_radii": radii, "kid_real_within": within,
    })  # fmt: skip
