"""PatchCore evaluation metrics: image AUROC, pixel AUROC (full / anomalous images), AUPRO, and
F1-max with its decision threshold (image and pixel level).

Conventions:
- Inputs are NumPy arrays or CPU torch tensors (read through ``np.asarray``); labels/masks are
  ``0``/``1`` (bool or integer), scores/maps are real and finite. ``labels``/``image_scores`` are
  ``[N]``, ``masks``/``maps`` are ``[N, H, W]``.
- AUROC is the Mann-Whitney statistic with ties counted as one half, which is exactly
  ``sklearn.metrics.roc_auc_score`` (its trapezoid over the ROC curve, ties averaged).
- The reference project min-max normalises image scores and maps over the test set before the
  metrics. A positive affine map preserves every ordering, so AUROC and AUPRO are unchanged by
  it (up to the resolution of the threshold bins in the binned paths below); it is not done here.
- ``pixel_auroc`` is exact (two sorted copies, ``searchsorted``) up to ``max_exact`` pixels.
  Beyond that it streams the maps in chunks into two ``2**20``-bin histograms (one per class)
  over ``[min, max]``. Pairs in different bins are ordered correctly (binning is monotone);
  pairs in the same bin are counted as ties (1/2). The error is therefore at most
  ``sum_b pos_b * neg_b / (2 * P * N)``; ``_binned_auroc`` returns this bound with the value.
- ``aupro`` follows the MVTec AD definition: ground-truth regions are the connected components
  of each image's mask with **8-connectivity** (``connectivity=8``, the MVTec AD evaluation
  script's ``np.ones((3, 3))`` structure; ``connectivity=4`` is scipy's default), counted over
  the whole test set; PRO(t) = mean over regions of ``|region ∩ {map >= t}| / |region|``;
  FPR(t) = false positives / all normal pixels (mask 0, in every image). The curve starts at
  (0, 0); PRO is integrated over FPR in ``[0, fpr_limit]`` by the trapezoid rule (interpolated
  linearly at ``fpr_limit``) and divided by ``fpr_limit``.
  Implementation: every pixel gets a threshold bin (``n_thresholds`` bins over ``[min, max]``
  of the maps, streamed in chunks), normal pixels add ``1 / n_normal`` and anomalous pixels
  ``1 / (n_regions * |region|)`` to their bin (two weighted ``bincount``); reverse cumulative
  sums give (FPR, PRO) at each bin edge. Because binning is monotone, each such point lies
  exactly on the curve over all distinct thresholds; the trapezoid over a subset of the points
  of a monotone curve differs from the full one by at most ``sum_segments dFPR * dPRO``
  (normalised by ``fpr_limit``), which ``_binned_pro_curve`` reports. With ``2**20`` bins this
  is below ``1e-6`` for continuous maps of realistic size.
- ``aupro`` needs scipy (``scipy.ndimage.label``), imported when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_BINS_AUROC = 2**20
# Pixels per streamed chunk: bounds temporaries to a few hundred MB at most.
_CHUNK_PIXELS = 1 << 22


# ---------------------------------------------------------------------------- validation
def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor: no torch import needed
        if getattr(x, "is_cuda", False):
            raise ValueError(f"{name} must be on the CPU, got a CUDA tensor")
        x = x.detach().numpy()
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        raise TypeError(f"{name} must be a rectangular array, got a ragged {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    return arr


def _binary(x: Any, name: str) -> np.ndarray:
    arr = _as_array(x, name)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a bool or numeric dtype, got {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1, got values {np.unique(arr)[:5].tolist()}...")
    return arr.astype(bool)


def _scores(x: Any, name: str) -> np.ndarray:
    arr = _as_array(x, name)
    if arr.dtype.kind not in "iufb":
        raise TypeError(f"{name} must have a real dtype, got {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)  # int/bool/float16: exact in float64
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must contain only finite values, got NaN or inf")
    return arr


def _pixels(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    masks = _binary(masks, "masks")
    maps = _scores(maps, "maps")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {masks.shape}")
    if maps.shape != masks.shape:
        raise ValueError(f"maps must have the shape of masks {masks.shape}, got {maps.shape}")
    return masks, maps


def _require_both_classes(n_pos: int, n_neg: int, what: str) -> None:
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{what} must contain both classes (AUROC is undefined), "
                         f"got {n_pos} positive and {n_neg} negative")


# ---------------------------------------------------------------------------- AUROC cores
def _exact_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUROC of 1-D score arrays, ties 1/2. Memory: copies of both + int64 [chunk]."""
    swap = pos.size > neg.size  # query with the smaller set; AUC(a>b) = 1 - AUC(b>a) with ties 1/2
    query, table = (neg, pos) if swap else (pos, neg)
    table = np.sort(table, kind="stable")
    twice = 0  # 2 * (#pairs query > table) + (#ties): exact integer
    for start in range(0, query.size, _CHUNK_PIXELS):
        q = np.sort(query[start:start + _CHUNK_PIXELS])
        twice += int(np.searchsorted(table, q, "left").sum(dtype=np.int64))
        twice += int(np.searchsorted(table, q, "right").sum(dtype=np.int64))
    auc = twice / (2.0 * pos.size * neg.size)
    return 1.0 - auc if swap else auc


