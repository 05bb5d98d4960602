"""The protocol's classifier for digit-like data: a small CNN, trained once, then a file.

Training is deterministic on one CPU but not across CPUs (other kernels round differently), so a
classifier is never retrained where it is used: every machine and every node of a cluster must
measure with the same weights. So the classifier travels as a file:

- `digits` (and `stacked-digits`, read by digits' classifier): the weights ship inside the package
  (`weights/classifier-digits.pt`), checked against their SHA-256 (`SHIPPED`) and against the
  training data they were made from. `python -m ganlab.metrics.classifier digits` remakes the
  file (and prints its hash) after a change to the network or its training.
- `mnist`, `fashion-mnist`: trained once on the sweep's driver, on the dataset's training split
  with a fixed seed, cached at `<cache>/classifier-<dataset>-<data>-seed<seed>-<code>.pt` (the
  code version a hash of this file, so a change to the network or its training retrains it), and
  shipped to every trial with the rest of the protocol (`ganlab.metrics.assets`).

Its penultimate layer (128-d, after ReLU) gives FID/KID/PRDC features, its softmax IS
probabilities and its argmax modes. The network ends in global average pooling, so it reads any
image size (8×8 digits, 28×28 MNIST).
"""

import argparse
import hashlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.data import Data, to_float
from ganlab.devices import full_precision
from ganlab.metrics.cache import cache_dir, cached, tensors_sha256
from ganlab.metrics.features import Features
from ganlab.rundir import atomic_write

CLASSIFIER_SEED = 0
FEATURES = 128
# Steps grow with the training set (16 epochs of digits: 1,438 images, a few seconds on one core)
# up to 1.6 epochs of MNIST's 60,000, a one-off cost shared by every trial.
MIN_STEPS, MAX_STEPS = 300, 1500
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
EVAL_BATCH = 4096
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Shipped:
    """A classifier that ships with the package: its file and the SHA-256 of its weights
    (`tensors_sha256` of the state dict, independent of how torch serialised it)."""

    file: str
    sha256: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


SHIPPED = {
    "digits": Shipped(
        "classifier-digits.pt", "302d3f54f0fef791943a6beed9f0ca3b5496edccfbd57b1cee32157557917eeb"
    ),
}
"""classifier_data -> the shipped classifier, for the data sets every machine has."""


class ClassifierMismatch(ValueError):
    """A classifier file that is not the one the protocol names."""


def code_version() -> str:
    """Hash of this module's source: part of the cache key."""
    source = inspect.getsource(sys.modules[__name__])
    return hashlib.sha256(source.encode()).hexdigest()[:12]


class SmallCNN(nn.Module):
    """conv-conv-pool-conv-conv-pool-gap → 128 → classes."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, FEATURES), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURES, n_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(penultimate features, logits)."""
        h = self.body(x)
        return h, self.head(h)


@contextmanager
def _one_thread() -> Iterator[None]:
    # Ops this small gain nothing from threads, and on a busy machine OpenMP threads that wait
    # for each other make training 10x slower (measured: 4 s on one thread, 45 s on two, with
    # other processes on the CPU). One thread also fixes the order of floating-point sums, so
    # the weights do not depend on the machine's core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_classifier(images: Tensor, labels: Tensor, seed: int = CLASSIFIER_SEED) -> SmallCNN:
    """Train a `SmallCNN` on images in [-1, 1] (n, C, H, W); deterministic given the seed."""
    # fork_rng: leave the caller's global RNG as it was
    with torch.random.fork_rng(), _one_thread():
        torch.manual_seed(seed)
        model = SmallCNN(images.shape[1], int(labels.max()) + 1)
        optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        steps = min(MAX_STEPS, max(MIN_STEPS, len(images) // 4))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LR, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(images), (BATCH,), generator=generator)
            loss = F.cross_entropy(model(images[idx])[1], labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval().requires_grad_(False)


def classifier_path(data: Data, seed: int = CLASSIFIER_SEED) -> Path:
    """Where the classifier of `data.classifier_data` is cached: keyed by the data it learns
    from too, so changed training data never reads a stale classifier."""
    name = f"classifier-{data.classifier_data}-{training_fingerprint(data)}-seed{seed}"
    return cache_dir() / f"{name}-{code_version()}.pt"


def training_fingerprint(data: Data) -> str:
    """12 hex digits of SHA-256 over the training images and labels a classifier learns."""
    digest = hashlib.sha256()
    for tensor in (data.train, data.train_labels):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def classifier_file(data: Data, seed: int = CLASSIFIER_SEED) -> dict:
    """The saved classifier of `data.classifier_data` (`classifier_state`'s dict): the shipped
    file where there is one, checked; else the cache's, trained (once) into it."""
    if data.train is None or data.train_labels is None or not data.classifier_data:
        raise ValueError(f"{data.name}: no labelled training split to train a classifier on")
    shipped = SHIPPED.get(data.classifier_data)
    if shipped is not None:
        saved = torch.load(shipped.path, map_location="cpu", weights_only=True)
        check_classifier(saved, shipped.sha256, training_fingerprint(data), str(shipped.path))
        return saved
    return cached(classifier_path(data, seed), lambda: _trained(data, seed))


def _trained(data: Data, seed: int) -> dict:
    model = train_classifier(to_float(data.train), data.train_labels, seed)
    return classifier_state(model, training_fingerprint(data), seed)


def classifier_state(model: SmallCNN, trained_on: str, seed: int) -> dict:
    """What a classifier file holds: weights, shape and the data it was trained on (plain
    tensors and numbers: `weights_only` loading)."""
    first = model.body[0]
    return {
        "state": model.state_dict(),
        "in_channels": first.in_channels,
        "n_classes": model.head.out_features,
        "trained_on": trained_on,
        "seed": seed,
    }


def check_classifier(saved: dict, sha256: str, trained_on: str, where: str) -> None:
    """Raise `ClassifierMismatch` unless `saved` holds weights of hash `sha256` (a prefix will
    do) trained on data of fingerprint `trained_on`."""
    found = tensors_sha256(saved["state"])
    if not found.startswith(sha256):
        raise ClassifierMismatch(
            f"{where}: the classifier's weights hash to {found[:16]}, not {sha256[:16]}: the "
            "file was changed or replaced; reinstall ganlab or remake it "
            "(`python -m ganlab.metrics.classifier digits`)"
        )
    if saved.get("trained_on") != trained_on:
        raise ClassifierMismatch(
            f"{where}: the classifier was trained on data {saved.get('trained_on')}, but the "
            f"data set's training split is {trained_on}: the data set changed"
        )


def classifier_from_state(saved: dict) -> SmallCNN:
    """The `SmallCNN` of a classifier file's dict, in eval mode, frozen."""
    model = SmallCNN(saved["in_channels"], saved["n_classes"])
    model.load_state_dict(saved["state"])
    return model.eval().requires_grad_(False)


def load_classifier(data: Data, seed: int = CLASSIFIER_SEED) -> SmallCNN:
    """The classifier of `data.classifier_data`: shipped, cached, or trained into the cache."""
    return classifier_from_state(classifier_file(data, seed))


def ship(name: str) -> Path:
    """Train the classifier of data set `name` and write it into the package; prints its hash
    (put it in `SHIPPED`). Run it when the network, its training or the data change."""
    from ganlab.data import load

    data = load(name)
    saved = _trained(data, CLASSIFIER_SEED)
    path = WEIGHTS_DIR / f"classifier-{data.classifier_data}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(saved, tmp))
    print(f"{path}: sha256 of the weights {tensors_sha256(saved['state'])}")
    return path


class ClassifierExtractor:
    """Penultimate features and softmax probabilities of a `SmallCNN`, per channel if stacked."""

    name = "classifier"
    has_probs = True

    def __init__(self, model: SmallCNN, stacked: int = 1, device: str = "cpu"):
        self.weights = tensors_sha256(model.state_dict())[:16]  # on the CPU, before the move
        self.model = model.to(device)
        self.stacked = stacked
        self.device = device

    @torch.inference_mode()
    @full_precision()
    def __call__(self, x: Tensor) -> Features:
        n = len(x)
        # out-of-range pixels read as the nearest valid value, as they would in a saved image
        x = x.to(self.device, torch.float32).clamp(-1, 1)
        if self.stacked > 1:  # each channel is its own digit
            x = x.reshape(n * self.stacked, 1, *x.shape[2:])
        features, probs = [], []
        for batch in x.split(EVAL_BATCH):
            h, logits = self.model(batch)
            features.append(h)
            probs.append(logits.softmax(1))
        return Features(
            torch.cat(features).reshape(n, -1), torch.cat(probs).reshape(n, self.stacked, -1)
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=ship.__doc__)
    parser.add_argument("dataset", choices=sorted(SHIPPED))
    ship(parser.parse_args().dataset)
