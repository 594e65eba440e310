"""``cluster_alpha``: the patch weights of Anomaly Clustering, and the weighted image embeddings.

The math, modes, softmax and tau = 0 rule are those of :mod:`ofdb_fast.reference.cluster_alpha`
(the spec). Shapes: ``embeddings`` ``[N, P, D]``, ``normal_embeddings`` ``[M, P', D]``,
distances and ``alpha`` ``[N, P]`` float64 (``[T, N, P]`` for a list of ``T`` taus), image
embeddings ``[N, D]`` in the embeddings' dtype. Results come back as the caller's array type
on the caller's device (NumPy in, NumPy out; torch in, torch out).

Backends (the patch-to-patch nearest distances, the only heavy part):
- ``numpy``: the reference (float64, one pair of images at a time).
- ``cpu``, ``faiss``, ``torch``: the :func:`ofdb_fast.ops.knn_score.knn_score` backend of
  that name, k = 1. ``torch`` runs on CUDA tensors (the GPU path) as well as on the CPU.

  * unsupervised: one ``knn_score`` call per image ``j`` with *all* ``N * P`` patches as
    queries and image ``j``'s ``P`` patches as the bank gives ``min_q ||z_ip - z_jq||^2`` for
    every ``(i, p)`` at once: ``N`` calls of an ``(N P) x P x D`` GEMM (about
    ``2 N^2 P^2 D`` flop in all), never materialising more than ``knn_score``'s tile. The
    sqrt is taken after the min; row block ``i == j`` is dropped, the rest summed in float64
    and divided by ``N - 1``.
  * supervised: a single ``knn_score`` call against the bank of all normal patches.
  * The squared distances come from ``knn_score``'s expansion ``|q|^2 - 2 q.b + |b|^2``,
    computed in float32 for float32 input (``faiss``: always) and returned as float32 in every
    case (float64 input on ``cpu``/``torch``: a relative error of about 1e-8). For float32,
    the absolute error of a squared distance is a few float32 ulps of ``|q|^2 + |b|^2``; alpha is a smooth function of ``d / tau``, so this shows up only
    as a relative error of about ``1e-6 * |z|^2 / (d tau)`` in alpha (and may move an exact tie
    of the ``tau == 0`` arg-max).
  * ``knn_score`` validates its queries on every call (one finiteness scan of the ``N P D``
    embeddings per image ``j``): about 10 % extra on the CPU at MVTec scale, negligible on the
    GPU.

The softmax and the weighted sums are cheap (``N P`` and ``N P D``) and run in the array
library of the input: NumPy on the CPU, torch on the tensor's device.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _arrays, _dispatch, _validate
from ..reference import cluster_alpha as _ref

OP = "cluster_alpha"
MODES = _ref.MODES
SUPPORTED = ("numpy", "cpu", "torch", "faiss")
_FLOAT_DTYPES = ("float32", "float64")


def _auto_order(dtype: str) -> dict[str, tuple[str, ...]]:
    # Mirrors knn_score's preference: the cpu kernel first (as fast as faiss at 16 x 196 x 256,
    # 1.6x faster at 6,272 x 1,254 x 1,024 queries x bank x dims on the CI machine, exact ties),
    # faiss next for float32 only.
    cpu = ("cpu", "faiss", "torch", "numpy") if dtype == "float32" else ("cpu", "torch", "numpy")
    return {"cpu": cpu, "cuda": ("torch",)}


# ------------------------------------------------------------------------- validation
def _check_embeddings(x: Any, name: str, layout: str) -> Any:
    x = _validate.expect_array(x, name)
    _validate.require_ndim(x, name, 3, layout)
    if _validate.dtype_name(x) not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have a float32 or float64 dtype, got {_validate.dtype_name(x)}")
    if min(x.shape) < 1:
        raise ValueError(f"{name} must have shape {layout} with every dim >= 1, got {tuple(x.shape)}")
    _validate.require_finite(x, name)
    return x


def _check_inputs(embeddings: Any, mode: Any, normal_embeddings: Any) -> tuple[Any, Any]:
    embeddings = _check_embeddings(embeddings, "embeddings", "[N, P, D]")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "unsupervised" and embeddings.shape[0] < 2:
        raise ValueError(f"embeddings must hold N >= 2 images for mode 'unsupervised' (distances to the "
                         f"other images), got {tuple(embeddings.shape)}")
    if mode != "supervised":
        if normal_embeddings is not None:
            raise ValueError(f"normal_embeddings must be None for mode {mode!r} (only 'supervised' uses "
                             f"them), got an array")
        return embeddings, None
    if normal_embeddings is None:
        raise ValueError("normal_embeddings must be given for mode 'supervised', got None")
    normal_embeddings = _check_embeddings(normal_embeddings, "normal_embeddings", "[M, P', D]")
    if _arrays.kind_of(normal_embeddings) != _arrays.kind_of(embeddings):
        raise TypeError(f"normal_embeddings must be the same array type as embeddings "
                        f"({_arrays.kind_of(embeddings)}), got {_arrays.kind_of(normal_embeddings)}")
    _validate.require_same_device("embeddings", embeddings, "normal_embeddings", normal_embeddings)
    if normal_embeddings.shape[2] != embeddings.shape[2]:
        raise ValueError(f"normal_embeddings must have shape [M, P', D] with D == {embeddings.shape[2]} "
                         f"(the embeddings' D), got {tuple(normal_embeddings.shape)}")
    return embeddings, normal_embeddings


def _check_taus(tau: Any) -> tuple[list[float], bool]:
    """``(taus, is_list)``; every tau a finite number >= 0."""
    is_list = isinstance(tau, (list, tuple)) or (hasattr(tau, "shape") and len(getattr(tau, "shape")) == 1)
    values = list(tau) if is_list else [tau]
    if is_list and not values:
        raise ValueError("tau must be a number >= 0 or a non-empty list of them, got an empty list")
    out = []
    for i, t in enumerate(values):
        if isinstance(t, np.generic):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TypeError(f"tau must be a number >= 0 or a list of them, got {type(t).__name__}")
        out.append(_validate.require_float(t, f"tau[{i}]" if is_list else "tau", lo=0.0))
    return out, is_list


def _resolve(embeddings: Any, normal_embeddings: Any, backend: str) -> str:
    dtypes = {_validate.dtype_name(embeddings)}
    if normal_embeddings is not None:
        dtypes.add(_validate.dtype_name(normal_embeddings))
    dtype = "float64" if "float64" in dtypes else "float32"
    return _dispatch.resolve(OP, backend, _arrays.device_of(embeddings), supported=SUPPORTED,
                             auto_order=_auto_order(dtype))


# ---------------------------------------------------------------------- distances
def _contiguous(x: Any) -> Any:
    return x.contiguous() if _arrays.kind_of(x) == "torch" else np.ascontiguousarray(x)


def _sqrt64(squared: Any) -> Any:
    if _arrays.kind_of(squared) == "torch":
        return squared.double().sqrt()
    return np.sqrt(squared.astype(np.float64))


def _zeros64(shape: tuple[int, int], like: Any) -> Any:
    if _arrays.kind_of(like) == "torch":
        import torch

        return torch.zeros(shape, dtype=torch.float64, device=like.device)
    return np.zeros(shape, np.float64)


def _knn_distances(z: Any, mode: str, normals: Any, backend: str) -> Any:
    from ..ops.knn_score import knn_score

    n_images, n_patches, dim = z.shape
    flat = _contiguous(z).reshape(n_images * n_patches, dim)
    if mode == "average":
        return _zeros64((n_images, n_patches), z)
    if mode == "supervised":
        bank = _contiguous(normals).reshape(-1, dim)
        return _sqrt64(knn_score(flat, bank, 1, backend=backend).reshape(n_images, n_patches))
    total = _zeros64((n_images, n_patches), z)
    for j in range(n_images):
        nearest = _sqrt64(knn_score(flat, flat[j * n_patches:(j + 1) * n_patches], 1, backend=backend))
        nearest = nearest.reshape(n_images, n_patches)
        nearest[j] = 0.0  # the image itself is not one of the "other" images
        total += nearest
    return total / (n_images - 1)


def patch_distances(
    embeddings: Any,  # [N, P, D] float32/float64
    mode: str = "unsupervised",
    *,
    normal_embeddings: Any = None,  # [M, P', D], mode "supervised" only
    backend: str = "auto",
):
    """The tau-independent patch distances ``d`` of one mode (see the reference module).

    Args:
        embeddings: ``[N, P, D]`` float32/float64 patch embeddings (NumPy or torch, CPU or CUDA).
        mode: ``"unsupervised"`` (mean over other images of the nearest-patch distance; N >= 2),
            ``"supervised"`` (nearest patch of any normal image) or ``"average"`` (zeros).
        normal_embeddings: ``[M, P', D]`` normal images' patches, same type and device
            (supervised only).
        backend: ``"auto"``, ``"numpy"``, ``"cpu"``, ``"torch"`` or ``"faiss"``.

    Returns:
        ``[N, P]`` float64 un-squared Euclidean distances, the caller's array type and device.

    Example:
        >>> z = np.zeros((2, 2, 1)); z[1, 1, 0] = 3.0
        >>> patch_distances(z, "unsupervised", backend="numpy").tolist()
        [[0.0, 0.0], [0.0, 3.0]]
    """
    embeddings, normal_embeddings = _check_inputs(embeddings, mode, normal_embeddings)
    name = _resolve(embeddings, normal_embeddings, backend)
    if name == "numpy":
        z = _arrays.to_numpy(embeddings, "embeddings")
        normals = None if normal_embeddings is None else _arrays.to_numpy(normal_embeddings, "normal_embeddings")
        return _arrays.wrap_like(_ref.patch_distances(z, mode, normal_embeddings=normals), embeddings)
    return _knn_distances(embeddings, mode, normal_embeddings, name)


# --------------------------------------------------------------------------- softmax
def alpha_from_distances(distances: Any, tau: float) -> Any:  # [N, P] -> [N, P] float64
    """Tempered softmax over each image's patches; ``tau == 0``: the arg-max set, ties split.

    Runs in the array library of ``distances`` (NumPy, or torch on its device), in float64.
    """
    distances = _validate.expect_array(distances, "distances")
    _validate.require_ndim(distances, "distances", 2, "[N, P]")
    _validate.require_dtype_kind(distances, "distances", "f", "floating-point")
    (tau,), _ = _check_taus(tau)
    if _arrays.kind_of(distances) != "torch":
        return _ref.alpha_from_distances(_arrays.to_numpy(distances, "distances"), tau)
    d = distances.double()
    top = d.max(dim=1, keepdim=True).values
    if tau == 0:
        hits = (d == top).double()
        return hits / hits.sum(dim=1, keepdim=True)
    e = ((d - top) / tau).exp()
    return e / e.sum(dim=1, keepdim=True)


def cluster_alpha(
    embeddings: Any,  # [N, P, D] float32/float64
    mode: str = "unsupervised",
    tau: float | Sequence[float] = 2.0,
    *,
    normal_embeddings: Any = None,  # [M, P', D]
    backend: str = "auto",
):
    """Patch weights ``alpha`` of Anomaly Clustering (Sohn et al. 2023, the reproduction's code).

    Args:
        embeddings: ``[N, P, D]`` float32/float64 patch embeddings of the images to cluster.
        mode: ``"unsupervised"``, ``"supervised"`` (needs ``normal_embeddings``) or ``"average"``.
        tau: softmax temperature >= 0 (the reproduction's results use 2.0), or a list of them:
            the distances are computed once and reused.
        normal_embeddings: ``[M, P', D]`` patches of normal images (supervised mode).
        backend: distance backend, ``"auto"``, ``"numpy"``, ``"cpu"``, ``"torch"``, ``"faiss"``.

    Returns:
        ``[N, P]`` float64 (rows sum to 1), or ``[T, N, P]`` for a list of ``T`` taus; the
        caller's array type and device.

    Example:
        >>> z = np.zeros((2, 2, 1)); z[1, 1, 0] = 3.0
        >>> cluster_alpha(z, "unsupervised", tau=0, backend="numpy").tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """
    taus, is_list = _check_taus(tau)
    d = patch_distances(embeddings, mode, normal_embeddings=normal_embeddings, backend=backend)
    alphas = [alpha_from_distances(d, t) for t in taus]
    if not is_list:
        return alphas[0]
    if _arrays.kind_of(d) == "torch":
        import torch

        return torch.stack(alphas)
    return np.stack(alphas)


def weighted_embeddings(
    embeddings: Any,  # [N, P, D] float32/float64
    alpha: Any,  # [N, P] float
):
    """Image embeddings ``x_i = sum_p alpha_ip z_ip``: ``[N, D]`` in the embeddings' dtype
    (one batched matrix product, alpha rounded to that dtype)."""
    embeddings = _check_embeddings(embeddings, "embeddings", "[N, P, D]")
    alpha = _validate.expect_array(alpha, "alpha")
    _validate.require_ndim(alpha, "alpha", 2, "[N, P]")
    _validate.require_dtype_kind(alpha, "alpha", "f", "floating-point")
    if tuple(alpha.shape) != tuple(embeddings.shape[:2]):
        raise ValueError(f"alpha must have shape [N, P] == {tuple(embeddings.shape[:2])} (the embeddings' "
                         f"N, P), got {tuple(alpha.shape)}")
    if _arrays.kind_of(alpha) != _arrays.kind_of(embeddings):
        raise TypeError(f"alpha must be the same array type as embeddings ({_arrays.kind_of(embeddings)}), "
                        f"got {_arrays.kind_of(alpha)}")
    _validate.require_same_device("embeddings", embeddings, "alpha", alpha)
    if _arrays.kind_of(embeddings) == "torch":
        import torch

        return torch.bmm(alpha.to(embeddings.dtype).unsqueeze(1), embeddings).squeeze(1)
    z = np.asarray(embeddings)
    return np.matmul(np.asarray(alpha, z.dtype)[:, None, :], z)[:, 0, :]


def image_embeddings(
    embeddings: Any,  # [N, P, D]
    mode: str = "unsupervised",
    tau: float | Sequence[float] = 2.0,
    *,
    normal_embeddings: Any = None,  # [M, P', D]
    backend: str = "auto",
):
    """Weighted image embeddings for one tau (``[N, D]``) or a list of taus (``[T, N, D]``),
    computing the patch distances once. Same arguments as :func:`cluster_alpha`."""
    alpha = cluster_alpha(embeddings, mode, tau, normal_embeddings=normal_embeddings, backend=backend)
    if len(alpha.shape) == 2:
        return weighted_embeddings(embeddings, alpha)
    parts = [weighted_embeddings(embeddings, a) for a in alpha]
    if _arrays.kind_of(alpha) == "torch":
        import torch

        return torch.stack(parts)
    return np.stack(parts)


def select_normal_images(n_normal: int, n_test: int, train_ratio: float = 1.0, seed: int = 0) -> np.ndarray:
    """Which normal images form the supervised bank: ``min(int(train_ratio * n_test), n_normal)``
    of them (the reproduction's count, relative to the *test* count), drawn with ``seed``.

    Returns:
        ``[M]`` int64 ascending indices into the normal images, ``M >= 1``.

    Example:
        >>> len(select_normal_images(20, 10, train_ratio=0.5, seed=0))
        5
    """
    n_normal = _validate.require_int(n_normal, "n_normal", minimum=1)
    n_test = _validate.require_int(n_test, "n_test", minimum=1)
    train_ratio = _validate.require_float(train_ratio, "train_ratio", lo=0.0)
    seed = _validate.require_int(seed, "seed", minimum=0)
    if int(train_ratio * n_test) < 1:
        raise ValueError(f"train_ratio must select at least one normal image (int(train_ratio * {n_test} test "
                         f"images) >= 1), got {train_ratio}")
    return _ref.select_normal_images(n_normal, n_test, train_ratio, seed)
