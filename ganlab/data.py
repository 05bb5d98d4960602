"""Datasets: a registry of loaders that each return an in-memory `Data`.

Small datasets live as tensors in memory and are sampled with a per-seed `torch.Generator`, so
training is deterministic and needs no DataLoader workers. The torchvision loaders read a data
directory in the datasets' real on-disk formats and download only when asked to.
"""

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ganlab.registry import lookup, register


@dataclass(frozen=True)
class Data:
    """One dataset, held in memory, and what the evaluation protocol needs to know of it."""

    name: str
    shape: tuple[int, ...]  # one sample: (2,) or (C, H, W)
    extractor: str  # feature extractor of the protocol: "raw", "classifier" or "inception"
    n_eval: int  # samples per evaluation in the protocol
    train: Tensor | None = None  # images, uint8 [0, 255] or float [-1, 1]
    train_labels: Tensor | None = None
    test: Tensor | None = None
    test_labels: Tensor | None = None
    centres: Tensor | None = None  # 2-D mixtures: mode centres
    sigma: float = 0.0  # 2-D mixtures: standard deviation of each mode
    n_modes: int = 0  # 0 where modes are not defined
    stacked: int = 1  # channels drawn from independent images (stacked-digits: 3)
    classifier_data: str = ""  # dataset whose classifier reads modes (stacked-digits: digits)

    @property
    def is_2d(self) -> bool:
        return self.centres is not None

    @property
    def device(self) -> torch.device:
        """Where the data lives, and so where every draw from it is made."""
        held = self.centres if self.centres is not None else self.train
        return held.device if held is not None else torch.device("cpu")

    def to(self, device: torch.device) -> "Data":
        """This dataset with its tensors on `device` (images stay uint8 there)."""
        moved = {
            name: value.to(device)
            for name, value in vars(self).items()
            if isinstance(value, Tensor)
        }
        return dataclasses.replace(self, **moved)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """`n` training samples as float32 in the model's range ([-1, 1] for images), drawn on
        the data's device with `generator`, which must draw there too."""
        if self.centres is not None:
            return _mixture_sample(self.centres, self.sigma, n, generator)
        return self._images(self.train, n, generator)[0]

    def sample_labelled(
        self, n: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[Tensor, Tensor]:
        """`n` samples with their labels (mode index, or digits combined base 10 if stacked)."""
        if self.centres is not None:
            x = _mixture_sample(self.centres, self.sigma, n, generator)
            return x, torch.cdist(x, self.centres).argmin(1)
        images = self.train if split == "train" else self.test
        labels = self.train_labels if split == "train" else self.test_labels
        return self._images(images, n, generator, labels)

    def _images(
        self, images: Tensor, n: int, generator: torch.Generator, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        idx = torch.randint(
            0, len(images), (n, self.stacked), generator=generator, device=images.device
        )
        x = to_float(images[idx.flatten()])
        if self.stacked > 1:  # each channel an independent image
            x = x.reshape(n, self.stacked, *x.shape[2:])
        y = None
        if labels is not None:
            digits = labels[idx]
            powers = 10 ** torch.arange(self.stacked - 1, -1, -1, device=digits.device)
            y = (digits * powers).sum(1)
        return x, y


def to_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] to float32 in [-1, 1]; float images pass through."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def _mixture_sample(centres: Tensor, sigma: float, n: int, generator: torch.Generator) -> Tensor:
    device = centres.device
    idx = torch.randint(0, len(centres), (n,), generator=generator, device=device)
    noise = torch.randn(n, centres.shape[1], generator=generator, device=device)
    return centres[idx] + sigma * noise


@dataclass(frozen=True)
class Source:
    """A registered dataset: what a sample looks like (known before loading) and its loader."""

    shape: tuple[int, ...]
    modes: int  # number of modes the protocol counts; 0 where modes are not defined
    extractor: str
    load: Callable[[str, bool], Data]


DATASETS: dict[str, Source] = {}
"""name -> Source. The names are the sweep files' vocabulary."""


def dataset(name: str, shape: tuple[int, ...], modes: int, extractor: str):
    """Register `fn(data_dir, download) -> Data` under `name`."""

    def add(fn: Callable[[str, bool], Data]) -> Callable[[str, bool], Data]:
        register(DATASETS, name)(Source(shape, modes, extractor, fn))
        return fn

    return add


def load(name: str, data_dir: str = "data", download: bool = False) -> Data:
    """Load a registered dataset; unknown names fail listing the allowed ones."""
    return lookup(DATASETS, name, "dataset").load(data_dir, download)


# --- 2-D mixtures -----------------------------------------------------------------------------


@dataset("ring8", (2,), 8, "raw")
def ring8(data_dir: str = "", download: bool = False) -> Data:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centres = (2.0 * torch.stack([angles.cos(), angles.sin()], 1)).float()
    return Data("ring8", (2,), "raw", 2500, centres=centres, sigma=0.02, n_modes=8)


@dataset("grid25", (2,), 25, "raw")
def grid25(data_dir: str = "", download: bool = False) -> Data:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    centres = torch.cartesian_prod(ticks, ticks)
    return Data("grid25", (2,), "raw", 2500, centres=centres, sigma=0.05, n_modes=25)


# --- scikit-learn's 8x8 digits (shipped with scikit-learn: real data, offline) ----------------

DIGITS_TEST_SHARE = 0.2
DIGITS_SPLIT_SEED = 0


def _digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(len(x) * DIGITS_TEST_SHARE)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


@dataset("digits", (1, 8, 8), 10, "classifier")
def digits(data_dir: str = "", download: bool = False) -> Data:
    x, y, xt, yt = _digits_split()
    return Data(
        "digits", (1, 8, 8), "classifier", 1000, x, y, xt, yt, n_modes=10, classifier_data="digits"
    )


@dataset("stacked-digits", (3, 8, 8), 1000, "classifier")
def stacked_digits(data_dir: str = "", download: bool = False) -> Data:
    x, y, xt, yt = _digits_split()
    return Data(
        "stacked-digits",
        (3, 8, 8),
        "classifier",
        26000,
        x,
        y,
        xt,
        yt,
        n_modes=1000,
        stacked=3,
        classifier_data="digits",
    )


# --- torchvision datasets read from a data directory -------------------------------------------

_HOW_TO_PROVIDE = (
    "{name}: no data under {root!r} ({error}). Put the dataset in torchvision's layout there "
    "(set `data_dir` in the sweep file), or set `download: true` where the network allows it."
)


def _torchvision(cls_name: str, name: str, data_dir: str, download: bool) -> tuple:
    import torchvision.datasets as tvd

    cls = _cifar10_class() if cls_name == "CIFAR10" else getattr(tvd, cls_name)
    root = os.path.expanduser(data_dir)
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except (RuntimeError, OSError) as error:
        raise FileNotFoundError(
            _HOW_TO_PROVIDE.format(name=name, root=root, error=error)
        ) from None
    return train, test


def _cifar10_class():
    from torchvision.datasets import CIFAR10

    class CIFAR10FilesPresent(CIFAR10):
        """CIFAR-10 that accepts its batch files by presence: torchvision checks MD5 sums, which
        fail on copies re-packed by users (and on the tiny files the tests write)."""

        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10FilesPresent


def _as_uint8_chw(array) -> Tensor:
    t = torch.as_tensor(np.asarray(array), dtype=torch.uint8)
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _torchvision_loader(cls_name: str, name: str, shape: tuple[int, ...], extractor: str):
    def loader(data_dir: str = "data", download: bool = False) -> Data:
        train, test = _torchvision(cls_name, name, data_dir, download)
        return Data(
            name,
            shape,
            extractor,
            10000,
            _as_uint8_chw(train.data),
            torch.as_tensor(np.asarray(train.targets)),
            _as_uint8_chw(test.data),
            torch.as_tensor(np.asarray(test.targets)),
            n_modes=10 if extractor == "classifier" else 0,
            classifier_data=name if extractor == "classifier" else "",
        )

    return loader


for _cls, _name, _shape, _extractor in [
    ("MNIST", "mnist", (1, 28, 28), "classifier"),
    ("FashionMNIST", "fashion-mnist", (1, 28, 28), "classifier"),
    ("CIFAR10", "cifar10", (3, 32, 32), "inception"),
]:
    dataset(_name, _shape, 10 if _extractor == "classifier" else 0, _extractor)(
        _torchvision_loader(_cls, _name, _shape, _extractor)
    )


# --- identity of the data, for cache keys ------------------------------------------------------


def fingerprint(data: Data) -> str:
    """16 hex digits of SHA-256 over everything a cache computed from `data` depends on (its
    name, shape, mixture centres and σ, images and labels), so changed data never reads a
    stale cache file."""
    import hashlib

    digest = hashlib.sha256(f"{data.name}|{data.shape}|{data.sigma}|{data.stacked}".encode())
    for tensor in (data.centres, data.train, data.train_labels, data.test, data.test_labels):
        if tensor is not None:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