def _bin_edges(lo: float, hi: float):
    """A monotone map score -> bin in [0, n_bins). Halves keep ``hi - lo`` finite for huge values."""
    half_lo, half_span = 0.5 * lo, 0.5 * hi - 0.5 * lo

    def to_bin(x: np.ndarray, n_bins: int) -> np.ndarray:
        u = (0.5 * x.astype(np.float64) - half_lo) / half_span
        return np.minimum((u * n_bins).astype(np.int64), n_bins - 1)

    return to_bin


def _chunks(n_images: int, pixels_per_image: int):
    step = max(1, _CHUNK_PIXELS // max(1, pixels_per_image))
    for start in range(0, n_images, step):
        yield slice(start, min(n_images, start + step))


def _class_histograms(masks: np.ndarray, maps: np.ndarray, n_bins: int, to_bin) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin counts of anomalous and of normal pixels, streamed in chunks of images."""
    hist_pos = np.zeros(n_bins, np.int64)
    hist_neg = np.zeros(n_bins, np.int64)
    for sl in _chunks(masks.shape[0], masks[0].size):
        m, b = masks[sl], to_bin(maps[sl], n_bins)
        hist_pos += np.bincount(b[m], minlength=n_bins)
        hist_neg += np.bincount(b[~m], minlength=n_bins)
    return hist_pos, hist_neg


def _binned_auroc(masks: np.ndarray, maps: np.ndarray, n_bins: int = N_BINS_AUROC) -> tuple[float, float]:
    """Streaming histogram AUROC of ``[N, H, W]`` inputs: ``(auroc, error_bound)``."""
    lo, hi = float(maps.min()), float(maps.max())
    n_pos = int(np.count_nonzero(masks))
    n_neg = masks.size - n_pos
    _require_both_classes(n_pos, n_neg, "masks")
    if lo == hi:
        return 0.5, 0.0
    hist_pos, hist_neg = _class_histograms(masks, maps, n_bins, _bin_edges(lo, hi))
    neg_below = np.cumsum(hist_neg) - hist_neg
    # Integer sums stay below P*N <= (total/2)^2 < 2^63 for any array that fits in memory.
    twice = 2 * int((hist_pos * neg_below).sum()) + int((hist_pos * hist_neg).sum())
    denom = 2.0 * n_pos * n_neg
    return twice / denom, int((hist_pos * hist_neg).sum()) / denom


# ---------------------------------------------------------------------------- public AUROC
def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level AUROC, equal to ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Args:
        labels: ``[N]`` 0 (good) / 1 (defect).
        scores: ``[N]`` anomaly scores (higher = more anomalous).

    Returns:
        AUROC in ``[0, 1]``; ties between a good and a defect image count one half.

    Raises:
        ValueError: shape mismatch, non-finite scores, or only one class present.

    Example:
        >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    labels = _binary(labels, "labels")
    scores = _scores(scores, "scores")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {labels.shape}")
    if scores.shape != labels.shape:
        raise ValueError(f"scores must have the shape of labels {labels.shape}, got {scores.shape}")
    n_pos = int(labels.sum())
    _require_both_classes(n_pos, labels.size - n_pos, "labels")
    return _exact_auroc(scores[labels], scores[~labels])


def pixel_auroc(masks: Any, maps: Any, *, max_exact: int = 50_000_000) -> float:
    """Pixel-level AUROC over every pixel of every image (``full_pixel_auroc``).

    Args:
        masks: ``[N, H, W]`` ground truth, 0/1 or bool.
        maps: ``[N, H, W]`` anomaly maps (float).
        max_exact: up to this many pixels the value is exact (sorting); above it a
            ``2**20``-bin streaming histogram is used, error at most
            ``sum_b pos_b * neg_b / (2 P N)`` (see the module docstring).

    Returns:
        AUROC in ``[0, 1]``.

    Raises:
        ValueError: shape mismatch, non-finite maps, or masks with one class only.

    Example:
        >>> m = np.zeros((1, 2, 2), bool); m[0, 0, 0] = True
        >>> pixel_auroc(m, np.array([[[0.9, 0.1], [0.2, 0.3]]]))
        1.0
    """
    masks, maps = _pixels(masks, maps)
    if masks.size <= max_exact:
        n_pos = int(np.count_nonzero(masks))
        _require_both_classes(n_pos, masks.size - n_pos, "masks")
        return _exact_auroc(maps[masks], maps[~masks])
    return _binned_auroc(masks, maps)[0]


def anomaly_pixel_auroc(masks: Any, maps: Any, *, max_exact: int = 50_000_000) -> float:
    """Pixel AUROC restricted to the images whose mask is non-empty (``anomaly_pixel_auroc``).

    Args:
        masks: ``[N, H, W]`` ground truth, 0/1 or bool.
        maps: ``[N, H, W]`` anomaly maps.
        max_exact: as in :func:`pixel_auroc`.

    Example:
        >>> m = np.zeros((2, 1, 2), bool); m[1, 0, 0] = True
        >>> anomaly_pixel_auroc(m, np.array([[[5.0, 5.0]], [[0.9, 0.1]]]))
        1.0
    """
    masks, maps = _pixels(masks, maps)
    keep = masks.reshape(masks.shape[0], -1).any(axis=1)
    if not keep.any():
        raise ValueError("masks must contain at least one non-empty mask, got only empty masks")
    return pixel_auroc(masks[keep], maps[keep], max_exact=max_exact)


# ---------------------------------------------------------------------------- F1-max / thresholds
def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[int, dict[str, float]]:
    """Best of the operating points (cumulative ``tp``, ``fp`` from the highest threshold down):
    ``(index, {"f1", "precision", "recall"})``; equal F1 goes to the first (highest) threshold."""
    f1 = 2.0 * tp / (tp + fp + n_pos)  # 2 TP / (2 TP + FP + FN), FN = P - TP
    k = int(np.argmax(f1))
    return k, {"f1": float(f1[k]), "precision": float(tp[k] / (tp[k] + fp[k])), "recall": float(tp[k] / n_pos)}


def _exact_f1_max(positive: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], positive[order]
    last = np.concatenate([s[1:] != s[:-1], [True]])  # a threshold takes every copy of its score
    tp, fp = np.cumsum(lab)[last], np.cumsum(~lab)[last]
    k, out = _f1_from_counts(tp, fp, int(tp[-1]))
    return {"threshold": float(s[last][k]), **out}


def _binned_f1_max(masks: np.ndarray, maps: np.ndarray, n_bins: int) -> dict[str, float]:
    lo, hi = float(maps.min()), float(maps.max())
    if lo == hi:  # one threshold: flag everything
        n_pos = int(np.count_nonzero(masks))
        _, out = _f1_from_counts(np.array([n_pos]), np.array([masks.size - n_pos]), n_pos)
        return {"threshold": lo, **out}
    to_bin = _bin_edges(lo, hi)
    hist_pos, hist_neg = _class_histograms(masks, maps, n_bins, to_bin)
    filled = np.nonzero((hist_pos + hist_neg)[::-1])[0]  # thresholds at the non-empty bins, top down
    tp, fp = np.cumsum(hist_pos[::-1])[filled], np.cumsum(hist_neg[::-1])[filled]
    k, out = _f1_from_counts(tp, fp, int(tp[-1]))
    first_bin = n_bins - 1 - int(filled[k])
    # Binning is monotone, so {map >= the lowest score in bins >= first_bin} is exactly those bins:
    # the threshold reproduces the F1 above.
    threshold = min(float(maps[sl][to_bin(maps[sl], n_bins) >= first_bin].min(initial=np.inf))
                    for sl in _chunks(masks.shape[0], masks[0].size))
    return {"threshold": threshold, **out}


def f1_max(labels: Any, scores: Any) -> dict[str, float]:
    """The best F1 over every decision threshold (flag a defect where ``score >= threshold``).

    Exact: every distinct score is tried (tied scores are flagged together). Of thresholds with
    equal F1 the highest is returned. Chosen on the labels it is scored on, it is an optimistic
    (oracle) operating point, the "F1-max" of anomaly detection papers; a production line should
    choose its threshold on held-out labelled images.

    Args:
        labels: ``[N]`` 0 (good) / 1 (defect), at least one defect.
        scores: ``[N]`` anomaly scores (higher = more anomalous).

    Returns:
        ``{"threshold", "f1", "precision", "recall"}``.

    Example:
        >>> f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])  # flag 0.8, 0.4, 0.35: TP 2, FP 1
        {'threshold': 0.35, 'f1': 0.8, 'precision': 0.6666666666666666, 'recall': 1.0}
    """
    labels = _binary(labels, "labels")
    scores = _scores(scores, "scores")
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must have the same shape [N], got {labels.shape} and {scores.shape}")
    if not labels.any():
        raise ValueError("labels must contain at least one defect (1): F1 is undefined without positives")
    return _exact_f1_max(labels, scores)


def pixel_f1_max(masks: Any, maps: Any, *, max_exact: int = 50_000_000) -> dict[str, float]:
    """:func:`f1_max` over every pixel of every image (segmentation threshold).

    Args:
        masks: ``[N, H, W]`` ground truth with at least one anomalous pixel.
        maps: ``[N, H, W]`` anomaly maps.
        max_exact: up to this many pixels every distinct value is tried; above it the
            thresholds are the ``2**20`` histogram bins' lowest values (streamed, as
            :func:`pixel_auroc`), so the F1 may be below the exact maximum by the bins'
            resolution; the returned threshold still gives exactly the returned F1.

    Example:
        >>> m = np.zeros((1, 2, 2), bool); m[0, 0, 0] = True
        >>> pixel_f1_max(m, np.array([[[0.9, 0.1], [0.2, 0.3]]]))["threshold"]
        0.9
    """
    masks, maps = _pixels(masks, maps)
    if not masks.any():
        raise ValueError("masks must contain at least one anomalous pixel: F1 is undefined without positives")
    if masks.size <= max_exact:
        return _exact_f1_max(masks.ravel(), maps.ravel())
    return _binned_f1_max(masks, maps, N_BINS_AUROC)


# ---------------------------------------------------------------------------- AUPRO
def _inverse_region_sizes(mask: np.ndarray, structure) -> tuple[np.ndarray, int]:
    """``1 / |region|`` for each anomalous pixel of one ``[H, W]`` mask (in ``mask`` order)
    and the number of regions."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel())
    return 1.0 / sizes[labels[mask]], n


