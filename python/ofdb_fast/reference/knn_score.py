"""NumPy reference for ``knn_score``: exact k nearest neighbours in squared L2 (the spec).

Conventions:
- ``queries`` ``[Q, D]`` and ``bank`` ``[M, D]`` are float arrays; distances are **squared**
  Euclidean distances, as faiss ``IndexFlatL2`` returns them (PatchCore's patch score is their
  mean over ``k``; that reduction belongs to the caller).
- Every distance is computed directly as ``sum((q - b) ** 2)`` in float64 (no
  ``|q|^2 - 2 q.b + |b|^2`` expansion, so no cancellation), then rounded to float32 once.
- Ties: equal distances are ordered by bank index, lowest first (a stable sort), so
  duplicated bank rows come out lowest index first.
- Queries (and bank rows) are processed in chunks so memory stays bounded by
  ``chunk_size x bank_chunk x D`` float64 values.
- Output: distances ``[Q, k]`` float32 ascending, and optionally indices ``[Q, k]`` int64.
  ``Q == 0`` gives ``[0, k]`` arrays.
"""

from __future__ import annotations

import numpy as np

# Bound on the float64 difference tensor of one (query chunk, bank chunk) pair, in elements.
_MAX_DIFF_ELEMENTS = 1 << 22


def _squared_distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """``[q, m]`` float64 squared distances, computed from differences, bank chunked."""
    n_dims = max(queries.shape[1], 1)
    bank_chunk = max(1, _MAX_DIFF_ELEMENTS // max(1, queries.shape[0] * n_dims))
    parts = []
    for start in range(0, bank.shape[0], bank_chunk):
        diff = queries[:, None, :] - bank[None, start:start + bank_chunk, :]
        parts.append(np.einsum("qmd,qmd->qm", diff, diff))
    return np.concatenate(parts, axis=1)


def knn_score(
    queries: np.ndarray,  # [Q, D] float
    bank: np.ndarray,  # [M, D] float
    k: int = 1,
    *,
    return_indices: bool = False,
    chunk_size: int | None = None,
):
    """Exact ``k`` nearest bank rows of every query, by squared L2 distance.

    Args:
        queries: ``[Q, D]`` float array.
        bank: ``[M, D]`` float array, ``1 <= k <= M``.
        k: neighbours per query.
        return_indices: also return the bank indices of the neighbours.
        chunk_size: queries per chunk (``None``: 64).

    Returns:
        ``distances`` ``[Q, k]`` float32, ascending per row; with ``return_indices``, the pair
        ``(distances, indices)`` where ``indices`` is ``[Q, k]`` int64 (ties: lowest index first).
    """
    queries = np.asarray(queries, dtype=np.float64)
    bank = np.asarray(bank, dtype=np.float64)
    n_queries = queries.shape[0]
    chunk = 64 if chunk_size is None else int(chunk_size)
    distances = np.empty((n_queries, k), dtype=np.float32)
    indices = np.empty((n_queries, k), dtype=np.int64)
    for start in range(0, n_queries, chunk):
        dist = _squared_distances(queries[start:start + chunk], bank)
        # A stable sort keeps equal distances in bank-index order: lowest index first.
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        indices[start:start + chunk] = order
        distances[start:start + chunk] = np.take_along_axis(dist, order, axis=1)
    if return_indices:
        return distances, indices
    return distances
