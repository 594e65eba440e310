"""``ifs_render``: render one fractal image per IFS system (chaos game + F4AD augmentations).

Semantics, RNG streams and every deviation from the reference generator are documented in
:mod:`ofdb_fast.reference.ifs_render` (the NumPy spec). Backends:

- ``numpy``: the reference itself (vectorised across images, a Python loop over points).
- ``cpu``: ``_C.ifs_render_cpu`` (C++/OpenMP, one image pipeline per thread, GIL released),
  bit-identical to ``numpy`` for both outputs and every config.
- ``cuda``: ``_C.ifs_render_cuda`` on device pointers and the caller's current stream; equal to
  ``numpy`` up to rare pixels (device ``exp`` in the blur weights differs in the last ulp). The
  diamond-square background (``config.background``) is not implemented there yet (RuntimeError).
  Throughput needs large batches: each image's chaos game is one dependent chain run by one GPU
  thread (two passes of ``n_points`` steps, ~25 ms at 100k points by the PTX, whatever the
  batch), so a call costs about the same for 64 or 4,096 images; pass thousands per call (memory:
  ``n * size^2 * 7`` bytes, counts and RGB).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import _arrays, _dispatch, _ext, _validate
from ..reference import ifs_render as _reference
from ..reference.ifs_render import RenderConfig

__all__ = ["RenderConfig", "ifs_render"]

OP = "ifs_render"
MAX_MAPS = 32  # mirror of ofdb::ifs::kMaxMaps (csrc/fractal/ifs_render.h)
MAX_POINTS = 1 << 27  # keeps 9 * n_points (patch splat) within int32 counts
_PROB_TOL = 1e-6


def _pair(value: Any, name: str, positive: bool = False) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (lo, hi), got {value!r}")
    lo = _validate.require_float(value[0], f"{name}[0]")
    hi = _validate.require_float(value[1], f"{name}[1]")
    if lo > hi:
        raise ValueError(f"{name} must have lo <= hi, got {value!r}")
    if positive and lo <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return lo, hi


def _check_config(config: Any) -> RenderConfig:
    if config is None:
        return RenderConfig()
    if not isinstance(config, RenderConfig):
        raise TypeError(f"config must be a RenderConfig, got {type(config).__name__}")
    _validate.require_int(config.n_points, "config.n_points", minimum=1, maximum=MAX_POINTS)
    _pair(config.jitter_range, "config.jitter_range", positive=True)
    _validate.require_int(config.jitter_tries, "config.jitter_tries", minimum=0)
    _validate.require_float(config.translate, "config.translate", lo=0.0)
    if config.scale is not None:
        _pair(config.scale, "config.scale", positive=True)
    _pair(config.blur_sigma, "config.blur_sigma", positive=True)
    return config


def _host(x: Any) -> np.ndarray:
    """A host copy of a (small) array, for value checks only."""
    kind = _arrays.kind_of(x)
    if kind == "torch":
        return x.detach().cpu().numpy()
    if kind == "cupy":
        return x.get()
    return np.asarray(x)


def _check_int_vector(x: Any, name: str, n: int) -> Any:
    x = _validate.expect_array(x, name)
    _validate.require_dtype_kind(x, name, "iu", "integer")
    _validate.require_ndim(x, name, 1, "[B]")
    _validate.require_dim(x, name, 0, n, "[B]")
    return x


def ifs_render(
    systems,  # [B, K, 2, 3] float64; row k of system b is [[a, b, e], [c, d, f]]
    n_maps=None,  # [B] int: maps used by each system (1..K); None -> K for all
    *,
    size=512,  # int or (H, W)
    seed: int = 0,
    image_ids=None,  # [B] int64 RNG item ids; None -> arange(B)
    probs=None,  # [B, K] float64 map probabilities; None -> |det A_k| / sum
    config: RenderConfig | None = None,
    output: str = "rgb",
    out=None,  # optional preallocated result, written in place and returned
    backend: str = "auto",
):
    """Render one fractal image per IFS system.

    Image b depends only on ``(seed, image_ids[b])`` and its system, never on the batch it is
    rendered in, so batches can be sharded freely.

    Args:
        systems: float ``[B, K, 2, 3]``; ``systems[b, k] = [[a, b, e], [c, d, f]]`` is the map
            ``(x, y) -> (a x + b y + e, c x + d y + f)``. NumPy, torch or CuPy.
        n_maps: int ``[B]`` maps used per system (the first ``n_maps[b]``), 1..K; None: K.
        size: output side ``int`` or ``(H, W)``.
        seed: RNG seed, ``0 <= seed < 2**64``.
        image_ids: int ``[B]`` RNG item ids; None: ``arange(B)``.
        probs: float ``[B, K]`` map probabilities (non-negative, each row summing to 1 over its
            first ``n_maps`` entries); None: ``|det A_k|`` normalised (after jitter).
        config: :class:`RenderConfig` (defaults: F4AD/OFDB-4AD settings).
        output: ``"rgb"`` -> uint8 ``[B, H, W, 3]``; ``"counts"`` -> int32 ``[B, H, W]`` raw hit
            counts after jitter and window, before flips/colour/blur.
        out: optional C-contiguous array of exactly that shape and dtype, of the caller's array
            type and on the input's device; the images are written into it and it is returned.
            Reusing one buffer across calls saves allocating (and first touching) ~0.8 MB per
            512x512 image.
        backend: ``"auto"``, ``"numpy"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        The caller's array type, on the input's device.

    Example:
        >>> import numpy as np
        >>> from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render
        >>> sierpinski = np.array([[[[.5, 0, 0], [0, .5, 0]], [[.5, 0, .5], [0, .5, 0]],
        ...                         [[.5, 0, 0], [0, .5, .5]]]])
        >>> img = ifs_render(sierpinski, size=64, config=RenderConfig(n_points=5000), backend="numpy")
        >>> img.shape, img.dtype
        ((1, 64, 64, 3), dtype('uint8'))
    """
    systems = _validate.expect_array(systems, "systems")
    _validate.require_dtype_kind(systems, "systems", "f", "floating-point")
    _validate.require_ndim(systems, "systems", 4, "[B, K, 2, 3]")
    if tuple(systems.shape[2:]) != (2, 3):
        raise ValueError(f"systems must have shape [B, K, 2, 3], got {tuple(systems.shape)}")
    n_img, n_max = int(systems.shape[0]), int(systems.shape[1])
    if not 1 <= n_max <= MAX_MAPS:
        raise ValueError(f"systems must have 1 <= K <= {MAX_MAPS} maps, got K={n_max}")
    _validate.require_finite(systems, "systems")
    height, width = _validate.require_size2(size, "size")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    seed = int(seed)
    config = _check_config(config)
    if output not in ("rgb", "counts"):
        raise ValueError(f"output must be 'rgb' or 'counts', got {output!r}")
    device = _arrays.device_of(systems)
    if out is not None:
        _check_out(out, systems, (n_img, height, width) if output == "counts" else (n_img, height, width, 3),
                   "int32" if output == "counts" else "uint8")

    if n_maps is not None:
        n_maps = _check_int_vector(n_maps, "n_maps", n_img)
        _validate.require_same_device("systems", systems, "n_maps", n_maps)
        nm = _host(n_maps)
        if n_img and (nm.min() < 1 or nm.max() > n_max):
            raise ValueError(f"n_maps must be in 1..K={n_max}, got values in [{nm.min()}, {nm.max()}]")
    if image_ids is not None:
        image_ids = _check_int_vector(image_ids, "image_ids", n_img)
        _validate.require_same_device("systems", systems, "image_ids", image_ids)
    if probs is not None:
        probs = _validate.expect_array(probs, "probs")
        _validate.require_dtype_kind(probs, "probs", "f", "floating-point")
        _validate.require_ndim(probs, "probs", 2, "[B, K]")
        if tuple(probs.shape) != (n_img, n_max):
            raise ValueError(f"probs must have shape [B, K] = {(n_img, n_max)}, got {tuple(probs.shape)}")
        _validate.require_same_device("systems", systems, "probs", probs)
        ph = _host(probs).astype(np.float64)
        if not np.isfinite(ph).all() or (ph < 0).any():
            raise ValueError("probs must be non-negative and finite, got negative or non-finite values")
        used = np.arange(n_max)[None, :] < (np.full(n_img, n_max) if n_maps is None else _host(n_maps))[:, None]
        sums = np.where(used, ph, 0.0).sum(axis=1)
        if n_img and np.abs(sums - 1.0).max() > _PROB_TOL:
            raise ValueError(
                f"probs must sum to 1 (within {_PROB_TOL}) over the first n_maps entries of each row, "
                f"got sums in [{sums.min()}, {sums.max()}]"
            )

    chosen = _dispatch.resolve(OP, backend, device, supported=("numpy", "cpu", "cuda"),
                               auto_order={"cpu": ("cpu", "numpy"), "cuda": ("cuda",)})
    if chosen == "cuda":
        _check_cuda_config(config, output)  # also for an empty batch (generate's preflight renders one)
    if n_img == 0 and out is not None:
        return out
    if n_img == 0:
        shape = (0, height, width) if output == "counts" else (0, height, width, 3)
        dtype = "int32" if output == "counts" else "uint8"
        if device == "cuda":
            return _arrays.cuda_empty(shape, dtype, systems)
        return _arrays.wrap_like(np.zeros(shape, dtype), systems)
    if chosen == "cuda":
        return _run_cuda(systems, n_maps, image_ids, probs, height, width, seed, config, output, out)

    sys_np = np.ascontiguousarray(_arrays.to_numpy(systems, "systems"), dtype=np.float64)
    nm_np = (np.full(n_img, n_max, np.int64) if n_maps is None
             else np.ascontiguousarray(_arrays.to_numpy(n_maps, "n_maps"), dtype=np.int64))
    ids_np = (np.arange(n_img, dtype=np.int64) if image_ids is None
              else np.ascontiguousarray(_arrays.to_numpy(image_ids, "image_ids"), dtype=np.int64))
    pr_np = None if probs is None else np.ascontiguousarray(_arrays.to_numpy(probs, "probs"), dtype=np.float64)
    dest = None if out is None else _arrays.to_numpy(out, "out")
    if chosen == "numpy":
        result = _reference.ifs_render(sys_np, nm_np, size=(height, width), seed=seed, image_ids=ids_np,
                                       probs=pr_np, config=config, output=output)
        if dest is not None:
            np.copyto(dest, result)
    else:
        result = _ext.load().ifs_render_cpu(sys_np, nm_np, ids_np, pr_np, out=dest, **_kernel_kwargs(
            height, width, seed, config, output))
    return out if out is not None else _arrays.wrap_like(result, systems)


def _check_out(out: Any, systems: Any, shape: tuple, dtype: str) -> None:
    """``out`` must be a writable C-contiguous array of ``shape``/``dtype`` like ``systems``."""
    kind = _arrays.kind_of(out)
    if kind != _arrays.kind_of(systems):
        raise TypeError(f"out must be the same array type as systems ({_arrays.kind_of(systems)}), got {kind}")
    _validate.require_same_device("systems", systems, "out", out)
    if tuple(out.shape) != shape or _validate.dtype_name(out) != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, got {tuple(out.shape)} {out.dtype}")
    if kind == "torch":
        contiguous, writable = out.is_contiguous(), not out.requires_grad
    elif kind == "cupy":
        contiguous, writable = bool(out.flags.c_contiguous), True
    else:
        contiguous, writable = bool(out.flags.c_contiguous), bool(out.flags.writeable)
    if not contiguous or not writable:
        raise ValueError("out must be C-contiguous and writable (not a strided view, not read-only, no grad)")


def _kernel_kwargs(height: int, width: int, seed: int, config: RenderConfig, output: str) -> dict:
    scale = config.scale if config.scale is not None else (1.0, 1.0)
    return dict(
        height=height, width=width, seed=seed, n_points=int(config.n_points),
        jitter=bool(config.jitter), jitter_lo=float(config.jitter_range[0]),
        jitter_hi=float(config.jitter_range[1]), jitter_tries=int(config.jitter_tries),
        translate=float(config.translate), scale=config.scale is not None,
        scale_lo=float(scale[0]), scale_hi=float(scale[1]), flips=bool(config.flips),
        color=bool(config.color), patch=bool(config.patch), background=bool(config.background),
        blur=bool(config.blur),
        blur_lo=float(config.blur_sigma[0]), blur_hi=float(config.blur_sigma[1]),
        counts_only=output == "counts",
    )


def _cuda_range(like: Any, n: int, fill: int | None):
    """int64 ``[n]`` on ``like``'s device: ``arange(n)`` or ``full(n, fill)``."""
    if _arrays.kind_of(like) == "torch":
        import torch

        if fill is None:
            return torch.arange(n, dtype=torch.int64, device=like.device)
        return torch.full((n,), fill, dtype=torch.int64, device=like.device)
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.arange(n, dtype=cupy.int64) if fill is None else cupy.full(n, fill, dtype=cupy.int64)


