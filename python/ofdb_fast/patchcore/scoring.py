"""PatchCore scoring: patch scores -> image scores and anomaly maps.

Conventions (the reference's ``NearestNeighbourScorer`` and ``RescaleSegmentor``):
- Patch score = mean over the k nearest memory-bank entries of the **squared** L2 distance
  (faiss ``IndexFlatL2`` returns squared distances; k = ``anomaly_scorer_num_nn``, default 1).
- Image score = max over the image's patch scores.
- Optional re-weighting (the paper's Eq. 7; in anomalib, not in the official code; off by
  default): for each image take its highest-scoring patch ``m_test``, its nearest bank entry
  ``m*`` and the ``b`` bank entries nearest to ``m*`` (``N_b(m*)``, which contains ``m*``
  itself); with Euclidean (not squared) distances ``d_j = ||m_test - n_j||`` to those entries,
  ``w = 1 - softmax(d)[m*]`` and the image score becomes ``w * score``. Ties among bank
  neighbours of ``m*`` go to the lower index (stable sort); when ``m*`` has duplicates in the
  bank the one found by the kNN stands for ``m*``.
- Anomaly maps: patch scores ``[B, h, w]`` -> bilinear (``align_corners=False``, PyTorch's
  half-pixel rule with source coordinates clamped at 0) to the image size -> Gaussian
  smoothing with sigma 4 with ``scipy.ndimage.gaussian_filter`` semantics: kernel radius
  ``int(truncate * sigma + 0.5)`` with truncate 4.0, weights ``exp(-x^2 / (2 sigma^2))``
  normalised to sum 1, border mode ``"reflect"`` (half-sample symmetric: ``d c b a | a b c d``,
  repeated for kernels wider than the image).
  Two paths compute the same maps: :func:`anomaly_maps_numpy` (NumPy + scipy, float64 inside)
  and :func:`anomaly_maps_torch` (separable convolution on the tensor's device, float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_SIGMA = 4.0
DEFAULT_TRUNCATE = 4.0


def gaussian_kernel1d(sigma: float, truncate: float = DEFAULT_TRUNCATE) -> np.ndarray:
    """scipy's 1-D Gaussian weights, float64 ``[2r+1]`` with ``r = int(truncate*sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return phi / phi.sum()


def symmetric_index(n: int, radius: int) -> np.ndarray:
    """Source indices of a length-``n`` axis padded by ``radius`` with scipy's "reflect" mode.

    Index ``i`` in ``[-radius, n + radius)`` maps to ``i mod 2n`` folded at ``n``: the pattern
    ``0..n-1, n-1..0`` repeats, as scipy does when the kernel is wider than the axis.
    """
    i = np.arange(-radius, n + radius) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """Dense ``[n_out, n_in]`` matrix of PyTorch's ``align_corners=False`` bilinear resize."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0), 1.0 - frac)
    np.add.at(w, (rows, i1), frac)
    return w


def _check_maps(patch_scores: Any, size: Any) -> tuple[int, int]:
    from .._validate import require_ndim, require_size2

    require_ndim(patch_scores, "patch_scores", 3, "[B, h, w]")
    return require_size2(size, "size")


def anomaly_maps_numpy(
    patch_scores: np.ndarray,  # [B, h, w]
    size: int | tuple[int, int],
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Upsample and smooth patch scores into anomaly maps (NumPy/scipy path).

    Args:
        patch_scores: ``[B, h, w]`` patch scores.
        size: the output ``(H, W)`` (an int means square).
        sigma: Gaussian sigma in output pixels; 0 disables smoothing.

    Returns:
        ``[B, H, W]`` float32 maps.

    Example:
        >>> anomaly_maps_numpy(np.zeros((1, 8, 8)), 64).shape
        (1, 64, 64)
    """
    from scipy.ndimage import gaussian_filter

    height, width = _check_maps(patch_scores, size)
    scores = np.asarray(patch_scores, dtype=np.float64)
    wy = bilinear_weights(scores.shape[1], height)
    wx = bilinear_weights(scores.shape[2], width)
    maps = np.einsum("yi,bij,xj->byx", wy, scores, wx)
    if sigma > 0:
        maps = np.stack([gaussian_filter(m, sigma=sigma, truncate=DEFAULT_TRUNCATE, mode="reflect")
                         for m in maps]) if len(maps) else maps
    return maps.astype(np.float32)


