"""``knn_score``: exact k nearest neighbours of query rows in a memory bank (squared L2).

Conventions (all backends):
- ``queries`` ``[Q, D]`` and ``bank`` ``[M, D]``, float32 or float64, on the same device;
  ``1 <= k <= M``. Distances are **squared** L2, like faiss ``IndexFlatL2``; PatchCore's patch
  score is their mean over ``k`` (the caller's reduction).
- Output: ``distances`` ``[Q, k]`` float32 ascending per row (and ``indices`` ``[Q, k]`` int64),
  as the caller's array type on the caller's device. ``Q == 0`` gives ``[0, k]``.
- Ties: equal distances are ordered by bank index, lowest first.

Backends:
- ``numpy``: the reference (direct differences in float64, then rounded to float32).
- ``cpu``: C++/OpenMP, blocked ``|q|^2 - 2 q.b + |b|^2`` clamped at 0; dot products in the
  input dtype (float32 for float32 input), norms and the expansion in float64. Distances of
  duplicated bank rows are bit-identical, so ties are exact. Working memory does not grow with
  ``Q`` or ``M`` (``chunk_size`` is not used). The GIL is released.
- ``torch``: the same expansion with ``addmm`` in the input dtype, chunks of ``chunk_size``
  queries (auto: about 2^24 distances per chunk on the CPU, 2^26 on CUDA), ``topk`` and a
  tie fix-up so ties follow the lowest-index rule. Runs on CPU and CUDA tensors (the GPU path).
  The BLAS picks its GEMM kernel by shape, so another ``chunk_size`` may change distances in
  their last float32 bits (within the expansion's error below).
- ``triton``: the fused GEMM + running-min kernel of :mod:`ofdb_fast.triton.knn_min` (never
  materialises ``Q x M``), float32 with IEEE dot products (float64 input is rounded to
  float32, like faiss). CUDA tensors, or CPU tensors/arrays under ``TRITON_INTERPRET=1``;
  ``k <= 32``. Not in the ``auto`` order until GPU benchmarks say where it wins. Its float16 /
  bfloat16 bank mode is used directly by ``patchcore.fast_scorer``.
- ``faiss``: ``IndexFlatL2`` on the CPU (float64 input is computed in float32); rows are
  re-sorted by (distance, index). faiss breaks ties at the k-th place by id itself.

Accuracy of the float32 expansion (cpu, torch, faiss) versus the float64 reference: absolute
error up to a few float32 ulps of ``|q|^2 + |b|^2``, so near neighbours far from the origin
lose relative accuracy (the same as faiss).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays, _dispatch, _ext, _validate

OP = "knn_score"
SUPPORTED = ("numpy", "cpu", "torch", "faiss", "triton")
_FLOAT_DTYPES = ("float32", "float64")

# Distances materialised per chunk by the torch backend when chunk_size is None.
_TORCH_CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 26}


def _auto_order(dtype: str) -> dict[str, tuple[str, ...]]:
    # The cpu kernel first: since its bank is packed once per call (and rows that cannot enter
    # the top-k are skipped) it measured 1.4-2.2x faster than faiss's IndexFlatL2 (OpenBLAS
    # sgemm) at every PatchCore shape tried (784-6,272 queries x 1,254-20,000 bank rows x
    # 128/1,024 dims, 2 threads, AMD EPYC; 6,272 x 16,000 x 1,024: 574 vs 918 ms in
    # bench/results/ci-cpu-2core-amd-2026-12-06-7a009b3.md), and its ties are exact. faiss
    # stays next (float32 only) for builds without _C.
    cpu = ("cpu", "faiss", "numpy") if dtype == "float32" else ("cpu", "numpy")
    return {"cpu": cpu, "cuda": ("torch",)}


def _validate_inputs(queries: Any, bank: Any, k: Any, chunk_size: Any) -> tuple[Any, Any, int]:
    queries = _validate.expect_array(queries, "queries")
    bank = _validate.expect_array(bank, "bank")
    for name, x in (("queries", queries), ("bank", bank)):
        _validate.require_ndim(x, name, 2, "[Q, D]" if name == "queries" else "[M, D]")
        if _validate.dtype_name(x) not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must have a float32 or float64 dtype, got {_validate.dtype_name(x)}")
    if _arrays.kind_of(queries) != _arrays.kind_of(bank):
        raise TypeError(
            f"bank must be the same array type as queries ({_arrays.kind_of(queries)}), "
            f"got {_arrays.kind_of(bank)}"
        )
    _validate.require_same_device("queries", queries, "bank", bank)
    if queries.shape[1] < 1:
        raise ValueError(f"queries must have shape [Q, D] with D >= 1, got {tuple(queries.shape)}")
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"bank must have shape [M, D] with D == {queries.shape[1]} (the queries' D), "
            f"got {tuple(bank.shape)}"
        )
    if bank.shape[0] < 1:
        raise ValueError(f"bank must have shape [M, D] with M >= 1, got {tuple(bank.shape)}")
    k = _validate.require_int(k, "k", minimum=1, maximum=int(bank.shape[0]))
    if chunk_size is not None:
        _validate.require_int(chunk_size, "chunk_size", minimum=1)
    _validate.require_finite(queries, "queries")
    _validate.require_finite(bank, "bank")
    return queries, bank, k


def knn_score(
    queries: Any,  # [Q, D] float32/float64
    bank: Any,  # [M, D] float, same device as queries
    k: int = 1,
    *,
    return_indices: bool = False,
    chunk_size: int | None = None,
    backend: str = "auto",
):
    """Squared L2 distances from every query to its ``k`` nearest bank rows.

    Args:
        queries: ``[Q, D]`` float32/float64 NumPy array, torch tensor (CPU or CUDA) or CuPy
            array (``torch`` backend).
        bank: ``[M, D]`` float array of the same type and on the same device, ``M >= k``.
        k: neighbours per query, ``1 <= k <= M``.
        return_indices: also return the bank indices.
        chunk_size: queries per chunk for the ``numpy`` and ``torch`` backends (bounded
            memory); ``None`` picks one.
        backend: ``"auto"``, ``"numpy"``, ``"cpu"``, ``"torch"``, ``"faiss"`` or ``"triton"``.

    Returns:
        ``distances`` ``[Q, k]`` float32 ascending per row, or ``(distances, indices)`` with
        ``indices`` ``[Q, k]`` int64 (ties: lowest bank index first), same array type and
        device as ``queries``.

    Example:
        >>> import numpy as np
        >>> bank = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
        >>> d, i = knn_score(np.array([[3.0, 3.0]], np.float32), bank, 2, return_indices=True,
        ...                  backend="numpy")
        >>> d.tolist(), i.tolist()
        ([[1.0, 18.0]], [[1, 0]])
    """
    queries, bank, k = _validate_inputs(queries, bank, k, chunk_size)
    device = _arrays.device_of(queries)
    dtype = "float64" if "float64" in (_validate.dtype_name(queries), _validate.dtype_name(bank)) else "float32"
    name = _dispatch.resolve(OP, backend, device, supported=SUPPORTED, auto_order=_auto_order(dtype))
    if name == "triton":
        distances, indices = _knn_triton(queries, bank, k)
        return (distances, indices) if return_indices else distances
    if name == "torch" and _arrays.kind_of(queries) == "torch":
        distances, indices = _knn_torch(queries, bank, k, chunk_size, dtype)
        return (distances, indices) if return_indices else distances
    if name == "torch" and _arrays.kind_of(queries) == "cupy":  # zero-copy through DLPack
        import cupy
        import torch

        distances, indices = _knn_torch(torch.from_dlpack(queries), torch.from_dlpack(bank), k, chunk_size, dtype)
        distances, indices = cupy.from_dlpack(distances), cupy.from_dlpack(indices)
        return (distances, indices) if return_indices else distances
    q = np.ascontiguousarray(_arrays.to_numpy(queries, "queries"), dtype=dtype)
    b = np.ascontiguousarray(_arrays.to_numpy(bank, "bank"), dtype=dtype)
    if name == "numpy":
        from ..reference.knn_score import knn_score as knn_numpy

        distances, indices = knn_numpy(q, b, k, return_indices=True, chunk_size=chunk_size)
    elif name == "cpu":
        distances, indices = _ext.load().knn_score_cpu(q, b, k)
    elif name == "faiss":
        distances, indices = _knn_faiss(q, b, k)
    else:  # torch on NumPy input: zero-copy CPU tensors
        import torch

        distances, indices = _knn_torch(torch.from_numpy(q), torch.from_numpy(b), k, chunk_size, dtype)
        distances, indices = distances.numpy(), indices.numpy()
    distances = _arrays.wrap_like(distances, queries)
    indices = _arrays.wrap_like(indices, queries)
    return (distances, indices) if return_indices else distances


# ----------------------------------------------------------------------------- adapters
def _knn_faiss(queries: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    distances = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    if queries.shape[0] > 0:
        distances, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    # Order equal distances by index (faiss's heap output is sorted by distance only).
    order = np.lexsort((indices, distances), axis=1)
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


def _knn_triton(queries: Any, bank: Any, k: int):
    import torch

    from ..triton.knn_min import MAX_K, knn_min_triton

    if k > MAX_K:
        raise ValueError(f"k must be <= {MAX_K} for backend 'triton' (a register top-k), got {k}")
    if _arrays.kind_of(queries) != "torch":  # NumPy (interpreter) or CuPy: zero-copy views
        q = torch.from_dlpack(queries) if _arrays.kind_of(queries) == "cupy" else torch.from_numpy(queries)
        b = torch.from_dlpack(bank) if _arrays.kind_of(bank) == "cupy" else torch.from_numpy(bank)
    else:
        q, b = queries, bank
    distances, indices = knn_min_triton(q.to(torch.float32), b.to(torch.float32), k)
    kind = _arrays.kind_of(queries)
    if kind == "numpy":
        return distances.numpy(), indices.numpy()
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(distances), cupy.from_dlpack(indices)
    return distances, indices


def _knn_torch(queries: Any, bank: Any, k: int, chunk_size: int | None, dtype: str):
    import torch

    tdtype = getattr(torch, dtype)
    q_all = queries.to(tdtype)
    b = bank.to(tdtype)
    n_queries, n_bank = q_all.shape[0], b.shape[0]
    if chunk_size is None:
        budget = _TORCH_CHUNK_ELEMENTS["cuda" if q_all.is_cuda else "cpu"]
        chunk_size = max(1, budget // n_bank)
    bank_norm = (b * b).sum(dim=1)
    distances = torch.empty((n_queries, k), dtype=torch.float32, device=q_all.device)
    indices = torch.empty((n_queries, k), dtype=torch.int64, device=q_all.device)
    for start in range(0, n_queries, chunk_size):
        q = q_all[start:start + chunk_size]
        query_norm = (q * q).sum(dim=1, keepdim=True)
        # |q|^2 - 2 q.b + |b|^2, clamped: rounding can make it slightly negative.
        dist = torch.addmm(bank_norm[None, :], q, b.T, alpha=-2.0).add_(query_norm).clamp_(min=0)
        vals, idx = _topk_lowest_index(dist, k)
        distances[start:start + chunk_size] = vals
        indices[start:start + chunk_size] = idx
    return distances, indices


def _topk_lowest_index(dist: Any, k: int):
    """``topk`` of the smallest ``k`` per row with ties resolved to the lowest index.

    ``torch.topk`` does not promise which of several equal values it keeps: where a row has
    more values equal to its k-th smallest than places left, the selection is redone from a
    mask (the lowest such indices); then the k values are ordered by (value, index).
    """
    import torch

    vals, idx = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    kth = vals[:, -1:]
    n_less = (dist < kth).sum(dim=1)
    n_equal = (dist == kth).sum(dim=1)
    ambiguous = torch.nonzero(n_equal > k - n_less).flatten()
    if ambiguous.numel() > 0:
        sub = dist[ambiguous]
        equal = sub == kth[ambiguous]
        keep = (sub < kth[ambiguous]) | (equal & (torch.cumsum(equal, dim=1) <= (k - n_less[ambiguous])[:, None]))
        # Exactly k True per row; nonzero lists them row by row in increasing index order.
        cols = torch.nonzero(keep)[:, 1].view(-1, k)
        idx = idx.clone()
        idx[ambiguous] = cols
        vals = vals.clone()
        vals[ambiguous] = sub.gather(1, cols)
    # Order by (value, index): sort by index, then a stable sort by value.
    idx, perm = torch.sort(idx, dim=1)
    vals = vals.gather(1, perm)
    vals, perm = torch.sort(vals, dim=1, stable=True)
    idx = idx.gather(1, perm)
    return vals.to(torch.float32), idx
