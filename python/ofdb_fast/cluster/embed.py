"""Patch embeddings for Anomaly Clustering, from the PatchCore feature path.

Pipeline per image (the reproduction's ``AnomalyClusteringCore._embed``; other-seeds.md 1a):
backbone layers (:class:`ofdb_fast.patchcore.PatchCore`'s truncated extractor, any supported
backbone and layers) -> **per-image LayerNorm** of every layer map over ``(C, H, W)`` (weight 1,
bias 0, eps 1e-5; not in PatchCore, on by default as in the reproduction) -> ``patch_aggregate``
(3x3 patches, aligned to the first layer's grid, pooled to ``pretrain_embed_dimension`` per
layer, then to ``target_embed_dimension``; the reproduction's 2048 / 4096) -> ``[N, P, D]``
float32 with patches in (y, x) order, on the model's device (torch).

The reproduction's backbone is DINO ViT-B/8; only the torchvision ResNets of
:mod:`ofdb_fast.patchcore.backbones` are available here (its README's WideResNet50 rows use
``layer2`` + ``layer3``, the default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

DEFAULTS = {
    "backbone": "wide_resnet50_2",
    "layers": ("layer2", "layer3"),
    "weights": "IMAGENET1K_V1",
    "pretrain_embed_dimension": 2048,
    "target_embed_dimension": 4096,
    "patch_size": 3,
    "resize": 256,
    "imagesize": 224,
}


def build_model(
    backbone: str = DEFAULTS["backbone"],
    layers: Sequence[str] = DEFAULTS["layers"],
    weights: Any = DEFAULTS["weights"],
    *,
    pretrain_embed_dimension: int = DEFAULTS["pretrain_embed_dimension"],
    target_embed_dimension: int = DEFAULTS["target_embed_dimension"],
    patch_size: int = DEFAULTS["patch_size"],
    resize: int = DEFAULTS["resize"],
    imagesize: int = DEFAULTS["imagesize"],
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 8,
    aggregate_backend: str = "auto",
):
    """A :class:`PatchCore` used only as the feature path (never fitted)."""
    from ..patchcore.model import PatchCore

    return PatchCore(backbone=backbone, layers=layers, weights=weights,
                     pretrain_embed_dimension=pretrain_embed_dimension,
                     target_embed_dimension=target_embed_dimension, patch_size=patch_size,
                     resize=resize, imagesize=imagesize, seed=seed, device=device, batch_size=batch_size,
                     aggregate_backend=aggregate_backend, coreset_method="all", progress=False)


def embed_batch(model: Any, images: Any, *, layer_norm: bool = True):
    """``images`` ``[B, 3, H, W]`` (normalised) -> torch ``[B, P, D]`` float32 on the model's
    device, ``P = h * w`` of the first layer's grid."""
    import torch
    import torch.nn.functional as F

    from ..ops.patch_aggregate import patch_aggregate

    x = model._as_batch(images)
    with torch.inference_mode():
        feats = model.extractor(x)
        if layer_norm:
            feats = [F.layer_norm(f, f.shape[1:], eps=1e-5) for f in feats]
    feats = [f.contiguous() for f in feats]
    out = patch_aggregate(feats, patch_size=model.config["patch_size"],
                          pretrain_embed_dimension=model.config["pretrain_embed_dimension"],
                          target_embed_dimension=model.config["target_embed_dimension"],
                          backend=model.aggregate_backend)
    out = torch.as_tensor(out, device=x.device)
    return out.reshape(x.shape[0], -1, out.shape[-1])


def embed_images(model: Any, batches: Iterable[Any], *, layer_norm: bool = True):
    """Concatenate :func:`embed_batch` over an iterable of image batches: torch ``[N, P, D]``."""
    import torch

    parts = [embed_batch(model, b, layer_norm=layer_norm) for b in batches]
    if not parts:
        raise ValueError("images must contain at least one image, got none")
    return torch.cat(parts)


def load_batches(model: Any, paths: Sequence[str], *, progress: bool = False, desc: str = "load"):
    """Yield the image files as model-ready torch batches ``[B, 3, H, W]`` (the model's resize /
    centre crop / normalisation, ``model.batch_size`` images at a time)."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..patchcore.data import Preprocess, load_image

    c = model.config
    pre = Preprocess(resize=c["resize"], imagesize=c["imagesize"], mean=tuple(c["mean"]), std=tuple(c["std"]))
    bs = model.batch_size
    for s in tqdm(range(0, len(paths), bs), desc=desc, unit="batch", disable=not progress, leave=False):
        yield model._as_batch(np.stack([load_image(p, pre) for p in paths[s:s + bs]]))


def embed_paths(model: Any, paths: Sequence[str], *, layer_norm: bool = True, progress: bool = False,
                desc: str = "embed"):
    """Load, preprocess (the model's resize / centre crop / normalisation) and embed image
    files: torch ``[N, P, D]``."""
    return embed_images(model, load_batches(model, paths, progress=progress, desc=desc), layer_norm=layer_norm)


def adapt_to_normals(model: Any, paths: Sequence[str], *, progress: bool = False) -> dict[str, int]:
    """Re-estimate the backbone's BatchNorm statistics on normal images (AdaBN; see
    ``ofdb_fast.patchcore.backbones.adapt_batchnorm``), in place."""
    from ..patchcore.backbones import adapt_batchnorm

    return adapt_batchnorm(model.extractor, load_batches(model, paths, progress=progress, desc="BatchNorm statistics"))