def _binned_pro_curve(masks: np.ndarray, maps: np.ndarray, n_thresholds: int,
                      connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every bin edge, from the highest threshold down; starts at (0, 0), ends
    at (1, 1). Each point lies exactly on the curve over all distinct thresholds. One pass,
    memory ``O(n_thresholds + chunk)``: regions are labelled image by image, and the overlap
    sums are divided by the total region count at the end."""
    structure = np.ones((3, 3), int) if connectivity == 8 else None
    n_normal = masks.size - int(np.count_nonzero(masks))
    lo, hi = float(maps.min()), float(maps.max())
    to_bin = _bin_edges(lo, hi) if hi > lo else (lambda x, n: np.zeros(x.shape, np.int64))
    fp = np.zeros(n_thresholds, np.int64)
    overlap = np.zeros(n_thresholds)  # sum over regions of the covered fraction, per bin
    n_regions = 0
    for sl in _chunks(masks.shape[0], masks[0].size):
        m, b = masks[sl], to_bin(maps[sl], n_thresholds)
        fp += np.bincount(b[~m], minlength=n_thresholds)
        for mi, bi in zip(m, b):
            if mi.any():
                weights, n = _inverse_region_sizes(mi, structure)
                overlap += np.bincount(bi[mi], weights=weights, minlength=n_thresholds)
                n_regions += n
    if n_regions == 0:
        raise ValueError("masks must contain at least one anomalous pixel for AUPRO, got only empty masks")
    if n_normal == 0:
        raise ValueError("masks must contain normal pixels for AUPRO (FPR is undefined), got none")
    # Bin k's threshold predicts every pixel in bins >= k: reverse cumulative sums.
    fpr = np.concatenate([[0.0], np.cumsum(fp[::-1]) / n_normal])
    pro = np.concatenate([[0.0], np.cumsum(overlap[::-1]) / n_regions])
    return fpr, pro


def _trapezoid_to(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under the piecewise-linear (fpr, pro) curve for fpr in [0, limit]; fpr ascending."""
    k = int(np.searchsorted(fpr, limit, "right"))  # points with fpr <= limit: [0, k)
    x, y = fpr[:k], pro[:k]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) * 0.5))
    if k < fpr.size and x[-1] < limit:
        x0, x1, y0, y1 = x[-1], fpr[k], y[-1], pro[k]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_lim) * 0.5
    return area


