"""The protocol's classifier for digit-like data: a small CNN trained once per dataset.

It is trained on the dataset's training split with a fixed seed, on the CPU, deterministically,
and cached at `<cache>/classifier-<dataset>-seed<seed>-<code version>.pt`, the code version being
a hash of this file, so a change to the network or its training retrains it. Its penultimate
layer (128-d, after ReLU) gives FID/KID/PRDC features, its softmax IS probabilities and its
argmax modes. The network ends in global average pooling, so it reads any image size (8×8
digits, 28×28 MNIST).
"""

import hashlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.data import Data, to_float
from ganlab.devices import full_precision
from ganlab.metrics.cache import cache_dir, cached, tensors_sha256
from ganlab.metrics.features import Features

CLASSIFIER_SEED = 0
FEATURES = 128
# Steps grow with the training set (16 epochs of digits: 1,438 images, a few seconds on one core)
# up to 1.6 epochs of MNIST's 60,000, a one-off cost shared by every trial.
MIN_STEPS, MAX_STEPS = 300, 1500
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
EVAL_BATCH = 4096


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


def load_classifier(data: Data, seed: int = CLASSIFIER_SEED) -> SmallCNN:
    """The classifier of `data.classifier_data`, from the cache or trained (once) into it."""
    if data.train is None or data.train_labels is None or not data.classifier_data:
        raise ValueError(f"{data.name}: no labelled training split to train a classifier on")

    def train() -> dict:
        model = train_classifier(to_float(data.train), data.train_labels, seed)
        return {"state": model.state_dict(), "in_channels": data.train.shape[1],
                "n_classes": int(data.train_labels.max()) + 1}  # fmt: skip

    saved = cached(classifier_path(data, seed), train)
    model = SmallCNN(saved["in_channels"], saved["n_classes"])
    model.load_state_dict(saved["state"])
    return model.eval().requires_grad_(False)


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
