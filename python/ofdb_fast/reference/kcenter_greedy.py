"""NumPy reference for ``kcenter_greedy``: PatchCore's greedy coreset (k-center) selection.

This module is the spec; the torch, cpu and cuda backends of ``ofdb_fast.ops.kcenter_greedy``
follow it. Reference: ``ApproximateGreedyCoresetSampler`` / ``GreedyCoresetSampler`` of
amazon-science/patchcore-inspection (``sampler.py``).

Conventions:

- Layout: ``features`` is ``[N, D]``, one row per patch. The result holds row indices (int64).
- Projection: when ``proj_dim`` is a positive int different from ``D``, rows are mapped with
  ``W [D, proj_dim]``, ``W[d, j] ~ U(-1/sqrt(D), 1/sqrt(D))`` (torch ``Linear``'s default init
  range, no bias). The reference leaves ``W`` unseeded; here it is drawn from the shared counter
  RNG: stream ``STREAM_CORESET``, item ``ITEM_PROJECTION``, counter ``d * proj_dim + j``, the
  float64 draw rounded to float32, so every backend uses the same ``W`` bits.
- Starting points (``method="approx"``): ``m = min(n_starts, N)`` distinct indices by a partial
  Fisher-Yates shuffle of ``0..N-1`` (swap slot ``j`` with ``j + below(key, j, N - j)``; stream
  ``STREAM_CORESET``, item ``ITEM_STARTS``). The reference uses NumPy's global RNG instead.
- Distance: Euclidean in the direct difference form ``sqrt(sum((a - b) ** 2))``. The reference
  expands ``|a|^2 - 2 a.b + |b|^2`` (clamped at 0); the direct form is used everywhere here
  because it gives exactly 0 for a point and itself (and for duplicates), so a selected point
  never keeps a positive score and is never picked twice while any other score is positive,
  and it has no cancellation when the norms are large compared with the distances.
- Initial score: ``approx``: mean distance to the ``m`` starting points; ``exact``: the
  Euclidean norm of the point's row of the full ``N x N`` distance matrix (computed here in
  row blocks, never the whole matrix; the compiled backends use the equivalent identity
  ``sum_j |z_i - z_j|^2 = N |z_i - mu|^2 + sum_j |z_j - mu|^2`` with ``mu`` the mean row).
- Loop: ``n_select`` times: ``i = argmax(score)`` (ties: the LOWEST index wins, as
  ``np.argmax``); append ``i``; ``score = min(score, dist(z, z[i]))``. When every remaining
  score is 0 (all points covered, e.g. duplicated data) the lowest index wins again, so an
  index can then repeat, exactly as in the reference.
- Radius (``return_radius``): ``radius[t] = max_j min_{u <= t} dist(z_j, z[indices[u]])``,
  the covering radius of the first ``t + 1`` selected points (float64, non-increasing). It
  ignores the initial score, which is not a distance to the selected set.
- dtype: this reference works in float64 (``features`` and ``W`` promoted to float64). The
  other backends work in float32 (features rounded to float32; projection and squared-distance
  sums accumulated in float32), so they return identical indices on well-separated data and
  radii within ~1e-6 relative otherwise.
"""

from __future__ import annotations

import numpy as np

from . import _rng

# Items of STREAM_CORESET (mirrored in csrc/patchcore/kcenter_greedy.h).
ITEM_PROJECTION = 0
ITEM_STARTS = 1

METHODS = ("approx", "exact")

# Elements of one block of pairwise differences in the exact initial score (memory bound).
_BLOCK_ELEMS = 1 << 22


def resolve_n_select(n_points: int, percentage: float, n_select: int | None) -> int:
    """``n_select`` if given, else ``int(n_points * percentage)`` as the reference."""
    return int(n_points * percentage) if n_select is None else int(n_select)


def projected_dim(dim: int, proj_dim: int | None) -> int:
    """Width of the rows the loop works on: ``proj_dim``, or ``dim`` when projection is off."""
    return dim if not proj_dim else int(proj_dim)


