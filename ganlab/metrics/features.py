"""What a feature extractor returns."""

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Features:
    """Features (n, d) for FID, KID and PRDC; class probabilities (n, s, C) of s channels for
    IS and modes, or None where the extractor has no classes."""

    features: Tensor
    probs: Tensor | None = None
