"""Inception Score from class probabilities: exp E_x KL(p(y|x) || p(y)), mean over splits.

As in Salimans et al. and torch-fidelity, the samples are cut into `IS_SPLITS` = 10 parts and the
score is the mean of the parts' scores. With stacked images the classifier reads each channel
separately and the class of a sample is the tuple of its channels' classes; taking the channels
as independent given the image, p(y|x) is the product of the channel distributions, so the score
lives on the same C**s classes as the mode count (1000 for stacked digits) and reaches C**s
for a generator that covers every combination evenly and unambiguously.
"""

import torch
from torch import Tensor

IS_SPLITS = 10


def joint_probabilities(probs: Tensor) -> Tensor:
    """Class probabilities (n, s, C) of s channels → (n, C**s) over tuples, first channel major."""
    joint = probs[:, 0].to(torch.float64)
    for channel in range(1, probs.shape[1]):
        joint = (joint[:, :, None] * probs[:, channel, None, :].to(torch.float64)).flatten(1)
    return joint


def probabilities_to_inception_score(probs: Tensor, splits: int = IS_SPLITS) -> Tensor:
    """Inception Score of class probabilities `probs`, shape (n, s, C) (s = 1 if not stacked),
    as a 0-d float64 tensor on their device."""
    scores = []
    for part in torch.tensor_split(probs, min(splits, len(probs))):
        p = joint_probabilities(part)
        marginal = p.mean(0, keepdim=True)
        # 0 · log 0 = 0: classes a sample gives no mass to add nothing to its KL
        terms = torch.where(p > 0, p * (p.log() - marginal.log()), 0.0)
        scores.append(terms.sum(1).mean().exp())
    return torch.stack(scores).mean()
