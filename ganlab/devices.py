"""Devices: which one a trial runs on, its random streams, and full float32 precision.

A trial's tensors all live on one device and every random draw lands there, made by a generator
of that device. The one exception is `meta`, whose tensors hold shapes but no values: it has no
generator of its own, so its draws take a CPU generator, which is all `tests/test_device.py`
needs to run whole trials on it and prove them device-correct on a machine without a GPU.

Random states are kept as bytes, so a checkpoint loaded with `map_location` onto any device still
hands each generator the host-side state it wants.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str) -> torch.device:
    """The device `name` stands for; raises if it asks for a card that is not there."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device here")
    return torch.device(name)


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator for draws on `device`, seeded: on the device itself (CPU for `meta`)."""
    home = torch.device("cpu") if device.type == "meta" else device
    return torch.Generator(home).manual_seed(seed)


def generator_state(generator: torch.Generator) -> bytes:
    """The generator's state as bytes: device-independent, safe for `weights_only` loading."""
    return generator.get_state().numpy().tobytes()


def set_generator_state(generator: torch.Generator, state: bytes) -> None:
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (on a card, timings are otherwise of the queue)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def full_precision() -> Iterator[None]:
    """float32 matmuls and convolutions in IEEE float32, not TF32, restoring the settings after.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later cards, so feature
    extractors would give different features on an A100 than on a V100 or a CPU; the evaluation
    protocol wants the same features everywhere.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
