"""Reference statistics of real data, computed once per (dataset, extractor, n) and cached.

Which real data a dataset is compared against (the "reference" of the protocol):

- 2-D mixtures: `n_fake` fresh samples of the mixture drawn with `REFERENCE_SEED` ("mixture"),
  so real and fake sets are the same size, as FID's bias and PRDC's k-NN radii want.
- stacked images: `n_fake` stacks of training images drawn with `REFERENCE_SEED` ("train").
- other image datasets: the whole training split ("train"): the distribution the GAN is trained
  to match, and the larger split (digits: 1,437 images against 359). The classifier was trained
  on it too, so its features are a little tighter on real images than on any new image; a
  perfect generator is still measured against the data it learnt from.

The file holds the mean and covariance of all n real features and a seeded sample of at most
`SAMPLE_CAP` of the features themselves, which KID and PRDC use. It is written under a file lock
with an atomic rename, so concurrent trials compute it once and never read half a file.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ganlab.data import Data, to_float
from ganlab.metrics.cache import cache_dir, cached
from ganlab.metrics.extractors import Extractor
from ganlab.metrics.frechet import Statistics, features_to_statistics

REFERENCE_SEED = 123_456_789  # apart from the small seeds trials train with
REFERENCE_VERSION = 1  # bump when the way reference files are computed changes
SAMPLE_CAP = 10_000
_CHUNK = 1000


@dataclass(frozen=True)
class Reference:
    """Real-data statistics of one (dataset, extractor, split, n)."""

    split: str  # "mixture" or "train"
    n: int  # real samples behind `stats`
    stats: Statistics
    features: Tensor  # at most SAMPLE_CAP real features, in a seeded random order


def reference_split(data: Data, n_fake: int) -> tuple[str, int]:
    """(split, n_real) of the protocol for `data` evaluated on `n_fake` samples."""
    if data.is_2d:
        return "mixture", n_fake
    if data.train is None:
        raise ValueError(f"{data.name}: no training split to take reference statistics from")
    if data.stacked > 1:
        return "train", n_fake
    return "train", len(data.train)


def reference_path(data: Data, extractor: Extractor, split: str, n: int) -> Path:
    """The cache file of one reference."""
    weights = extractor.weights or "none"
    name = f"reference-{data.name}-{extractor.name}-{weights}-{split}-{n}-v{REFERENCE_VERSION}.pt"
    return cache_dir() / name


def real_samples(data: Data, split: str, n: int) -> Iterator[Tensor]:
    """The reference's real samples in the model's range, in chunks."""
    if data.is_2d or data.stacked > 1:
        generator = torch.Generator().manual_seed(REFERENCE_SEED)
        yield data.sample(n, generator)
        return
    images = data.train if split == "train" else data.test
    for start in range(0, n, _CHUNK):
        yield to_float(images[start : start + _CHUNK])


def compute_reference(data: Data, extractor: Extractor, split: str, n: int) -> dict:
    """Extract the real features and summarise them (what the cache file holds)."""
    features = torch.cat(
        [extractor(chunk).features.cpu() for chunk in _chunks(real_samples(data, split, n))]
    )
    stats = features_to_statistics(features)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(REFERENCE_SEED))
    return {
        "split": split,
        "n": n,
        "mean": stats.mean,
        "cov": stats.cov,
        "features": features[order[:SAMPLE_CAP]].clone(),
    }


def _chunks(batches: Iterator[Tensor]) -> Iterator[Tensor]:
    for batch in batches:
        yield from batch.split(_CHUNK)


def reference_statistics(data: Data, extractor: Extractor, n_fake: int) -> Reference:
    """The reference of `data` under `extractor`: read from the cache or computed into it."""
    split, n = reference_split(data, n_fake)
    saved = cached(
        reference_path(data, extractor, split, n),
        lambda: compute_reference(data, extractor, split, n),
    )
    return Reference(
        saved["split"], saved["n"], Statistics(saved["mean"], saved["cov"]), saved["features"]
    )