def projection_matrix(dim: int, proj_dim: int, seed: int) -> np.ndarray:
    """``W`` ``[dim, proj_dim]`` float32, ``U(-1/sqrt(dim), 1/sqrt(dim))`` from the shared RNG."""
    key = _rng.stream_key(seed, _rng.STREAM_CORESET, ITEM_PROJECTION)
    bound = 1.0 / np.sqrt(dim)
    counter = np.arange(dim * proj_dim, dtype=np.uint64)
    return _rng.uniform(key, counter, -bound, bound).astype(np.float32).reshape(dim, proj_dim)


def starting_points(n_points: int, n_starts: int, seed: int) -> np.ndarray:
    """``min(n_starts, n_points)`` distinct indices (int64) by a partial Fisher-Yates shuffle."""
    key = _rng.stream_key(seed, _rng.STREAM_CORESET, ITEM_STARTS)
    m = min(n_starts, n_points)
    perm = np.arange(n_points, dtype=np.int64)
    for j in range(m):
        r = j + int(_rng.below(key, j, n_points - j))
        perm[j], perm[r] = perm[r], perm[j]
    return perm[:m].copy()


def project(features: np.ndarray, proj_dim: int | None, seed: int) -> np.ndarray:
    """Rows the loop works on, float64 ``[N, P]``: ``features @ W``, or ``features`` itself
    when projection is disabled (``proj_dim`` None/0) or not needed (``proj_dim == D``)."""
    z = np.asarray(features, dtype=np.float64)
    dim = z.shape[1]
    if not proj_dim or proj_dim == dim:
        return z
    return z @ projection_matrix(dim, proj_dim, seed).astype(np.float64)


def distances_to(z: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``z`` ``[N, P]`` to ``center`` ``[P]``, direct form."""
    return np.sqrt(((z - center) ** 2).sum(axis=1))


def exact_initial_score(z: np.ndarray) -> np.ndarray:
    """Norm of each row of the ``N x N`` distance matrix, one block of rows at a time."""
    n, p = z.shape
    rows = max(1, _BLOCK_ELEMS // max(1, n * p))
    score = np.empty(n)
    for a in range(0, n, rows):
        diff = z[a : a + rows, None, :] - z[None, :, :]  # [rows, N, P]
        block = np.sqrt((diff**2).sum(axis=-1))  # [rows, N]: rows a.. of the distance matrix
        score[a : a + rows] = np.sqrt((block**2).sum(axis=1))
    return score


def kcenter_greedy(
    features: np.ndarray,  # [N, D] float
    *,
    percentage: float = 0.1,
    n_select: int | None = None,
    method: str = "approx",
    proj_dim: int | None = 128,
    n_starts: int = 10,
    seed: int = 0,
    return_radius: bool = False,
):
    """Greedy k-center coreset of ``features`` (PatchCore's memory-bank subsampling).

    Args:
        features: ``[N, D]`` float rows.
        percentage: fraction of rows to keep when ``n_select`` is None (``int(N * percentage)``).
        n_select: number of rows to select (overrides ``percentage``).
        method: ``"approx"`` (mean distance to random starting points as initial score) or
            ``"exact"`` (norm of the distance-matrix row).
        proj_dim: random projection width; None/0 disables it, ``D`` skips it.
        n_starts: number of starting points of ``"approx"``.
        seed: seed of the projection matrix and the starting points.
        return_radius: also return the covering-radius trajectory.

    Returns:
        ``indices`` int64 ``[n_select]``, and ``radius`` float64 ``[n_select]`` when
        ``return_radius``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0], [10.0]])
        >>> kcenter_greedy(x, n_select=2, method="exact", proj_dim=None)
        array([2, 0])
    """
    features = np.asarray(features)
    n = features.shape[0]
    k = resolve_n_select(n, percentage, n_select)
    indices = np.zeros(k, dtype=np.int64)
    radius = np.zeros(k, dtype=np.float64)
    if k > 0:
        z = project(features, proj_dim, seed)
        if method == "approx":
            starts = starting_points(n, n_starts, seed)
            score = np.mean([distances_to(z, z[s]) for s in starts], axis=0)
        elif method == "exact":
            score = exact_initial_score(z)
        else:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        cover = np.full(n, np.inf)
        for t in range(k):
            i = int(np.argmax(score))
            indices[t] = i
            d = distances_to(z, z[i])
            score = np.minimum(score, d)
            cover = np.minimum(cover, d)
            radius[t] = cover.max()
    return (indices, radius) if return_radius else indices
