"""``kcenter_greedy``: PatchCore's greedy coreset (k-center) selection, one function, four backends.

Semantics, RNG, distance form and tie-breaking: see ``ofdb_fast.reference.kcenter_greedy`` (the
spec and the ``numpy`` backend, float64). The other backends work in float32:

- ``torch``: the reference project's approach, a Python loop of small torch ops per selected point
  (one ``argmax(...).item()`` host sync per iteration); runs on CPU and CUDA tensors. The benchmark
  baseline. On CUDA the projection is a torch matmul (TF32 if the caller enabled it). The BLAS
  may sum a row of the projection in an order that depends on the row's position, so exactly
  equal rows can become near-ties (last-bit differences) and the lowest-index rule then does
  not apply to them; the other backends project every row the same way.
- ``cpu``: C++/OpenMP, one fused pass per iteration (``csrc/patchcore/kcenter_greedy_cpu.cpp``)
  behind an exact int8 prefilter: an 8-bit copy of the rows (one quarter of the bytes, resident in
  the cores' L2 at 20,000 x 128) and each row's measured quantisation error bound every distance
  from below, and only rows that bound cannot rule out (~0.3-1% per iteration on random data)
  get the float32 distance. The selected indices and radii are bit-identical to scanning every
  row in float32 (tested); only the memory traffic changes.
- ``cuda``: fused kernels, two launches per iteration and no host sync inside the loop
  (``csrc/patchcore/kcenter_greedy_cuda.cu``). ``proj_dtype="float16"`` (cuda only) stores the
  projected rows as float16 (float32 arithmetic): half the memory and the bytes read per
  iteration, for 1M+ patches. Near-tied choices may then differ from float32; the cuda tests
  require equal indices on well-separated data and the covering-radius trajectory within 1e-2
  relative on random data (written without a GPU: not yet run). The NumPy reference has no
  such mode.

  float16 does NOT keep the indices of PatchCore features stable; it keeps the coreset's
  quality. Measured by emulation on the CPU (projected rows rounded to float16, then the
  reference loop; 18,816 patches of 24 synthetic 224 px images per category, random-init
  WRN50 layer2+3 + AdaBN, 1024 -> 128, 10 %): the float16 order leaves float32's after 12-98
  of 1,881 picks, 56-93 % of the indices are shared, the covering radius in the unrounded space
  grows by 0.02-0.4 % (max) and image AUROC with the two banks is equal on weave, grain and
  washer (plate 0.566 vs 0.580, a near-chance category). For scale, float32 vs the float64
  reference: identical indices; float32 with another projection seed: 17-44 % shared (AUROC
  equal on three, washer 0.625 vs 0.622). So float16 moves the bank less than a change of seed
  does; it stays opt-in (default float32) for when the halved memory traffic matters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays, _dispatch, _ext, _validate
from ..reference import kcenter_greedy as ref

OP = "kcenter_greedy"
SUPPORTED = ("numpy", "torch", "cpu", "cuda")
AUTO_ORDER = {"cpu": ("cpu", "numpy"), "cuda": ("cuda", "torch")}
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)


def kcenter_greedy(
    features: Any,  # [N, D] float32/float64, NumPy array, torch tensor (CPU/CUDA) or CuPy array
    *,
    percentage: float = 0.1,
    n_select: int | None = None,
    method: str = "approx",
    proj_dim: int | None = 128,
    n_starts: int = 10,
    seed: int = 0,
    return_radius: bool = False,
    proj_dtype: str = "float32",
    backend: str = "auto",
):
    """Select a greedy k-center coreset of ``features`` (PatchCore's memory-bank subsampling).

    Args:
        features: ``[N, D]`` float32/float64 rows (NumPy, torch on CPU/CUDA, or CuPy).
        percentage: fraction to keep when ``n_select`` is None: ``int(N * percentage)``; in (0, 1].
        n_select: number of rows to select, ``0 <= n_select <= N`` (overrides ``percentage``).
        method: ``"approx"`` (ApproximateGreedyCoresetSampler) or ``"exact"`` (GreedyCoresetSampler).
        proj_dim: random projection width (skipped when ``D == proj_dim``); None/0 disables it.
        n_starts: number of random starting points of ``"approx"`` (``min(n_starts, N)`` used).
        seed: seed of the projection matrix and of the starting points.
        return_radius: also return ``radius`` ``[n_select]`` float64, the covering radius of the
            first ``t + 1`` selected points.
        proj_dtype: ``"float32"`` or ``"float16"`` (``cuda`` backend only, with a projection):
            storage of the projected rows.
        backend: ``"auto"``, ``"numpy"``, ``"torch"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``indices`` int64 ``[n_select]`` (the caller's array type and device), or
        ``(indices, radius)`` when ``return_radius``.

    Example:
        >>> import numpy as np
        >>> from ofdb_fast.ops.kcenter_greedy import kcenter_greedy
        >>> x = np.random.default_rng(0).standard_normal((1000, 256)).astype(np.float32)
        >>> idx = kcenter_greedy(x, percentage=0.1)
        >>> idx.shape, idx.dtype
        ((100,), dtype('int64'))
    """
    features = _validate.expect_array(features, "features")
    _validate.require_ndim(features, "features", 2, "[N, D]")
    _validate.require_dtype_kind(features, "features", "f", "floating-point (float32 or float64)")
    if _validate.dtype_name(features) not in ("float32", "float64"):
        raise TypeError(f"features must have a float32 or float64 dtype, got {_validate.dtype_name(features)}")
    n, dim = (int(s) for s in features.shape)
    if dim < 1:
        raise ValueError(f"features must have shape [N, D] with D >= 1, got {tuple(features.shape)}")
    percentage = _validate.require_float(percentage, "percentage")
    if not 0.0 < percentage <= 1.0:
        raise ValueError(f"percentage must be in (0, 1], got {percentage}")
    if n_select is not None:
        n_select = _validate.require_int(n_select, "n_select", minimum=0)
        if n_select > n:
            raise ValueError(f"n_select must be <= N = {n}, got {n_select}")
    if n == 0 and n_select != 0:
        raise ValueError(f"features must have at least one row unless n_select=0, got {tuple(features.shape)}")
    if n >= 2**31:
        raise ValueError(f"features must have fewer than 2**31 rows, got {n}")
    if method not in ref.METHODS:
        raise ValueError(f"method must be one of {ref.METHODS}, got {method!r}")
    if proj_dim is not None:
        proj_dim = _validate.require_int(proj_dim, "proj_dim", minimum=0)
    n_starts = _validate.require_int(n_starts, "n_starts", minimum=1)
    seed = _validate.require_int(seed, "seed", minimum=0, maximum=2**64 - 1)
    if not isinstance(return_radius, (bool, np.bool_)):
        raise TypeError(f"return_radius must be a bool, got {type(return_radius).__name__}")
    if proj_dtype not in ("float32", "float16"):
        raise ValueError(f"proj_dtype must be 'float32' or 'float16', got {proj_dtype!r}")
    device = _arrays.device_of(features)
    chosen = _dispatch.resolve(OP, backend, device, supported=SUPPORTED, auto_order=AUTO_ORDER)
    if proj_dtype == "float16" and chosen != "cuda":
        raise ValueError(f"proj_dtype 'float16' must use backend 'cuda' (the only one that stores the "
                         f"projection in float16), got backend {chosen!r}")
    if n > 0:
        _validate.require_finite(features, "features")
        if chosen != "numpy" and _validate.dtype_name(features) == "float64":
            # The other backends round to float32: values beyond its range would become inf.
            largest = float(abs(features).max())
            if largest > FLOAT32_MAX:
                raise ValueError(f"features must fit in float32 for backend {chosen!r}, got |value| up to {largest:g}")
        if proj_dtype == "float16" and proj_dim and proj_dim != dim:
            # |W| <= 1/sqrt(D), so |z| <= max|x| * sqrt(D): keep every projected value finite in float16.
            bound = _max_abs(features) * float(np.sqrt(dim))
            if bound >= FLOAT16_MAX:
                raise ValueError(f"features must satisfy max|x| * sqrt(D) < {FLOAT16_MAX:g} for proj_dtype "
                                 f"'float16' (projected rows must fit in float16), got {bound:g}")
    k = ref.resolve_n_select(n, percentage, n_select)
    args = dict(n_select=k, method=method, proj_dim=proj_dim or 0, n_starts=n_starts, seed=seed)
    if chosen == "cuda":
        indices, radius = _run_cuda(features, return_radius=bool(return_radius), half=proj_dtype == "float16",
                                    **args)
    elif chosen == "torch":
        indices, radius = _run_torch(features, return_radius=bool(return_radius), **args)
    else:
        x = _arrays.to_numpy(features, "features")
        run = _run_numpy if chosen == "numpy" else _run_cpu
        indices, radius = run(x, return_radius=bool(return_radius), **args)
        indices, radius = _arrays.wrap_like(indices, features), _arrays.wrap_like(radius, features)
    return (indices, radius) if return_radius else indices


def _max_abs(x: Any) -> float:
    """max |x| of a CUDA array; torch reduces without a temporary (inputs can be GBs)."""
    if _arrays.kind_of(x) == "torch":
        import torch

        return float(torch.linalg.vector_norm(x, float("inf")))
    return float(abs(x).max())


def _run_numpy(x: np.ndarray, *, n_select, method, proj_dim, n_starts, seed, return_radius):
    out = ref.kcenter_greedy(
        x, n_select=n_select, method=method, proj_dim=proj_dim, n_starts=n_starts, seed=seed,
        return_radius=return_radius,
    )
    return out if return_radius else (out, np.zeros(0, np.float64))


def _run_cpu(x: np.ndarray, *, n_select, method, proj_dim, n_starts, seed, return_radius):
    if n_select == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    code = _ext.load().KCENTER_APPROX if method == "approx" else _ext.load().KCENTER_EXACT
    indices, radius = _ext.load().kcenter_greedy_cpu(
        np.ascontiguousarray(x, dtype=np.float32), proj_dim, code, n_starts, n_select, seed, return_radius
    )
    return indices, radius


def _run_cuda(x: Any, *, n_select, method, proj_dim, n_starts, seed, return_radius, half=False):
    rows = _arrays.cuda_contiguous(x, "float32")
    indices = _arrays.cuda_empty((n_select,), "int64", rows)
    radius = _arrays.cuda_empty((n_select if return_radius else 0,), "float64", rows)
    if n_select > 0:
        C = _ext.load()
        code = C.KCENTER_APPROX if method == "approx" else C.KCENTER_EXACT
        C.kcenter_greedy_cuda(
            _arrays.cuda_pointer(rows), rows.shape[0], rows.shape[1], proj_dim, code, n_starts, n_select, seed,
            _arrays.cuda_pointer(indices), _arrays.cuda_pointer(radius) if return_radius else 0,
            _arrays.cuda_device_index(rows), _arrays.cuda_stream(rows), half,
        )
    return indices, radius


def _run_torch(x: Any, *, n_select, method, proj_dim, n_starts, seed, return_radius):
    """The reference project's loop in torch (float32), with this package's W, starts and distance."""
    import torch

    kind = _arrays.kind_of(x)
    if kind == "numpy":
        rows = torch.from_numpy(x)
    elif kind == "cupy":
        rows = torch.from_dlpack(x)  # zero-copy view on the same device
    else:
        rows = x.detach()
    dev = rows.device
    n, dim = rows.shape
    z = rows.to(torch.float32)
    if proj_dim and proj_dim != dim:
        z = z @ torch.from_numpy(ref.projection_matrix(dim, proj_dim, seed)).to(dev)
    indices = torch.zeros(n_select, dtype=torch.int64)
    radius = torch.zeros(n_select if return_radius else 0, dtype=torch.float64)
    if n_select > 0:
        if method == "approx":
            starts = ref.starting_points(n, n_starts, seed)
            score = torch.stack([torch.linalg.vector_norm(z - z[int(s)], dim=1) for s in starts]).mean(0)
        else:
            score = torch.empty(n, dtype=torch.float32, device=dev)
            rows_per_block = max(1, (1 << 22) // max(1, n * z.shape[1]))
            for a in range(0, n, rows_per_block):
                block = torch.linalg.vector_norm(z[a : a + rows_per_block, None, :] - z[None], dim=-1)
                score[a : a + rows_per_block] = torch.linalg.vector_norm(block, dim=1)
        cover = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)
        for t in range(n_select):
            i = int(torch.argmax(score).item())
            indices[t] = i
            d = torch.linalg.vector_norm(z - z[i], dim=1)
            score = torch.minimum(score, d)
            if return_radius:
                cover = torch.minimum(cover, d)
                radius[t] = cover.max().item()
    if kind == "numpy":
        return indices.numpy(), radius.numpy()
    indices, radius = indices.to(dev), radius.to(dev)
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(indices), cupy.from_dlpack(radius)
    return indices, radius
