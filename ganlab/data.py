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
from functools import partial
from typing import Any

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


Reader = Callable[[str, bool], dict[str, Any]]  # (data_dir, download) -> Data's tensor fields


@dataclass(frozen=True)
class Source:
    """A registered dataset: the facts of it, known before loading, and how to read its samples.
    Each dataset's facts are written here only; `load` hands them to the `Data` it returns."""

    name: str
    shape: tuple[int, ...]  # one sample: (2,) or (C, H, W)
    modes: int  # number of modes the protocol counts; 0 where modes are not defined
    extractor: str  # feature extractor of the protocol: "raw", "classifier" or "inception"
    n_eval: int  # samples per evaluation in the protocol
    read: Reader
    stacked: int = 1  # channels drawn from independent images (stacked-digits: 3)
    classifier_data: str = ""  # dataset whose classifier reads modes; "" without a classifier

    def load(self, data_dir: str = "data", download: bool = False) -> Data:
        """The dataset in memory."""
        return Data(
            self.name, self.shape, self.extractor, self.n_eval, n_modes=self.modes,
            stacked=self.stacked, classifier_data=self.classifier_data,
            **self.read(data_dir, download),
        )  # fmt: skip


DATASETS: dict[str, Source] = {}
"""name -> Source. The names are the sweep files' vocabulary."""


def dataset(
    name: str,
    shape: tuple[int, ...],
    modes: int,
    extractor: str,
    n_eval: int,
    stacked: int = 1,
    classifier_data: str | None = None,
) -> Callable[[Reader], Reader]:
    """Register `read(data_dir, download) -> Data's tensor fields` under `name`, with the
    dataset's facts. A dataset read by the classifier has its own one, unless `classifier_data`
    names another."""
    if classifier_data is None:
        classifier_data = name if extractor == "classifier" else ""
    facts = (name, shape, modes, extractor, n_eval)

    def add(read: Reader) -> Reader:
        register(DATASETS, name)(Source(*facts, read, stacked, classifier_data))
        return read

    return add


def load(name: str, data_dir: str = "data", download: bool = False) -> Data:
    """Load a registered dataset; unknown names fail listing the allowed ones."""
    return lookup(DATASETS, name, "dataset").load(data_dir, download)


# --- 2-D mixtures -----------------------------------------------------------------------------


@dataset("ring8", shape=(2,), modes=8, extractor="raw", n_eval=2500)
def _ring8(data_dir: str = "", download: bool = False) -> dict[str, Any]:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centres = (2.0 * torch.stack([angles.cos(), angles.sin()], 1)).float()
    return {"centres": centres, "sigma": 0.02}


@dataset("grid25", shape=(2,), modes=25, extractor="raw", n_eval=2500)
def _grid25(data_dir: str = "", download: bool = False) -> dict[str, Any]:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return {"centres": torch.cartesian_prod(ticks, ticks), "sigma": 0.05}


# --- scikit-learn's 8x8 digits (shipped with scikit-learn: real data, offline) ----------------

DIGITS_TEST_SHARE = 0.2
DIGITS_SPLIT_SEED = 0


def _digits_split(data_dir: str = "", download: bool = False) -> dict[str, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(len(x) * DIGITS_TEST_SHARE)
    test, train = perm[:n_test], perm[n_test:]
    return {"train": x[train], "train_labels": y[train], "test": x[test], "test_labels": y[test]}


dataset("digits", shape=(1, 8, 8), modes=10, extractor="classifier", n_eval=1000)(_digits_split)
dataset(
    "stacked-digits", shape=(3, 8, 8), modes=1000, extractor="classifier", n_eval=26000,
    stacked=3, classifier_data="digits",
)(_digits_split)  # fmt: skip


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


def _read_torchvision(
    cls_name: str, name: str, data_dir: str = "data", download: bool = False
) -> dict[str, Tensor]:
    train, test = _torchvision(cls_name, name, data_dir, download)
    return {
        "train": _as_uint8_chw(train.data),
        "train_labels": torch.as_tensor(np.asarray(train.targets)),
        "test": _as_uint8_chw(test.data),
        "test_labels": torch.as_tensor(np.asarray(test.targets)),
    }


for _name, _cls, _shape, _modes, _extractor in [
    ("mnist", "MNIST", (1, 28, 28), 10, "classifier"),
    ("fashion-mnist", "FashionMNIST", (1, 28, 28), 10, "classifier"),
    ("cifar10", "CIFAR10", (3, 32, 32), 0, "inception"),
]:
    dataset(_name, _shape, _modes, _extractor, n_eval=10000)(
        partial(_read_torchvision, _cls, _name)
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
