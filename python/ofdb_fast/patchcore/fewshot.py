"""Few-shot PatchCore: memory banks from K normal images and the patch-similarity scorer.

See shared/reference/other-seeds.md, section 4 (AnomalyGPT's and jinwwo/Anomaly-Localization's
few-shot formulation) and 4c (how it sits in the PatchCore toolkit).

Conventions:
- Reference choice (:func:`select_shots`): ``"random"`` (default) takes the first K entries of
  the counter-RNG permutation of the training images (``seeded_permutation(N, seed)``, stream
  ``STREAM_SPLIT``), ``"first"`` the first K, ``"anomalygpt"`` AnomalyGPT's
  ``4 * round .. 4 * round + K - 1`` (``round`` 3 by default: files 012..015 of a sorted
  ``train/good``). Indices are returned sorted; the files used are logged in ``fit_info``.
- Scorer ``"knn"`` (PatchCore few-shot): the usual aggregated features and L2 kNN, with a bank
  of all K*h*w patches; the coreset is skipped when the bank has at most
  :data:`SMALL_BANK` patches.
- Scorer ``"fewshot"`` (AnomalyGPT): per layer ``l`` the raw backbone features (no local
  aggregation, no projection) are L2-normalised over channels; each query patch takes its
  maximum cosine ``S_l`` over ALL ``K * h_l * w_l`` reference patches of that layer (a GEMM
  against the normalised bank, tiled over queries: never a broadcast cosine). The ``S_l``
  grids are resized bilinearly (``align_corners=False``, as the jinwwo seed) to the finest
  layer grid and averaged; the patch anomaly is ``1 - mean_l S_l``. The map is that grid
  upsampled bilinearly with ``align_corners=True`` (AnomalyGPT) to the image size, optionally
  Gaussian-smoothed (``sigma``; 0 is AnomalyGPT's exact map), and the image score is the
  map's maximum. With every layer on one grid (ViTs, AnomalyGPT) the resize is the identity.
- Zero feature vectors normalise to zero (cosine 0), not NaN (``F.normalize``'s eps 1e-12).
- Rotation augmentation of the references (AnomalyGPT has it but never enables it at test
  time) is available as :func:`rotate_references`, off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCORERS = ("knn", "fewshot")
SHOT_MODES = ("random", "first", "anomalygpt")
SMALL_BANK = 65536  # patches; a few-shot bank at most this large is kept whole (no coreset)
_CHUNK_ELEMENTS = 1 << 24  # similarities materialised per query tile


def select_shots(n_available: int, n_shots: int, *, seed: int = 0, mode: str = "random",
                 round_index: int = 3) -> np.ndarray:
    """Indices of the K reference images among ``n_available`` training images.

    Args:
        n_available: number of training images.
        n_shots: K, ``1 <= K <= n_available``.
        seed: seed of ``mode="random"``.
        mode: ``"random"``, ``"first"`` or ``"anomalygpt"`` (see the module docstring).
        round_index: AnomalyGPT's ``--round`` (first index ``4 * round_index``).

    Returns:
        int64 ``[K]`` sorted indices.

    Example:
        >>> select_shots(20, 2, mode="anomalygpt").tolist()
        [12, 13]
    """
    from .._validate import require_int
    from ..convert.kolektor import seeded_permutation

    n_available = require_int(n_available, "n_available", minimum=1)
    n_shots = require_int(n_shots, "n_shots", minimum=1, maximum=n_available)
    if mode not in SHOT_MODES:
        raise ValueError(f"mode must be one of {SHOT_MODES}, got {mode!r}")
    if mode == "random":
        idx = seeded_permutation(n_available, require_int(seed, "seed", minimum=0))[:n_shots]
    else:
        start = 0 if mode == "first" else 4 * require_int(round_index, "round_index", minimum=0)
        if start + n_shots > n_available:
            raise ValueError(f"n_shots must fit after index {start} ({mode}, round {round_index}) in "
                             f"{n_available} training images, got {n_shots}")
        idx = np.arange(start, start + n_shots)
    return np.sort(idx).astype(np.int64)


def take_shots(data: Any, indices: Sequence[int]) -> tuple[Any, list[str]]:
    """The subset of a training set given by ``indices``, and a description of each item.

    ``data`` is an array ``[N, 3, H, W]`` (descriptions ``"#i"``), a dataset with ``samples``
    (``MVTecDataset``: a new dataset over those samples, descriptions = file paths) or any
    indexable dataset (``torch.utils.data.Subset``).
    """
    idx = [int(i) for i in indices]
    if hasattr(data, "shape") and len(data.shape) == 4:
        return data[np.asarray(idx)] if isinstance(data, np.ndarray) else data[idx], [f"#{i}" for i in idx]
    if hasattr(data, "samples") and hasattr(data, "category_dir"):
        samples = [data.samples[i] for i in idx]
        return type(data)(data.category_dir, data.split, data.pre, samples=samples), [s.path for s in samples]
    import torch

    return torch.utils.data.Subset(data, idx), [f"#{i}" for i in idx]


def rotate_references(images: Any) -> Any:
    """``[K, 3, H, W]`` -> ``[4K, 3, ., .]``: each reference at 0, 90, 180 and 270 degrees
    (square images keep their shape; the bank is a set of patches, so order does not matter)."""
    import torch

    x = torch.as_tensor(images)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be square to stack their rotations, got {tuple(x.shape)}")
    return torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])


def normalized_tokens(features: Any) -> Any:
    """``[B, C, h, w]`` -> ``[B*h*w, C]`` float32 rows of unit L2 norm, (b, y, x) order."""
    import torch.nn.functional as F

    f = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return F.normalize(f, dim=1)


def max_cosine(queries: Any, bank: Any) -> Any:
    """``queries [Q, C]`` and ``bank [R, C]`` (unit rows) -> ``[Q]`` max over the bank of the
    dot product, tiled so at most ~2^24 similarities exist at once."""
    import torch

    if bank.shape[0] < 1:
        raise ValueError(f"bank must have shape [R, C] with R >= 1, got {tuple(bank.shape)}")
    step = max(1, _CHUNK_ELEMENTS // int(bank.shape[0]))
    out = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    for start in range(0, queries.shape[0], step):
        out[start:start + step] = (queries[start:start + step] @ bank.T).amax(1)
    return out


def similarity_grids(layer_features: Sequence[Any], layer_banks: Sequence[Any]) -> Any:
    """Mean over layers of the max-cosine grids.

    Args:
        layer_features: per layer ``[B, C_l, h_l, w_l]`` raw features of the query images.
        layer_banks: per layer ``[R_l, C_l]`` unit-norm reference patches.

    Returns:
        ``[B, h, w]`` float32 ``mean_l S_l`` on the finest layer grid (largest ``h_l * w_l``;
        the first such layer on ties).
    """
    import torch.nn.functional as F

    if len(layer_features) != len(layer_banks) or not layer_features:
        raise ValueError(f"layer_banks must have one bank per layer ({len(layer_features)}), got {len(layer_banks)}")
    grids = [tuple(f.shape[2:]) for f in layer_features]
    target = max(grids, key=lambda g: g[0] * g[1])
    total = None
    for feats, bank in zip(layer_features, layer_banks):
        if bank.shape[1] != feats.shape[1]:
            raise ValueError(f"layer_banks must match the layer's channels {feats.shape[1]}, got {tuple(bank.shape)}")
        b, _, h, w = feats.shape
        sim = max_cosine(normalized_tokens(feats), bank.to(feats.device, bank.dtype)).reshape(b, 1, h, w)
        if (h, w) != target:
            sim = F.interpolate(sim, size=target, mode="bilinear", align_corners=False)
        total = sim if total is None else total + sim
    return (total / len(layer_features))[:, 0]


def fewshot_maps(patch_anomaly: Any, size: Any, sigma: float = 0.0) -> tuple[Any, Any]:
    """``[B, h, w]`` patch anomalies -> ``(image_scores [B], maps [B, H, W])``.

    Bilinear upsampling with ``align_corners=True`` (AnomalyGPT), optional scipy-equivalent
    Gaussian smoothing (``sigma`` pixels), image score = max of the map.
    """
    import torch.nn.functional as F

    from .._validate import require_size2
    from .scoring import gaussian_blur_torch

    height, width = require_size2(size, "size")
    x = patch_anomaly.float()[:, None]
    maps = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)[:, 0]
    maps = gaussian_blur_torch(maps, sigma)
    return maps.reshape(maps.shape[0], -1).amax(1), maps


def score_batch(extractor: Any, images: Any, layer_banks: Sequence[Any], sigma: float = 0.0) -> tuple[Any, Any]:
    """The few-shot scorer on a batch: ``images [B, 3, H, W]`` (normalised, on the extractor's
    device) -> ``(image_scores [B], maps [B, H, W])`` torch float32.

    Example:
        >>> banks = build_layer_banks(extractor, reference_images)  # doctest: +SKIP
        >>> scores, maps = score_batch(extractor, test_images, banks)  # doctest: +SKIP
    """
    import torch

    with torch.inference_mode():
        feats = extractor(images)
        anomaly = 1.0 - similarity_grids(feats, layer_banks)
    return fewshot_maps(anomaly, tuple(images.shape[2:]), sigma)


def build_layer_banks(extractor: Any, images: Any, batch_size: int = 8) -> list[Any]:
    """Per-layer unit-norm reference banks ``[K*h_l*w_l, C_l]`` from reference images
    ``[K, 3, H, W]`` (torch, on the extractor's device)."""
    import torch

    chunks: list[list[Any]] = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            feats = extractor(images[start:start + batch_size])
            if not chunks:
                chunks = [[] for _ in feats]
            for c, f in zip(chunks, feats):
                c.append(normalized_tokens(f))
    if not chunks:
        raise ValueError("images must hold at least one reference image, got 0")
    return [torch.cat(c) for c in chunks]
