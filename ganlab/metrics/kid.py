"""Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel, over subsets.

    k(x, y) = (x·y / d + 1)³

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / m(m−1) + Σ_{i≠j} k(y_i, y_j) / m(m−1)
             − 2 Σ_{i,j} k(x_i, y_j) / m²

averaged over `n_subsets` pairs of subsets of size m = min(1000, n_real, n_fake), drawn without
replacement by a seeded generator (torch-fidelity's defaults: 100 subsets of 1000), so the value
is a deterministic function of the two feature sets. Everything runs in float64: the estimate is
a small difference of large kernel sums.

Only sums of the kernel over subset blocks are needed, and `subset_kernel_sums` takes the
cheapest exact route: explicit features when d is small (the cubic kernel is the inner product
of x̃⊗x̃⊗x̃ with x̃ = [x/√d, 1]: 27 numbers for 2-D data), the whole kernel matrix when the
subsets cover it densely, one block per subset otherwise.
"""

import math

import torch
from torch import Tensor

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 0
# Explicit features are used up to this many dimensions ((d+1)³: d ≤ 9).
EXPLICIT_MAX_DIM = 1000


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """Subset size of the protocol: min(1000, n_real, n_fake)."""
    return min(KID_SUBSET_SIZE, n_real, n_fake)


def kid_subsets(n: int, size: int, count: int = KID_SUBSETS, seed: int = KID_SEED) -> Tensor:
    """`count` index sets of `size` distinct indices in [0, n), shape (count, size)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=generator)[:size] for _ in range(count)])


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """The KID kernel matrix (x·y/d + 1)³."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _explicit_features(x: Tensor) -> Tensor:
    xt = torch.cat([x / math.sqrt(x.shape[1]), x.new_ones(len(x), 1)], 1)
    return torch.einsum("ni,nj,nk->nijk", xt, xt, xt).reshape(len(x), -1)


def _indicators(idx: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """(count, n) 0/1 matrix: row s marks the indices of subset s."""
    return torch.zeros(len(idx), n, dtype=dtype, device=idx.device).scatter_(1, idx, 1.0)


def subset_kernel_sums(x: Tensor, y: Tensor, idx_x: Tensor, idx_y: Tensor) -> Tensor:
    """Σ_{i ∈ idx_x[s], j ∈ idx_y[s]} k(x_i, y_j) for every subset s, shape (count,)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    idx_x, idx_y = idx_x.to(x.device), idx_y.to(x.device)
    count, m = idx_x.shape
    if (x.shape[1] + 1) ** 3 <= EXPLICIT_MAX_DIM:
        sum_x = _indicators(idx_x, len(x), x.dtype) @ _explicit_features(x)
        sum_y = _indicators(idx_y, len(y), x.dtype) @ _explicit_features(y)
        return (sum_x * sum_y).sum(1)
    if len(x) * len(y) <= count * m * m:  # the subsets cover the whole matrix anyway
        kernel = polynomial_kernel(x, y)
        ind_x = _indicators(idx_x, len(x), x.dtype)
        if m == len(y):  # every y-subset is all of y (digits: 1000 fakes, subsets of 1000)
            return ind_x @ kernel.sum(1)
        return ((ind_x @ kernel) * _indicators(idx_y, len(y), x.dtype)).sum(1)
    pairs = zip(idx_x, idx_y, strict=True)
    return torch.stack([polynomial_kernel(x[i], y[j]).sum() for i, j in pairs])


def subset_kernel_diagonals(x: Tensor, idx: Tensor) -> Tensor:
    """Σ_{i ∈ idx[s]} k(x_i, x_i) for every subset s."""
    x = x.to(torch.float64)
    idx = idx.to(x.device)
    diagonal = (x.square().sum(1) / x.shape[1] + 1) ** 3
    return diagonal[idx].sum(1)


def within_subset_sums(x: Tensor, idx: Tensor) -> Tensor:
    """Σ_{i ≠ j ∈ idx[s]} k(x_i, x_j): the off-diagonal sums an unbiased estimate needs."""
    return subset_kernel_sums(x, x, idx, idx) - subset_kernel_diagonals(x, idx)


def kernel_sums_to_mmd2(real_within: Tensor, fake_within: Tensor, cross: Tensor, m: int) -> Tensor:
    """The unbiased MMD² of every subset from its three kernel sums, shape (count,)."""
    return (real_within + fake_within) / (m * (m - 1)) - 2 * cross / (m * m)


def kernel_sums_to_kid(real_within: Tensor, fake_within: Tensor, cross: Tensor, m: int) -> Tensor:
    """Mean over subsets of the unbiased MMD² from the three kernel sums of each subset (0-d)."""
    return kernel_sums_to_mmd2(real_within, fake_within, cross, m).mean()


def kernel_sums_to_kid_std(
    real_within: Tensor, fake_within: Tensor, cross: Tensor, m: int
) -> Tensor:
    """Standard deviation of the subsets' MMD² (0-d): KID's spread over its subsets, as
    torch-fidelity reports it (`kernel_inception_distance_std`)."""
    return kernel_sums_to_mmd2(real_within, fake_within, cross, m).std(correction=0)


def features_to_kid(
    real: Tensor, fake: Tensor, n_subsets: int = KID_SUBSETS, seed: int = KID_SEED
) -> Tensor:
    """KID between two feature sets, shapes (n_real, d) and (n_fake, d).

    Real subsets are drawn with `seed`, fake subsets with `seed + 1`, so a caller can precompute
    the real term once (see `Evaluator`) and get the same value.
    """
    m = kid_subset_size(len(real), len(fake))
    idx_real = kid_subsets(len(real), m, n_subsets, seed)
    idx_fake = kid_subsets(len(fake), m, n_subsets, seed + 1)
    return kernel_sums_to_kid(
        within_subset_sums(real, idx_real),
        within_subset_sums(fake, idx_fake),
        subset_kernel_sums(real, fake, idx_real, idx_fake),
        m,
    )
