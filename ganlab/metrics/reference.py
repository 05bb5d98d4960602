"""Reference statistics of real data, computed once per (dataset, extractor, n) and cached.

Which real data a dataset is compared against (the "reference" of the protocol):

- 2-D mixtures: `n_fake` fresh samples of the mixture drawn with `REFERENCE_SEED` ("mixture"),
  so real and fake sets are the same size, as FID's bias and PRDC's k-NN radii want.
- image datasets: the held-out split ("test"), never the split the GAN and the protocol's
  classifier are trained on: measured against training images, a generator that memorises them
  beats real images it has not seen (digits: FID 0.3 against 9.7). Stacked images: `n_fake`
  stacks of held-out images drawn with `REFERENCE_SEED`; other datasets: the whole split.

Beside the statistics the file holds the real-data floor: the FID of `n_fake` training samples
(fresh mixture samples on 2-D data) against the reference, what a generator that reproduces its
training data exactly scores under this protocol. Report it next to every FID.

The file holds the mean and covariance of all n real features and a seeded sample of at most
`SAMPLE_CAP` of the features themselves, which KID and PRDC use. Its name carries a fingerprint
of the data, so changed data never reads stale statistics. It is written under a file lock with
an atomic rename, so concurrent trials compute it once and never read half a file.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ganlab.data import Data, fingerprint, to_float
from ganlab.metrics.cache import cache_dir, cached
from ganlab.metrics.extractors import Extractor
from ganlab.metrics.frechet import Statistics, features_to_statistics, statistics_to_frechet

REFERENCE_SEED = 123_456_789  # apart from the small seeds trials train with
FLOOR_SEED = REFERENCE_SEED + 1  # the training samples behind the real-data floor
REFERENCE_VERSION = 2  # bump when the way reference files are computed changes
SAMPLE_CAP = 10_000
_CHUNK = 1000


@dataclass(frozen=True)
class Reference:
    """Real-data statistics of one (dataset, extractor, split, n)."""

    split: str  # "mixture" or "test"
    n: int  # real samples behind `stats`
    stats: Statistics
    features: Tensor  # at most SAMPLE_CAP real features, in a seeded random order
    floor: float  # FID of n_fake training samples against `stats`: the real-data floor
    dim: int  # feature dimension


def reference_split(data: Data, n_fake: int) -> tuple[str, int]:
    """(split, n_real) of the protocol for `data` evaluated on `n_fake` samples."""
    if data.is_2d:
        return "mixture", n_fake
    if data.test is None:
        raise ValueError(f"{data.name}: no held-out split to take reference statistics from")
    if data.stacked > 1:
        return "test", n_fake
    return "test", len(data.test)


def reference_path(
    data: Data, extractor: Extractor, split: str, n: int, n_fake: int | None = None
) -> Path:
    """The cache file of one reference (`n_fake`, default `n`: the floor's sample count)."""
    weights = extractor.weights or "none"
    n_fake = n if n_fake is None else n_fake
    name = (
        f"reference-{data.name}-{fingerprint(data)}-{extractor.name}-{weights}-{split}-{n}"
        f"-floor{n_fake}-v{REFERENCE_VERSION}.pt"
    )
    return cache_dir() / name


def real_samples(data: Data, split: str, n: int) -> Iterator[Tensor]:
    """The reference's real samples in the model's range, in chunks."""
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    if data.is_2d:
        yield data.sample(n, generator)
    elif data.stacked > 1:
        yield data.sample_labelled(n, generator, split)[0]
    else:
        images = data.train if split == "train" else data.test
        for start in range(0, n, _CHUNK):
            yield to_float(images[start : start + _CHUNK])


def floor_samples(data: Data, n: int) -> Tensor:
    """`n` training samples (distinct images where the split has enough) behind the floor."""
    generator = torch.Generator().manual_seed(FLOOR_SEED)
    if data.is_2d or data.stacked > 1 or n > len(data.train):
        return data.sample(n, generator)
    return to_float(data.train[torch.randperm(len(data.train), generator=generator)[:n]])


def extract(extractor: Extractor, batches: Iterator[Tensor]) -> Tensor:
    """Features of every sample in `batches`, on the CPU."""
    return torch.cat([extractor(chunk).features.cpu() for chunk in _chunks(batches)])


def compute_reference(data: Data, extractor: Extractor, split: str, n: int, n_fake: int) -> dict:
    """Extract the real features and summarise them (what the cache file holds)."""
    data = data.to(torch.device("cpu"))  # seeded draws on the CPU: the same file on any device
    features = extract(extractor, real_samples(data, split, n))
    stats = features_to_statistics(features)
    floor_features = extract(extractor, iter([floor_samples(data, n_fake)]))
    floor = float(statistics_to_frechet(stats, features_to_statistics(floor_features)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(REFERENCE_SEED))
    return {
        "split": split,
        "n": n,
        "mean": stats.mean,
        "cov": stats.cov,
        "features": features[order[:SAMPLE_CAP]].clone(),
        "floor": floor,
    }


def _chunks(batches: Iterator[Tensor]) -> Iterator[Tensor]:
    for batch in batches:
        yield from batch.split(_CHUNK)


def reference_statistics(data: Data, extractor: Extractor, n_fake: int) -> Reference:
    """The reference of `data` under `extractor`: read from the cache or computed into it."""
    split, n = reference_split(data, n_fake)
    saved = cached(
        reference_path(data, extractor, split, n, n_fake),
        lambda: compute_reference(data, extractor, split, n, n_fake),
    )
    return Reference(
        saved["split"],
        saved["n"],
        Statistics(saved["mean"], saved["cov"]),
        saved["features"],
        saved["floor"],
        saved["mean"].shape[0],
    )
