"""Tiny copies of MNIST, Fashion-MNIST and CIFAR-10 in their real on-disk formats."""

import pickle
import struct
from pathlib import Path

import numpy as np


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    with path.open("wb") as f:
        f.write(struct.pack(">II", magic, array.shape[0]))
        if array.ndim == 3:
            f.write(struct.pack(">II", *array.shape[1:]))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 64, n_test: int = 32) -> Path:
    """`root/<folder>/raw/*-ubyte` as torchvision's MNIST and FashionMNIST read them."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        for i, label in enumerate(labels):  # a bright bar whose place tells the class
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, per_batch: int = 20) -> Path:
    """`root/cifar-10-batches-py/` pickles as torchvision's CIFAR10 reads them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32)).astype(np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)  # str keys, as torchvision reads
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(meta, f)
    return root
