"""Where the patch weights go: ground-truth defect coverage of the patch grid.

Anomaly Clustering stands on two legs: the weights ``alpha`` must find the defective patches,
and the backbone's embeddings of those patches must tell the defect types apart. A clustering
result alone cannot say which leg is weak. With ground-truth masks (MVTec-format
``ground_truth/<type>/<name>_mask.png``) two diagnostics can:

- ``alpha_on_defect``: the share of an image's weight that falls on patch cells overlapping its
  defect, averaged over the clustered defective images that have a non-empty mask; next to it
  ``defect_cell_share``, the same share under uniform weights (the level of chance). 1.0 means
  every image's weight lies on its defect.
- The ``mask`` weighting (:func:`mask_alpha`): alpha proportional to each cell's defect
  coverage (uniform for images without a defect). It reads the labels' masks, so it is not a
  clustering method; it is the best case of the weighting, and its NMI measures the backbone's
  embeddings alone.

Geometry: a mask is resized and centre-cropped exactly like its image
(:func:`ofdb_fast.patchcore.data.load_mask`), then area-averaged onto the ``h x w`` grid of the
embeddings' first layer (PIL's box filter, which weights every pixel by its overlap with a cell,
also when the crop size is not a multiple of the grid), so ``coverage[p]`` is the fraction of
cell ``p``'s area that is defective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def defect_coverage(mask_paths: Sequence[str | None], pre, n_patches: int) -> np.ndarray:
    """``[N, P]`` float64 in [0, 1]: the defective fraction of every patch cell.

    Args:
        mask_paths: one mask file per image, ``None`` for an image without a defect (all 0).
        pre: the images' :class:`ofdb_fast.patchcore.data.Preprocess` (square crop).
        n_patches: ``P = h * w`` of the embeddings; the crop is square, so ``h == w``.

    Raises:
        ValueError: ``n_patches`` is not a square number; a mask cannot be read.
    """
    from PIL import Image

    from ..patchcore.data import load_mask

    side = math.isqrt(int(n_patches))
    if side < 1 or side * side != n_patches:
        raise ValueError(f"n_patches must be h * w of a square patch grid, got {n_patches}")
    out = np.zeros((len(mask_paths), side * side), np.float64)
    for i, path in enumerate(mask_paths):
        if path is None:
            continue
        mask = load_mask(path, pre).astype(np.float32)
        cells = Image.fromarray(mask, "F").resize((side, side), Image.BOX)
        out[i] = np.clip(np.asarray(cells, np.float64).ravel(), 0.0, 1.0)
    return out


def mask_alpha(coverage: np.ndarray) -> np.ndarray:
    """The ground-truth weighting: ``coverage`` rows normalised to sum 1; a row without any
    defect gets uniform weights (``1 / P``, as the ``average`` mode)."""
    coverage = np.asarray(coverage, np.float64)
    total = coverage.sum(axis=1, keepdims=True)
    uniform = np.full_like(coverage, 1.0 / max(coverage.shape[1], 1))
    return np.where(total > 0, coverage / np.where(total > 0, total, 1.0), uniform)


def alpha_localisation(alpha: np.ndarray, coverage: np.ndarray, rows: np.ndarray) -> dict[str, float | int | None]:
    """``{"alpha_on_defect", "defect_cell_share", "n_localised"}`` over the images ``rows``
    (bool ``[N]``) whose coverage is not empty; both shares are None when there is none."""
    alpha = np.asarray(alpha, np.float64)
    on_defect = np.asarray(coverage) > 0
    rows = np.asarray(rows, bool) & on_defect.any(axis=1)
    if not rows.any():
        return {"alpha_on_defect": None, "defect_cell_share": None, "n_localised": 0}
    weight = (alpha[rows] * on_defect[rows]).sum(axis=1)
    share = on_defect[rows].mean(axis=1)
    return {"alpha_on_defect": float(weight.mean()), "defect_cell_share": float(share.mean()),
            "n_localised": int(rows.sum())}