def aupro(masks: Any, maps: Any, *, fpr_limit: float = 0.3, n_thresholds: int = 2**20,
          connectivity: int = 8) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD AUPRO).

    Args:
        masks: ``[N, H, W]`` ground truth, 0/1 or bool; must contain anomalous and normal pixels.
        maps: ``[N, H, W]`` anomaly maps.
        fpr_limit: integrate PRO over FPR in ``[0, fpr_limit]``, then divide by it.
        n_thresholds: number of threshold bins over ``[min, max]`` of the maps (memory
            ``O(n_thresholds)``; see the module docstring for the error bound).
        connectivity: 8 (MVTec AD evaluation) or 4 (scipy's default) for the GT regions.

    Returns:
        AUPRO in ``[0, 1]``: 1 for a map that ranks every anomalous pixel above every normal one.

    Raises:
        ValueError: shape mismatch, non-finite maps, no anomalous or no normal pixels, bad limits.

    Example:
        >>> m = np.zeros((1, 4, 4), bool); m[0, :2, :2] = True
        >>> aupro(m, m.astype(float))
        1.0
    """
    masks, maps = _pixels(masks, maps)
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if isinstance(n_thresholds, bool) or not isinstance(n_thresholds, (int, np.integer)):
        raise TypeError(f"n_thresholds must be an int, got {type(n_thresholds).__name__}")
    if n_thresholds < 2:
        raise ValueError(f"n_thresholds must be >= 2, got {n_thresholds}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    fpr, pro = _binned_pro_curve(masks, maps, int(n_thresholds), connectivity)
    return float(_trapezoid_to(fpr, pro, float(fpr_limit)) / float(fpr_limit))


def aupro_error_bound(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Bound on |binned AUPRO - AUPRO over all distinct thresholds| for a binned curve:
    on each segment the exact monotone curve stays inside the segment's bounding box."""
    k = int(np.searchsorted(fpr, limit, "right")) + 1
    dx, dy = np.diff(fpr[:k]), np.diff(pro[:k])
    return float(np.sum(dx * dy)) / limit


# ---------------------------------------------------------------------------- all at once
def evaluate(labels: Any, image_scores: Any, masks: Any = None, maps: Any = None, *,
             fpr_limit: float = 0.3) -> dict[str, float]:
    """The reference project's metrics for one category (plus AUPRO).

    Args:
        labels: ``[N]`` 0 (good) / 1 (defect).
        image_scores: ``[N]`` image anomaly scores.
        masks: optional ``[N, H, W]`` ground truth; when given, ``maps`` is required and the
            pixel metrics are added.
        maps: optional ``[N, H, W]`` anomaly maps.
        fpr_limit: AUPRO integration limit.

    Returns:
        ``{"instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro"}`` (the last
        three only with masks).

    Example:
        >>> evaluate([0, 1], [0.2, 0.7])
        {'instance_auroc': 1.0}
    """
    out = {"instance_auroc": image_auroc(labels, image_scores)}
    if masks is None and maps is None:
        return out
    if masks is None or maps is None:
        raise ValueError(f"masks and maps must be given together, got masks={'None' if masks is None else 'array'}, "
                         f"maps={'None' if maps is None else 'array'}")
    masks, maps = _pixels(masks, maps)
    if masks.shape[0] != np.shape(labels)[0]:
        raise ValueError(f"masks must have one mask per label ({np.shape(labels)[0]}), got {masks.shape[0]}")
    out["full_pixel_auroc"] = pixel_auroc(masks, maps)
    out["anomaly_pixel_auroc"] = anomaly_pixel_auroc(masks, maps)
    out["aupro"] = aupro(masks, maps, fpr_limit=fpr_limit)
    return out


# ---------------------------------------------------------------------------- curves for plots
N_BINS_CURVES = 2**16


def _thin(x: np.ndarray, y: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``n_points`` of a monotone polyline, spread evenly along its length.
    Only existing points are kept (so each stays exactly on the curve), ends included."""
    if x.size <= n_points:
        return x, y
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    idx = np.searchsorted(s, np.linspace(0.0, s[-1], n_points)) if s[-1] > 0 else np.array([0])
    idx = np.unique(np.concatenate([[0], np.minimum(idx, x.size - 1), [x.size - 1]]))
    return x[idx], y[idx]


def image_roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact image ROC: ``(fpr, tpr)`` at every distinct score, from (0, 0) to (1, 1).

    Its trapezoid area equals :func:`image_auroc` (tied scores form one diagonal step).

    Example:
        >>> image_roc_curve([0, 1], [0.2, 0.7])
        (array([0., 0., 1.]), array([0., 1., 1.]))
    """
    labels = _binary(labels, "labels")
    scores = _scores(scores, "scores")
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must have the same shape [N], got {labels.shape} and {scores.shape}")
    n_pos = int(labels.sum())
    _require_both_classes(n_pos, labels.size - n_pos, "labels")
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    last = np.concatenate([s[1:] != s[:-1], [True]])  # last index of each distinct score
    tpr = np.concatenate([[0.0], np.cumsum(lab)[last] / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(~lab)[last] / (labels.size - n_pos)])
    return fpr, tpr


def _binned_pixel_roc(masks: np.ndarray, maps: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ROC ``(fpr, tpr)`` at every bin edge (each point lies exactly on the full curve)."""
    n_pos = int(np.count_nonzero(masks))
    _require_both_classes(n_pos, masks.size - n_pos, "masks")
    lo, hi = float(maps.min()), float(maps.max())
    to_bin = _bin_edges(lo, hi) if hi > lo else (lambda x, n: np.zeros(x.shape, np.int64))
    hist_pos, hist_neg = _class_histograms(masks, maps, n_bins, to_bin)
    tpr = np.concatenate([[0.0], np.cumsum(hist_pos[::-1]) / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(hist_neg[::-1]) / (masks.size - n_pos)])
    return fpr, tpr


def curves(labels: Any, image_scores: Any, masks: Any = None, maps: Any = None, *, fpr_limit: float = 0.3,
           n_points: int = 300, n_thresholds: int = N_BINS_CURVES) -> dict[str, Any]:
    """Curve points for plots (reports), JSON-ready: lists of floats.

    Args:
        labels, image_scores, masks, maps, fpr_limit: as in :func:`evaluate`.
        n_points: each curve is thinned to about this many of its own points.
        n_thresholds: threshold bins of the pixel ROC and PRO curves (points lie exactly on
            the curves; the trapezoid over them approximates the metric within the bound of
            :func:`aupro_error_bound`).

    Returns:
        ``{"image_roc": {"fpr", "tpr"}}``, plus with masks ``"pixel_roc": {"fpr", "tpr"}``
        (all images) and ``"pro": {"fpr", "pro"}`` (FPR in ``[0, fpr_limit]``, ending at
        ``fpr_limit`` by linear interpolation as in :func:`aupro`), and ``"fpr_limit"``.

    Example:
        >>> curves([0, 1], [0.2, 0.7])["image_roc"]
        {'fpr': [0.0, 0.0, 1.0], 'tpr': [0.0, 1.0, 1.0]}
    """
    def pack(x, y, keys):
        x, y = _thin(np.asarray(x, np.float64), np.asarray(y, np.float64), n_points)
        return {keys[0]: [round(float(v), 7) for v in x], keys[1]: [round(float(v), 7) for v in y]}

    out: dict[str, Any] = {"image_roc": pack(*image_roc_curve(labels, image_scores), ("fpr", "tpr"))}
    if masks is None or maps is None:
        return out
    masks, maps = _pixels(masks, maps)
    out["pixel_roc"] = pack(*_binned_pixel_roc(masks, maps, n_thresholds), ("fpr", "tpr"))
    fpr, pro = _binned_pro_curve(masks, maps, n_thresholds)
    k = int(np.searchsorted(fpr, fpr_limit, "right"))
    x, y = fpr[:k], pro[:k]
    if k < fpr.size and x[-1] < fpr_limit:
        y_lim = y[-1] + (pro[k] - y[-1]) * (fpr_limit - x[-1]) / (fpr[k] - x[-1])
        x, y = np.append(x, fpr_limit), np.append(y, y_lim)
    out["pro"] = pack(x, y, ("fpr", "pro"))
    out["fpr_limit"] = float(fpr_limit)
    return out
