"""NumPy reference for ``patch_aggregate``: PatchCore's patch embedding after the backbone.

This is the official PatchCore ``_embed`` (amazon-science/patchcore-inspection) steps 2-6,
written out with loops so it can be read (see shared/reference/patchcore.md):

1. **Unfold** every layer map ``[B, C, H, W]`` with a ``p x p`` kernel, stride 1 and zero
   padding ``(p - 1) // 2``: patch ``(y, x)`` holds ``C * p * p`` values in ``(c, dy, dx)``
   order; taps falling outside the map are 0. The patch grid is ``H x W`` (p is odd).
2. **Align grids**: every layer after the first is resized to layer 0's grid ``H0 x W0``,
   bilinearly with ``align_corners=False`` (``F.interpolate``), separately for each channel
   and patch offset ``(c, dy, dx)``: the unfolded (zero-padded) values are interpolated,
   not the raw map.
3. **MeanMapper**: per layer, ``adaptive_avg_pool1d`` of each patch vector (length
   ``C * p * p``) to ``pretrain_embed_dimension``.
4. **Aggregator**: the ``[L, pretrain]`` stack, flattened layer-major, pooled again with
   ``adaptive_avg_pool1d`` to ``target_embed_dimension``.

``adaptive_avg_pool1d`` from length ``n_in`` to ``n_out``: output ``j`` is the mean of inputs
``[floor(j * n_in / n_out), ceil((j + 1) * n_in / n_out))``. Bins may overlap, and when
``n_in < n_out`` inputs repeat; both are the reference's behaviour.

Bilinear source coordinate (PyTorch, ``align_corners=False``, size given):
``src = (dst + 0.5) * n_in / n_out - 0.5``, clamped below at 0; ``i0 = floor(src)``,
``i1 = min(i0 + 1, n_in - 1)``, ``w1 = src - i0``, ``w0 = 1 - w1``.

Layout and dtype: output ``[B * H0 * W0, target_embed_dimension]`` float32, rows ordered
``(b, y, x)`` row-major. Everything is computed in float64 and rounded once at the end.
Meant for small inputs: the ``C * p * p`` vectors are materialised.
"""

from __future__ import annotations

import numpy as np


def adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """``[start, end)`` of every output of ``adaptive_avg_pool1d(n_in -> n_out)``."""
    return [((j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)) for j in range(n_out)]


def adaptive_avg_pool1d(x: np.ndarray, n_out: int) -> np.ndarray:
    """``adaptive_avg_pool1d`` over the last axis of ``x`` (float64)."""
    bins = adaptive_bins(x.shape[-1], n_out)
    return np.stack([x[..., start:end].mean(axis=-1) for start, end in bins], axis=-1)


def bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weights ``w0, w1`` (float64) of every output position of a
    1-D linear resize ``n_in -> n_out`` with ``align_corners=False``."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``x`` to ``size`` (``align_corners=False``)."""
    y0, y1, wy0, wy1 = bilinear_taps(x.shape[-2], size[0])
    x0, x1, wx0, wx1 = bilinear_taps(x.shape[-1], size[1])
    rows = x[..., y0, :] * wy0[:, None] + x[..., y1, :] * wy1[:, None]
    return rows[..., x0] * wx0 + rows[..., x1] * wx1


def unfold(x: np.ndarray, patch_size: int) -> np.ndarray:
    """``[B, C, H, W]`` -> ``[B, C, p, p, H, W]``: value ``[b, c, dy, dx, y, x]`` is
    ``x[b, c, y + dy - pad, x + dx - pad]``, or 0 outside the map (``pad = (p - 1) // 2``)."""
    n_batch, n_channels, height, width = x.shape
    pad = (patch_size - 1) // 2
    padded = np.zeros((n_batch, n_channels, height + 2 * pad, width + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + height, pad:pad + width] = x
    out = np.empty((n_batch, n_channels, patch_size, patch_size, height, width), dtype=x.dtype)
    for dy in range(patch_size):
        for dx in range(patch_size):
            out[:, :, dy, dx] = padded[:, :, dy:dy + height, dx:dx + width]
    return out


def patch_aggregate(
    features: list,  # L maps [B, C_l, H_l, W_l] float; layer 0 sets the grid
    *,
    patch_size: int = 3,
    pretrain_embed_dimension: int = 1024,
    target_embed_dimension: int = 1024,
) -> np.ndarray:
    """PatchCore patch features from backbone maps.

    Args:
        features: list of ``L`` float arrays ``[B, C_l, H_l, W_l]`` (same ``B``).
        patch_size: odd patch size ``p``.
        pretrain_embed_dimension: per-layer pooled length.
        target_embed_dimension: final length.

    Returns:
        ``[B * H0 * W0, target_embed_dimension]`` float32, rows ordered ``(b, y, x)``.
    """
    maps = [np.asarray(f, dtype=np.float64) for f in features]
    n_batch, _, height, width = maps[0].shape
    per_layer = []
    for layer, x in enumerate(maps):
        patches = unfold(x, patch_size)  # [B, C, p, p, H_l, W_l]
        if layer > 0:
            patches = resize_bilinear(patches, (height, width))
        # [B, C, p, p, H0, W0] -> [B, H0, W0, C * p * p] in (c, dy, dx) order.
        vector_len = x.shape[1] * patch_size * patch_size
        vectors = patches.transpose(0, 4, 5, 1, 2, 3).reshape(n_batch * height * width, vector_len)
        per_layer.append(adaptive_avg_pool1d(vectors, pretrain_embed_dimension))
    stacked = np.stack(per_layer, axis=1)  # [N, L, pretrain]; flattened layer-major next
    stacked = stacked.reshape(n_batch * height * width, len(maps) * pretrain_embed_dimension)
    return adaptive_avg_pool1d(stacked, target_embed_dimension).astype(np.float32)
