"""Clustering metrics of Anomaly Clustering: NMI, ARI and F1 after Hungarian matching.

Conventions (the reproduction's ``examples/test.py``; other-seeds.md 1a):
- Labels are any hashable values (defect-type names, ints); clusters are ints. Both are
  compared as partitions of the same ``n`` images.
- NMI: mutual information over the arithmetic mean of the two entropies (natural log; the
  base cancels), as ``sklearn.metrics.normalized_mutual_info_score``'s default. Two
  single-group partitions score 1; one single group against anything else scores 0.
- ARI: Hubert and Arabie's adjusted Rand index from pair counts, as sklearn's
  ``adjusted_rand_score`` (identical partitions, including the all-singletons and the
  single-group cases, score 1).
- F1: the reproduction's ``best_map`` then ``f1_score(average="micro")``. ``best_map`` runs
  the Hungarian algorithm on the label x cluster contingency table and relabels every cluster
  with its matched label, maximising the number of agreeing images. Every image gets exactly
  one predicted label, so micro-F1 equals the accuracy under that one-to-one mapping. When
  the clusters outnumber the labels (an estimated K), the unmatched clusters get no label
  and their images count as errors; when the labels outnumber the clusters, the unmatched
  labels' images do. Ties between equally good matchings do not change the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _encode(values: Sequence[Any], name: str) -> tuple[np.ndarray, list]:
    values = list(np.asarray(values).tolist()) if hasattr(values, "shape") else list(values)
    if any(isinstance(v, (list, tuple)) for v in values):
        raise ValueError(f"{name} must be a 1-D sequence of labels, got nested values")
    uniques = sorted(set(values), key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(uniques)}
    return np.array([index[v] for v in values], np.int64), uniques


def contingency(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> tuple[np.ndarray, list, list]:
    """``(table [n_labels, n_clusters] int64, labels, clusters)``; rows/columns in sorted order."""
    t, labels = _encode(labels_true, "labels_true")
    p, clusters = _encode(labels_pred, "labels_pred")
    if t.shape != p.shape:
        raise ValueError(f"labels_pred must have one entry per image ({t.shape[0]}), got {p.shape[0]}")
    table = np.zeros((len(labels), len(clusters)), np.int64)
    np.add.at(table, (t, p), 1)
    return table, labels, clusters


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    """Normalised mutual information (arithmetic normalisation)."""
    table, _, _ = contingency(labels_true, labels_pred)
    if table.shape[0] == table.shape[1] == 1 or table.size == 0:
        return 1.0
    n = table.sum()
    rows, cols = table.sum(1), table.sum(0)
    nz = table > 0
    outer = np.outer(rows, cols)[nz].astype(np.float64)
    joint = table[nz].astype(np.float64)
    mi = float((joint / n * (np.log(joint * n) - np.log(outer))).sum())
    denom = 0.5 * (_entropy(rows) + _entropy(cols))
    if denom <= 0.0:
        return 0.0  # exactly one side is a single group: no information
    return float(min(max(mi / denom, 0.0), 1.0))


def ari(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    """Adjusted Rand index."""
    table, _, _ = contingency(labels_true, labels_pred)
    n = int(table.sum())

    def pairs(x: np.ndarray) -> float:
        x = x.astype(np.float64)
        return float((x * (x - 1) / 2).sum())

    sum_cells, sum_rows, sum_cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    expected = sum_rows * sum_cols / total
    maximum = 0.5 * (sum_rows + sum_cols)
    if maximum == expected:  # both partitions trivial in the same way (all together / all apart)
        return 1.0
    return float((sum_cells - expected) / (maximum - expected))


def best_map(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> list:
    """Relabel every cluster with its Hungarian-matched label (``None`` when unmatched)."""
    from scipy.optimize import linear_sum_assignment

    table, labels, clusters = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(-table)
    mapping = {clusters[c]: labels[r] for r, c in zip(rows, cols)}
    pred = list(np.asarray(labels_pred).tolist()) if hasattr(labels_pred, "shape") else list(labels_pred)
    return [mapping.get(c) for c in pred]


def f1_matched(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    """Micro-F1 after :func:`best_map` (= accuracy under the optimal one-to-one mapping)."""
    from scipy.optimize import linear_sum_assignment

    table, _, _ = contingency(labels_true, labels_pred)
    if table.size == 0:
        return 1.0
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def clustering_metrics(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> dict[str, float]:
    """``{"nmi", "ari", "f1"}`` of one clustering.

    Example:
        >>> clustering_metrics(["hole", "hole", "scratch"], [1, 1, 0])
        {'nmi': 1.0, 'ari': 1.0, 'f1': 1.0}
    """
    return {"nmi": nmi(labels_true, labels_pred), "ari": ari(labels_true, labels_pred),
            "f1": f1_matched(labels_true, labels_pred)}
