"""Mode statistics: how many modes a generator covers, and how evenly.

Two readings of "mode", one output: `modes` (modes captured), `hq` (share of high-quality
samples) and `kl_modes` (KL of the mode histogram to the uniform distribution over all modes).

- 2-D mixtures, the VEEGAN/PacGAN protocol: a sample is high quality when it lies within
  3σ of its nearest mode centre; a mode is captured when it is the nearest mode of at least one
  high-quality sample; the histogram is over the high-quality samples' modes.
- Class labels (digits, Stacked-MNIST protocol): the mode of a sample is the classifier's argmax
  (stacked images: one digit per channel, mode = Σ_c digit_c · 10^(s−1−c)); `modes` counts the
  distinct modes among all samples and the histogram is over all samples, as in the PacGAN and
  VEEGAN tables. `hq` is the share of samples whose mode has probability ≥ 0.5 under the
  classifier (the product of the channels' top probabilities when stacked): at ≥ 0.5 the top
  class outweighs all others together, so the label is unambiguous. A trained CNN is
  overconfident off its data, so read `hq` on class data as a weak signal.

KL convention: with no high-quality sample the histogram is undefined; `kl_modes` is then
log(n_modes), the largest KL any histogram can have (all mass on one mode), so it stays finite
and ranks such a generator with the most collapsed ones.
"""

import math

import torch
from torch import Tensor

HQ_SIGMAS = 3.0
CONFIDENCE = 0.5


def histogram_to_kl_uniform(counts: Tensor) -> float:
    """KL(counts / Σ counts || Uniform(len(counts))), with 0·log 0 = 0; log(n) if all zero."""
    n_modes = len(counts)
    total = counts.sum()
    if total == 0:
        return math.log(n_modes)
    p = counts.to(torch.float64) / total
    p = p[p > 0]
    return float((p * (p * n_modes).log()).sum())


def mixture_mode_statistics(
    x: Tensor, centres: Tensor, sigma: float, n_sigmas: float = HQ_SIGMAS
) -> dict[str, float]:
    """modes, hq and kl_modes of 2-D samples `x` (n, 2) against mode `centres` (n_modes, 2)."""
    distances = torch.cdist(x.to(torch.float64), centres.to(x.device, torch.float64))
    nearest_distance, nearest = distances.min(1)
    high_quality = nearest_distance <= n_sigmas * sigma
    counts = torch.bincount(nearest[high_quality], minlength=len(centres))
    return {
        "modes": float((counts > 0).sum()),
        "hq": float(high_quality.double().mean()),
        "kl_modes": histogram_to_kl_uniform(counts),
    }


def probabilities_to_modes(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Mode index and its probability from class probabilities (n, s, C) of s channels."""
    top, digit = probs.max(2)
    n_channels, n_classes = probs.shape[1], probs.shape[2]
    powers = n_classes ** torch.arange(n_channels - 1, -1, -1, device=probs.device)
    return (digit * powers).sum(1), top.to(torch.float64).prod(1)


def class_mode_statistics(
    probs: Tensor, n_modes: int, confidence: float = CONFIDENCE
) -> dict[str, float]:
    """modes, hq and kl_modes from class probabilities `probs` (n, s, C); n_modes = C**s."""
    modes, top = probabilities_to_modes(probs)
    counts = torch.bincount(modes, minlength=n_modes)
    return {
        "modes": float((counts > 0).sum()),
        "hq": float((top >= confidence).double().mean()),
        "kl_modes": histogram_to_kl_uniform(counts),
    }
