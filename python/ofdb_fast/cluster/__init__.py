"""Anomaly Clustering (Sohn et al., WACV 2023): group anomalous images by defect type.

Patch embeddings from the PatchCore feature path (:mod:`.embed`), patch weights ``alpha`` in
the reproduction's three modes (:mod:`.alpha`, distances on ``knn_score``), Ward clustering
(:mod:`.algorithm`), NMI / ARI / matched F1 (:mod:`.metrics`), one-call pipeline
(:mod:`.pipeline`) and the ``ofdb-fast cluster`` command (:mod:`.cli`).
"""

from .algorithm import agglomerative_ward, cluster_embeddings, estimate_n_clusters
from .alpha import (alpha_from_distances, cluster_alpha, image_embeddings, patch_distances,
                    select_normal_images, weighted_embeddings)
from .metrics import ari, best_map, clustering_metrics, f1_matched, nmi
from .pipeline import ClusterResult, ClusterRun, cluster_category

__all__ = [
    "agglomerative_ward", "alpha_from_distances", "ari", "best_map", "cluster_alpha", "cluster_category",
    "cluster_embeddings", "clustering_metrics", "ClusterResult", "ClusterRun", "estimate_n_clusters",
    "f1_matched", "image_embeddings", "nmi", "patch_distances", "select_normal_images", "weighted_embeddings",
]