def gaussian_blur_torch(maps: Any, sigma: float = DEFAULT_SIGMA) -> Any:
    """scipy-equivalent Gaussian smoothing of ``maps [B, H, W]`` (torch, any device)."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return maps
    kernel = torch.as_tensor(gaussian_kernel1d(sigma), dtype=maps.dtype, device=maps.device)
    radius = (kernel.numel() - 1) // 2
    _, height, width = maps.shape
    iy = torch.as_tensor(symmetric_index(height, radius), device=maps.device)
    ix = torch.as_tensor(symmetric_index(width, radius), device=maps.device)
    x = maps[:, None]  # [B, 1, H, W]
    x = F.conv2d(x.index_select(2, iy), kernel.view(1, 1, -1, 1))
    x = F.conv2d(x.index_select(3, ix), kernel.view(1, 1, 1, -1))
    return x[:, 0]


def anomaly_maps_torch(
    patch_scores: Any,  # [B, h, w]
    size: int | tuple[int, int],
    sigma: float = DEFAULT_SIGMA,
) -> Any:
    """Upsample and smooth patch scores into anomaly maps on the tensor's device (float32).

    Same maps as :func:`anomaly_maps_numpy` up to float32 rounding.

    Example:
        >>> anomaly_maps_torch(torch.zeros(1, 8, 8), 64).shape  # doctest: +SKIP
        torch.Size([1, 64, 64])
    """
    import torch
    import torch.nn.functional as F

    height, width = _check_maps(patch_scores, size)
    x = torch.as_tensor(patch_scores).to(torch.float32)
    if x.shape[0] == 0:
        return x.new_zeros((0, height, width))
    x = F.interpolate(x[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur_torch(x, sigma)


def patch_scores_from_distances(distances: Any) -> Any:
    """``[Q, k]`` squared distances -> ``[Q]`` patch scores (mean over k)."""
    return distances.mean(1) if distances.shape[1] > 1 else distances[:, 0]


def image_scores_from_patches(patch_scores: Any) -> Any:
    """``[B, P]`` (or ``[B, h, w]``) patch scores -> ``[B]`` image scores (max)."""
    return patch_scores.reshape(patch_scores.shape[0], -1).amax(1)


def reweight_image_scores(
    features: Any,  # [B, P, D] test patch features
    patch_scores: Any,  # [B, P]
    nn_index: Any,  # [B, P] index of each patch's nearest bank entry
    bank: Any,  # [M, D]
    b: int = 3,
) -> Any:
    """The paper's neighbourhood re-weighting of image scores (see the module docstring).

    Returns:
        ``[B]`` re-weighted image scores ``w * max(patch_scores)`` (torch, bank's device).
    """
    import torch

    n_bank = bank.shape[0]
    b = max(1, min(int(b), n_bank))
    rows = torch.arange(patch_scores.shape[0], device=patch_scores.device)
    best = patch_scores.argmax(1)  # first maximum, as torch.argmax
    score = patch_scores[rows, best]
    m_test = features[rows, best].to(torch.float32)  # [B, D]
    m_star = nn_index[rows, best].long()  # [B]
    # N_b(m*): m* itself first (forced with distance -1, so exact duplicates of m* cannot
    # displace it), then its b-1 nearest bank entries, ties to the lower index.
    bank32 = bank.to(torch.float32)
    d_bank = torch.cdist(bank32[m_star], bank32).pow(2)  # [B, M]
    d_bank[rows, m_star] = -1.0  # device indices: a host index tensor cannot be captured in a CUDA graph
    support = torch.sort(d_bank, dim=1, stable=True).indices[:, :b]  # [B, b], m* at 0
    d = torch.linalg.vector_norm(m_test[:, None, :] - bank32[support], dim=2)  # [B, b]
    weight = 1.0 - torch.softmax(d.to(torch.float64), dim=1)[:, 0]
    return (weight * score.to(torch.float64)).to(score.dtype)
