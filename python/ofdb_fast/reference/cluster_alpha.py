"""NumPy reference for the anomaly-clustering weights ``alpha`` (the spec).

Anomaly Clustering (Sohn et al., WACV 2023), as coded in the reproduction the toolkit follows
(KevinWangHP/Anomaly-Clustering, ``models/patchcore/utils.py``; shared/reference/other-seeds.md
section 1a). Every image ``i`` is a bag of ``P`` patch embeddings ``z_ip`` in ``R^D``; ``alpha``
weights the patches towards the likely-defective ones, and the image embedding is the
weighted average ``x_i = sum_p alpha_ip z_ip``.

Conventions:
- ``embeddings`` ``[N, P, D]`` (images, patches in (y, x) order, dims); ``normal_embeddings``
  ``[M, P', D]`` (normal images, for the supervised mode). Any float dtype; everything here is
  computed in float64.
- Distances are **un-squared** Euclidean, as ``torch.cdist`` in the reproduction. For one
  pair of images they are computed as ``sqrt(max(|a|^2 - 2 a.b + |b|^2, 0))`` in float64 --
  the expansion ``torch.cdist`` itself uses for inputs of more than 25 rows -- with the sqrt
  taken after the min over patches (sqrt is monotone, so the min is the same).
- Modes (``d`` is ``[N, P]``):

  * ``"unsupervised"``: ``d_ip = mean_{j != i} min_q ||z_ip - z_jq||``: the nearest patch in
    every *other* image, averaged over the ``N - 1`` images. Needs ``N >= 2``.
  * ``"supervised"`` (the paper's semi-supervised setting): ``d_ip = min_{t, q} ||z_ip - n_tq||``
    over every patch of every normal image (PatchCore 1-NN against the whole normal bank,
    no coreset).
  * ``"average"``: ``d = 0``, hence ``alpha = 1 / P`` for every tau.

- Softmax over the patches of one image with temperature ``tau``:
  ``alpha_ip = exp(d_ip / tau) / sum_p' exp(d_ip' / tau)``, computed with the row maximum
  subtracted first (the reproduction does not subtract it; the value is the same up to
  rounding, without its overflow for small tau). ``tau == 0`` is the limit: ``1 / |A_i|`` on
  the arg-max set ``A_i = {p : d_ip == max_p' d_ip'}`` (ties split), 0 elsewhere.
- ``d`` does not depend on ``tau``: a list of taus reuses it (the reproduction recomputes
  everything per tau).
- Normal-image selection (``select_normal_images``): the reproduction takes the first
  ``M = int(train_ratio * N_test)`` images (capped by the number of normal images) of an
  unseeded shuffled loader, so its runs are not reproducible. Here the same ``M`` images are
  drawn with the shared counter RNG (stream ``STREAM_CLUSTER_NORMALS``): ordering the indices
  by ``bits(stream_key(seed, stream, 0), index)`` is a permutation that depends on ``seed``
  only; the first ``M`` of it are returned in ascending order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _rng

MODES = ("unsupervised", "supervised", "average")


def _min_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[Pa]`` float64: for every row of ``a [Pa, D]`` the Euclidean distance to the nearest
    row of ``b [Pb, D]``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def patch_distances(
    embeddings: np.ndarray,  # [N, P, D]
    mode: str = "unsupervised",
    *,
    normal_embeddings: np.ndarray | None = None,  # [M, P', D], supervised mode only
) -> np.ndarray:
    """The tau-independent patch distances ``d`` ``[N, P]`` float64 of one mode (see the module
    docstring)."""
    z = np.asarray(embeddings, np.float64)
    n_images, n_patches = z.shape[:2]
    if mode == "average":
        return np.zeros((n_images, n_patches))
    if mode == "unsupervised":
        d = np.zeros((n_images, n_patches))
        for i in range(n_images):
            for j in range(n_images):
                if j != i:
                    d[i] += _min_distances(z[i], z[j])
        return d / (n_images - 1)
    if mode == "supervised":
        normals = np.asarray(normal_embeddings, np.float64)
        d = np.full((n_images, n_patches), np.inf)
        for i in range(n_images):
            for t in range(normals.shape[0]):
                d[i] = np.minimum(d[i], _min_distances(z[i], normals[t]))
        return d
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def alpha_from_distances(distances: np.ndarray, tau: float) -> np.ndarray:  # [N, P] -> [N, P]
    """Tempered softmax over the patches of each image (``tau == 0``: arg-max set, ties split)."""
    d = np.asarray(distances, np.float64)
    top = d.max(axis=1, keepdims=True)
    if tau == 0:
        hits = (d == top).astype(np.float64)
        return hits / hits.sum(axis=1, keepdims=True)
    e = np.exp((d - top) / tau)
    return e / e.sum(axis=1, keepdims=True)


def cluster_alpha(
    embeddings: np.ndarray,  # [N, P, D]
    mode: str = "unsupervised",
    tau: float | Sequence[float] = 2.0,
    *,
    normal_embeddings: np.ndarray | None = None,  # [M, P', D]
) -> np.ndarray:
    """``alpha`` ``[N, P]`` float64 for one tau, or ``[T, N, P]`` for a list of ``T`` taus."""
    d = patch_distances(embeddings, mode, normal_embeddings=normal_embeddings)
    if isinstance(tau, (list, tuple)):
        return np.stack([alpha_from_distances(d, t) for t in tau])
    return alpha_from_distances(d, tau)


def weighted_embeddings(
    embeddings: np.ndarray,  # [N, P, D]
    alpha: np.ndarray,  # [N, P]
) -> np.ndarray:
    """Image embeddings ``x_i = sum_p alpha_ip z_ip``: ``[N, D]`` float64."""
    z = np.asarray(embeddings, np.float64)
    return np.einsum("np,npd->nd", np.asarray(alpha, np.float64), z)


def select_normal_images(n_normal: int, n_test: int, train_ratio: float = 1.0, seed: int = 0) -> np.ndarray:
    """Indices (ascending, int64) of the ``min(int(train_ratio * n_test), n_normal)`` normal
    images that form the supervised bank (the reproduction's count, a seeded draw)."""
    n_select = min(int(train_ratio * n_test), n_normal)
    key = _rng.stream_key(seed, _rng.STREAM_CLUSTER_NORMALS, 0)
    order = np.argsort(_rng.bits(key, np.arange(n_normal, dtype=np.uint64)), kind="stable")
    return np.sort(order[:n_select]).astype(np.int64)
