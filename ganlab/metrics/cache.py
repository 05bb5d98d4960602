"""The on-disk cache shared by every trial: where it is, and how files get into it safely.

Thousands of trials may ask for the same classifier or reference statistics at once, so every
file is produced under a `FileLock` and written to a temporary file in the same directory, then
renamed (`ganlab.rundir.atomic_write`): a reader sees either no file or a whole one.
"""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from filelock import FileLock

from ganlab.rundir import atomic_write

T = TypeVar("T")

CACHE_ENV = "GANLAB_CACHE"


def cache_dir() -> Path:
    """`$GANLAB_CACHE`, default `~/.cache/ganlab`; created when missing."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ganlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(path: Path, compute: Callable[[], T]) -> T:
    """`torch.load(path)` if it exists, else `compute()` saved there; one process computes."""
    with FileLock(f"{path}.lock"):
        if not path.exists():
            value = compute()
            atomic_write(path, lambda tmp: torch.save(value, tmp))
            return value
    return torch.load(path, map_location="cpu", weights_only=True)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state dict's names and values, independent of how it is serialised."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
