"""Precision, recall, density and coverage (Naeem et al. 2020) with k nearest neighbours.

As in the authors' `prdc` package: the radius of a point is the Euclidean distance to its k-th
nearest neighbour in its own set (itself excluded), "inside a ball" is a strict inequality, and

    precision = share of fakes inside some real ball
    recall    = share of reals inside some fake ball
    density   = (1/k) · mean over fakes of the number of real balls holding it
    coverage  = share of reals whose ball holds at least one fake

Distances are Euclidean in float64. In few dimensions (2-D data) on the CPU, k-d trees find the
neighbours and the balls' contents in O(n log n); otherwise (and always on a card, where the trees'
host round trip would cost more) distances are computed in row blocks, so memory
stays bounded at any n. Both give the same counts (tested against a brute-force loop). Sets
above `PRDC_MAX_N` are cut to their first `PRDC_MAX_N` points, the sample size the authors
recommend, because the cost grows with n².
"""

import numpy as np
import torch
from torch import Tensor

PRDC_K = 5
PRDC_MAX_N = 10_000
TREE_MAX_DIM = 8  # k-d trees beat brute force in few dimensions only
_BLOCK_ELEMENTS = 1 << 22  # distances held at once: 32 MB in float64
_EXACT_MAX_DIM = 16
# A k-d tree's ball query counts distance ≤ r; shrinking r by a relative 1e-12 makes it the
# strict < of the definition, robust to the last-bit rounding between its two distance routines
# (identical sets put a neighbour exactly on every ball's edge).
_STRICT = 1 - 1e-12


def distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean |a_i − b_j|, shape (len(a), len(b))."""
    # Low dimensions: direct differences, exact and fast. High dimensions: the |a|² + |b|² − 2a·b
    # expansion through a matrix product, which is much faster there.
    exact = a.shape[1] <= _EXACT_MAX_DIM
    mode = "donot_use_mm_for_euclid_dist" if exact else "use_mm_for_euclid_dist"
    return torch.cdist(a, b, compute_mode=mode)


def _row_blocks(n_rows: int, n_cols: int) -> list[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def _use_tree(x: Tensor) -> bool:
    # The trees are scipy's, on the host: a card computes the blocks of distances instead.
    return x.shape[1] <= TREE_MAX_DIM and x.device.type == "cpu"


def knn_radii(x: Tensor, k: int = PRDC_K) -> Tensor:
    """Distance from each point of `x` to its k-th nearest other point of `x`."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(x)}")
    # k + 1 nearest: the point itself comes first at distance 0
    if _use_tree(x):
        from scipy.spatial import cKDTree

        points = x.detach().cpu().double().numpy()
        radii = cKDTree(points).query(points, k + 1)[0][:, k]
        return torch.from_numpy(radii).to(x.device)
    parts = []
    for rows in _row_blocks(len(x), len(x)):
        parts.append(distances(x[rows], x).topk(k + 1, 1, largest=False).values[:, k])
    return torch.cat(parts)


def prdc_features(x: Tensor) -> Tensor:
    """Features as PRDC uses them: float64, at most `PRDC_MAX_N` points."""
    return x[:PRDC_MAX_N].to(torch.float64)


def _ball_counts_brute(
    real: Tensor, fake: Tensor, real_radii: Tensor, fake_radii: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    inside_real = torch.zeros(len(fake), dtype=torch.long, device=fake.device)
    real_covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    real_recalled = torch.zeros_like(real_covered)
    for rows in _row_blocks(len(real), len(fake)):
        d = distances(real[rows], fake)  # (reals in block, fakes)
        in_real_ball = d < real_radii[rows, None]
        inside_real += in_real_ball.sum(0)
        real_covered[rows] = in_real_ball.any(1)
        real_recalled[rows] = (d < fake_radii[None, :]).any(1)
    return inside_real, real_covered, real_recalled


def _ball_counts_tree(
    real: Tensor, fake: Tensor, real_radii: Tensor, fake_radii: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    from scipy.spatial import cKDTree

    r, f = real.detach().cpu().numpy(), fake.detach().cpu().numpy()
    fakes_in = cKDTree(f).query_ball_point(r, real_radii.cpu().numpy() * _STRICT)
    reals_in = cKDTree(r).query_ball_point(f, fake_radii.cpu().numpy() * _STRICT)
    sizes = np.fromiter(map(len, fakes_in), dtype=np.int64, count=len(r))
    fake_hits = np.concatenate([np.asarray(hits, dtype=np.int64) for hits in fakes_in])
    real_hits = np.concatenate([np.asarray(hits, dtype=np.int64) for hits in reals_in])
    real_recalled = np.zeros(len(r), dtype=bool)
    real_recalled[real_hits] = True
    return (
        torch.from_numpy(np.bincount(fake_hits, minlength=len(f))),
        torch.from_numpy(sizes > 0),
        torch.from_numpy(real_recalled),
    )


def features_to_prdc(
    real: Tensor, fake: Tensor, k: int = PRDC_K, real_radii: Tensor | None = None
) -> dict[str, Tensor]:
    """precision, recall, density and coverage of `fake` against `real`, as 0-d float64
    tensors on their device.

    Pass `real_radii = knn_radii(prdc_features(real), k)` to reuse the real radii across calls.
    """
    real, fake = prdc_features(real), prdc_features(fake)
    if real_radii is None:
        real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    counts = _ball_counts_tree if _use_tree(real) else _ball_counts_brute
    # per fake: how many real balls hold it; per real: whether a fake is in its ball / it in one
    inside_real, real_covered, real_recalled = counts(real, fake, real_radii, fake_radii)
    return {
        "precision": (inside_real > 0).double().mean(),
        "recall": real_recalled.double().mean(),
        "density": inside_real.double().mean() / k,
        "coverage": real_covered.double().mean(),
    }
