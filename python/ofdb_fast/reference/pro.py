"""Reference AUPRO (MVTec AD per-region overlap), slow and written to be read: the test oracle.

Definition (same as :func:`ofdb_fast.patchcore.metrics.aupro`):
- Regions: connected components of each image's ground-truth mask, 8-connectivity
  (``connectivity=4`` for scipy's default cross), pooled over all images.
- For every distinct map value ``t`` (descending), prediction = ``maps >= t``;
  PRO(t) = mean over regions of ``|region ∩ prediction| / |region|``;
  FPR(t) = ``|prediction ∩ normal| / |normal|``, normal = every pixel with mask 0.
- The curve starts at (0, 0) (threshold above the maximum). AUPRO = trapezoid area under PRO
  over FPR in ``[0, fpr_limit]`` (PRO interpolated linearly at ``fpr_limit``) / ``fpr_limit``.

Cost: O(distinct values x pixels); meant for test inputs of a few thousand pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def pro_curve(masks: np.ndarray, maps: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO at every distinct threshold, starting at (0, 0).

    Args:
        masks: ``[N, H, W]`` bool ground truth.
        maps: ``[N, H, W]`` anomaly maps.

    Returns:
        ``(fpr, pro)``, each ``[n_distinct + 1]``, FPR ascending.
    """
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    structure = np.ones((3, 3), int) if connectivity == 8 else None
    regions = []  # list of (image index, boolean [H, W] region)
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=structure)
        regions += [(i, labels == k) for k in range(1, n + 1)]
    normal = ~masks
    if not regions:
        raise ValueError("masks must contain at least one anomalous pixel")
    if not normal.any():
        raise ValueError("masks must contain normal pixels")
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        fprs.append((predicted & normal).sum() / normal.sum())
        overlaps = [(predicted[i] & region).sum() / region.sum() for i, region in regions]
        pros.append(float(np.mean(overlaps)))
    return np.array(fprs), np.array(pros)


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
    """Normalised AUPRO up to ``fpr_limit`` over all distinct thresholds (see module docstring)."""
    fpr, pro = pro_curve(masks, maps, connectivity)
    area = 0.0
    for j in range(1, fpr.size):
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the last segment at the limit
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit
