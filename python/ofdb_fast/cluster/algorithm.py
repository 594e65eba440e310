"""The clustering step of Anomaly Clustering: Ward agglomerative clustering of image embeddings.

The reproduction calls ``sklearn.cluster.AgglomerativeClustering(n_clusters=K)`` with its
defaults: Ward linkage on Euclidean distances, the tree cut into exactly ``K`` clusters, where
``K`` is the number of label folders (other-seeds.md 1a). Here (NumPy/SciPy, no sklearn):

- ``scipy.cluster.hierarchy.linkage(x, method="ward")`` builds the same tree (merge order by
  Ward's increase in within-cluster variance), computed in float64.
- The cut applies the first ``N - K`` merges (union-find), which always gives exactly ``K``
  clusters, like sklearn's cut; ``fcluster(criterion="maxclust")`` would give fewer when merge
  heights tie. When two merges tie exactly, SciPy and sklearn may order them differently and
  the partitions can differ; compare partitions, not label ids.
- Cluster ids are ``0 .. K-1`` in order of first appearance in the input (image 0 is in
  cluster 0), so the output does not depend on internal numbering.

Estimating K (``n_clusters="estimate"``; **our extension**, the reproduction never
estimates K): every ``K`` in ``2 .. min(k_max, N - 1)`` is cut from the one Ward tree and
scored by the mean silhouette (Rousseeuw 1987) on Euclidean distances (a singleton's
silhouette is 0, as sklearn); the highest mean wins, the smaller K on ties. ``N <= 2`` gives
``K = 1``. ``k_max`` defaults to 10.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import require_int

DEFAULT_K_MAX = 10


def _as_points(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (any device): the clustering runs on the CPU
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape [N, D], got {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"embeddings must have a floating-point dtype, got {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"embeddings must have shape [N, D] with N, D >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings must contain only finite values, got NaN or inf")
    return x.astype(np.float64)


def ward_linkage(x: Any) -> np.ndarray:
    """SciPy's Ward linkage matrix ``[N - 1, 4]`` of ``x`` ``[N, D]`` (N >= 2)."""
    from scipy.cluster.hierarchy import linkage

    return linkage(_as_points(x), method="ward")


def cut_tree_k(linkage_matrix: np.ndarray, n_points: int, n_clusters: int) -> np.ndarray:
    """Labels ``[N]`` int64 after the first ``N - n_clusters`` merges of a linkage matrix."""
    parent = np.arange(2 * n_points - 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for step in range(n_points - n_clusters):
        left, right = int(linkage_matrix[step, 0]), int(linkage_matrix[step, 1])
        node = n_points + step
        parent[find(left)] = node
        parent[find(right)] = node
    roots = np.array([find(i) for i in range(n_points)])
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def silhouette(x: Any, labels: np.ndarray) -> float:
    """Mean silhouette of ``labels`` on Euclidean distances of ``x`` ``[N, D]``; 0 for K < 2."""
    points = _as_points(x)
    labels = np.asarray(labels)
    _, lab = np.unique(labels, return_inverse=True)
    n_clusters = int(lab.max()) + 1
    if n_clusters < 2 or n_clusters >= points.shape[0]:
        return 0.0
    sq = (points * points).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] - 2.0 * points @ points.T + sq[None, :], 0.0))
    np.fill_diagonal(dist, 0.0)
    onehot = np.eye(n_clusters)[lab]
    counts = onehot.sum(0)
    sums = dist @ onehot  # [N, K]: total distance of each point to each cluster
    own = counts[lab] - 1
    a = np.where(own > 0, sums[np.arange(len(lab)), lab] / np.maximum(own, 1), 0.0)
    mean_to = sums / counts[None, :]
    mean_to[np.arange(len(lab)), lab] = np.inf
    b = mean_to.min(1)
    s = np.where(own > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def estimate_n_clusters(x: Any, k_max: int = DEFAULT_K_MAX) -> tuple[int, dict[int, float]]:
    """The K with the highest mean silhouette among Ward cuts ``2 .. min(k_max, N - 1)``.

    Returns:
        ``(K, {k: mean silhouette})``; ``(1, {})`` when ``N <= 2``.
    """
    points = _as_points(x)
    k_max = require_int(k_max, "k_max", minimum=2)
    n = points.shape[0]
    candidates = range(2, min(k_max, n - 1) + 1)
    if len(candidates) == 0:
        return 1, {}
    tree = ward_linkage(points)
    scores = {k: silhouette(points, cut_tree_k(tree, n, k)) for k in candidates}
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def agglomerative_ward(x: Any, n_clusters: int) -> np.ndarray:
    """Ward agglomerative clustering of ``x`` ``[N, D]`` into exactly ``n_clusters`` clusters.

    Returns:
        ``[N]`` int64 cluster ids, numbered by first appearance.

    Example:
        >>> agglomerative_ward(np.array([[0.0], [0.1], [5.0], [5.2]]), 2).tolist()
        [0, 0, 1, 1]
    """
    points = _as_points(x)
    n = points.shape[0]
    n_clusters = require_int(n_clusters, "n_clusters", minimum=1, maximum=n)
    if n == 1:
        return np.zeros(1, np.int64)
    return cut_tree_k(ward_linkage(points), n, n_clusters)


def cluster_embeddings(x: Any, n_clusters: int | str = "estimate", *, k_max: int = DEFAULT_K_MAX
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster image embeddings ``[N, D]`` with Ward; ``n_clusters`` an int or ``"estimate"``.

    Returns:
        ``(labels [N] int64, info)`` with ``info = {"n_clusters", "estimated", "silhouette"}``
        (the per-K silhouette scores when estimated).
    """
    if isinstance(n_clusters, str):
        if n_clusters != "estimate":
            raise ValueError(f"n_clusters must be an int >= 1 or 'estimate', got {n_clusters!r}")
        k, scores = estimate_n_clusters(x, k_max)
        return agglomerative_ward(x, k), {"n_clusters": k, "estimated": True, "silhouette": scores}
    labels = agglomerative_ward(x, n_clusters)
    return labels, {"n_clusters": int(n_clusters), "estimated": False, "silhouette": {}}
