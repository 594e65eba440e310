"""``patch_aggregate``: PatchCore patch features from backbone layer maps (the reference's
``_embed`` after the backbone: unfold, align grids, MeanMapper, Aggregator).

The math, layout and bin conventions are those of :mod:`ofdb_fast.reference.patch_aggregate`
(the spec). Output ``[B * H0 * W0, target_embed_dimension]`` float32, rows ``(b, y, x)``,
as the caller's array type on the caller's device.

Backends:
- ``numpy``: the reference (float64 inside; materialises the ``C * p * p`` vectors: small
  inputs only).
- ``cpu``: C++/OpenMP (``csrc/patchcore/patch_aggregate_cpu.cpp``). Pooling and bilinear
  alignment are linear maps on different axes, so they commute: every layer is pooled to
  ``pretrain_embed_dimension`` on its own grid first and only the pooled vectors are
  interpolated, so the ``C * p * p`` vectors of the aligned grid (9,216 values per position for
  WRN50 layer3) are never formed. float64 inside like the reference, rounded once (equal to
  ``numpy`` up to an occasional last-bit difference from the order of the sums). float64 maps
  (any layer) make it compute from float64; other dtypes are widened to float32 first.
- ``torch``: the reference project's own torch code path (``nn.Unfold`` + ``F.interpolate`` +
  ``F.adaptive_avg_pool1d``), CPU or CUDA: the baseline. Computes in the input dtype.
- ``triton`` (:mod:`ofdb_fast.triton.patch_aggregate`): per layer one gather kernel that
  pools the taps on the layer's own grid (coalesced along pixels; the patch vectors are never
  materialised), plus for deeper layers one kernel blending the pooled rows bilinearly into the
  output, the commuted order of the ``cpu`` backend; float32. On the GPU, or on CPU torch
  tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays, _dispatch, _validate

OP = "patch_aggregate"
SUPPORTED = ("numpy", "cpu", "torch", "triton")
AUTO_ORDER = {"cpu": ("cpu", "torch", "numpy"), "cuda": ("triton", "torch")}


def _validate_inputs(features: Any, patch_size: Any, pretrain: Any, target: Any) -> list:
    if not isinstance(features, (list, tuple)):
        raise TypeError(f"features must be a list of [B, C, H, W] arrays, got {type(features).__name__}")
    if len(features) == 0:
        raise ValueError("features must be a non-empty list of [B, C, H, W] arrays, got an empty list")
    maps = []
    for layer, x in enumerate(features):
        name = f"features[{layer}]"
        x = _validate.expect_array(x, name)
        _validate.require_ndim(x, name, 4, "[B, C, H, W]")
        _validate.require_dtype_kind(x, name, "f", "floating-point")
        if min(x.shape[1:]) < 1:
            raise ValueError(f"{name} must have shape [B, C, H, W] with C, H, W >= 1, got {tuple(x.shape)}")
        if layer > 0:
            if _arrays.kind_of(x) != _arrays.kind_of(maps[0]):
                raise TypeError(
                    f"{name} must be the same array type as features[0] ({_arrays.kind_of(maps[0])}), "
                    f"got {_arrays.kind_of(x)}"
                )
            _validate.require_same_device("features[0]", maps[0], name, x)
            if x.shape[0] != maps[0].shape[0]:
                raise ValueError(
                    f"{name} must have the batch size of features[0] ({maps[0].shape[0]}), got {tuple(x.shape)}"
                )
        maps.append(x)
    patch_size = _validate.require_int(patch_size, "patch_size", minimum=1)
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd (the patch grid must keep the map size), got {patch_size}")
    _validate.require_int(pretrain, "pretrain_embed_dimension", minimum=1)
    _validate.require_int(target, "target_embed_dimension", minimum=1)
    return maps


def patch_aggregate(
    features: list,  # L maps [B, C_l, H_l, W_l] float; layer 0 sets the grid
    *,
    patch_size: int = 3,
    pretrain_embed_dimension: int = 1024,
    target_embed_dimension: int = 1024,
    backend: str = "auto",
):
    """PatchCore patch features: ``[B * H0 * W0, target_embed_dimension]`` float32.

    Args:
        features: list of ``L`` float maps ``[B, C_l, H_l, W_l]`` (NumPy arrays, torch
            tensors or CuPy arrays; one type and device); layer 0's ``H0 x W0`` is the grid.
        patch_size: odd patch size (3 in PatchCore), stride 1, zero padding.
        pretrain_embed_dimension: per-layer pooled length (MeanMapper).
        target_embed_dimension: final length (Aggregator).
        backend: ``"auto"``, ``"numpy"``, ``"cpu"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[B * H0 * W0, target_embed_dimension]`` float32 with rows ordered ``(b, y, x)``,
        same array type and device as ``features[0]``.

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 2, 4, 4), np.float32)
        >>> out = patch_aggregate([x], pretrain_embed_dimension=6, target_embed_dimension=3,
        ...                       backend="numpy")
        >>> out.shape, float(out[5, 0])  # an interior patch of a constant map stays 1
        ((16, 3), 1.0)
    """
    maps = _validate_inputs(features, patch_size, pretrain_embed_dimension, target_embed_dimension)
    device = _arrays.device_of(maps[0])
    name = _dispatch.resolve(OP, backend, device, supported=SUPPORTED, auto_order=AUTO_ORDER)
    dims = dict(patch_size=patch_size, pretrain_embed_dimension=pretrain_embed_dimension,
                target_embed_dimension=target_embed_dimension)
    if maps[0].shape[0] == 0:  # empty batch: nothing to aggregate (torch's Unfold rejects it)
        if _arrays.kind_of(maps[0]) == "torch":
            import torch

            return torch.zeros((0, target_embed_dimension), dtype=torch.float32, device=maps[0].device)
        if _arrays.kind_of(maps[0]) == "cupy":
            return _arrays.cuda_empty((0, target_embed_dimension), "float32", maps[0])
        return np.zeros((0, target_embed_dimension), np.float32)
    if name in ("numpy", "cpu"):
        # bfloat16 has no NumPy dtype: widen (exactly) to float32 first.
        maps_np = [_arrays.to_numpy(x.float() if _validate.dtype_name(x) == "bfloat16" else x, f"features[{i}]")
                   for i, x in enumerate(maps)]
        if name == "numpy":
            from ..reference.patch_aggregate import patch_aggregate as aggregate_numpy

            out = aggregate_numpy(maps_np, **dims)
        else:
            from .. import _ext

            # One dtype for the kernel: float64 when any map is (widening is exact), else float32.
            dtype = np.float64 if any(m.dtype == np.float64 for m in maps_np) else np.float32
            out = _ext.load().patch_aggregate_cpu([np.ascontiguousarray(m, dtype=dtype) for m in maps_np],
                                                  patch_size, pretrain_embed_dimension, target_embed_dimension)
        return _arrays.wrap_like(out, maps[0])
    import torch

    kind = _arrays.kind_of(maps[0])
    if kind == "numpy":
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in maps]
    elif kind == "cupy":  # zero-copy views of the same GPU memory
        tensors = [torch.from_dlpack(x) for x in maps]
    else:
        tensors = maps
    if name == "torch":
        out = _aggregate_torch(tensors, **dims)
    else:
        from ..triton.patch_aggregate import patch_aggregate_triton

        out = patch_aggregate_triton(tensors, **dims)
    if kind == "numpy":
        return out.numpy()
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(out)
    return out


def _aggregate_torch(
    features: list, *, patch_size: int, pretrain_embed_dimension: int, target_embed_dimension: int
):
    """The reference's torch code path (PatchMaker.patchify, the grid alignment of _embed,
    Preprocessing/MeanMapper, Aggregator), re-written here."""
    import torch
    import torch.nn.functional as F

    pad = (patch_size - 1) // 2
    unfold = torch.nn.Unfold(kernel_size=patch_size, stride=1, padding=pad, dilation=1)
    n_batch = features[0].shape[0]
    ref_grid = tuple(features[0].shape[-2:])
    layers = []
    for layer, x in enumerate(features):
        grid = tuple(x.shape[-2:])
        patches = unfold(x).reshape(n_batch, x.shape[1], patch_size, patch_size, -1)
        patches = patches.permute(0, 4, 1, 2, 3)  # [B, H*W, C, p, p]
        if layer > 0:
            patches = patches.reshape(n_batch, grid[0], grid[1], *patches.shape[2:])
            patches = patches.permute(0, 3, 4, 5, 1, 2)  # [B, C, p, p, H, W]
            base_shape = patches.shape
            patches = patches.reshape(-1, *grid).unsqueeze(1)
            patches = F.interpolate(patches, size=ref_grid, mode="bilinear", align_corners=False)
            patches = patches.squeeze(1).reshape(*base_shape[:-2], *ref_grid)
            patches = patches.permute(0, 4, 5, 1, 2, 3)  # [B, H0, W0, C, p, p]
            patches = patches.reshape(n_batch, -1, *patches.shape[-3:])
        patches = patches.reshape(-1, 1, x.shape[1] * patch_size * patch_size)
        layers.append(F.adaptive_avg_pool1d(patches, pretrain_embed_dimension).squeeze(1))
    stacked = torch.stack(layers, dim=1).reshape(len(layers[0]), 1, -1)
    out = F.adaptive_avg_pool1d(stacked, target_embed_dimension)
    return out.reshape(len(out), -1).to(torch.float32)