def _check_cuda_config(config: RenderConfig, output: str) -> None:
    if config.background and output == "rgb":
        raise RuntimeError(
            "ifs_render: config.background=True is not implemented on the cuda backend yet; "
            "render on the CPU (backend='cpu') or set background=False"
        )


def _run_cuda(systems, n_maps, image_ids, probs, height, width, seed, config, output, out=None):
    n_img, n_max = int(systems.shape[0]), int(systems.shape[1])
    sys_d = _arrays.cuda_contiguous(systems, "float64")
    nm_d = _cuda_range(systems, n_img, n_max) if n_maps is None else _arrays.cuda_contiguous(n_maps, "int64")
    ids_d = _cuda_range(systems, n_img, None) if image_ids is None else _arrays.cuda_contiguous(image_ids, "int64")
    pr_d = None if probs is None else _arrays.cuda_contiguous(probs, "float64")
    if output == "counts":
        counts = out if out is not None else _arrays.cuda_empty((n_img, height, width), "int32", systems)
        rgb = None
    else:
        counts = _arrays.cuda_empty((n_img, height, width), "int32", systems)
        rgb = out if out is not None else _arrays.cuda_empty((n_img, height, width, 3), "uint8", systems)
    _ext.load().ifs_render_cuda(
        _arrays.cuda_pointer(sys_d), _arrays.cuda_pointer(nm_d), _arrays.cuda_pointer(ids_d),
        0 if pr_d is None else _arrays.cuda_pointer(pr_d), _arrays.cuda_pointer(counts),
        0 if rgb is None else _arrays.cuda_pointer(rgb), n_images=n_img, n_max_maps=n_max,
        device=_arrays.cuda_device_index(systems), stream=_arrays.cuda_stream(systems),
        **_kernel_kwargs(height, width, seed, config, output),
    )
    return counts if output == "counts" else rgb
