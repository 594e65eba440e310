"""Ward clustering, the K estimator and the metrics, with sklearn as the test-only oracle."""

from __future__ import annotations

import numpy as np
import pytest

from ofdb_fast.cluster import algorithm as alg
from ofdb_fast.cluster import metrics as met

sklearn_cluster = pytest.importorskip("sklearn.cluster")
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _blobs(rng, n_per=(6, 9, 5), dim=7, spread=0.3):
    centres = rng.standard_normal((len(n_per), dim)) * 5
    x = np.concatenate([c + spread * rng.standard_normal((n, dim)) for c, n in zip(centres, n_per)])
    y = np.repeat(np.arange(len(n_per)), n_per)
    return x, y


# ------------------------------------------------------------------------------- Ward
@pytest.mark.parametrize("k", [1, 2, 3, 5, 17])
def test_ward_matches_sklearn_on_random_data(k, rng):
    # Continuous random data: no tied merge heights, so SciPy's and sklearn's trees agree.
    x = rng.standard_normal((17, 11))
    ours = alg.agglomerative_ward(x, k)
    theirs = sklearn_cluster.AgglomerativeClustering(n_clusters=k).fit_predict(x)
    assert len(np.unique(ours)) == k
    assert sklearn_metrics.adjusted_rand_score(theirs, ours) == 1.0


def test_ward_recovers_blobs_and_numbers_by_first_appearance(rng):
    x, y = _blobs(rng)
    perm = rng.permutation(len(y))
    labels = alg.agglomerative_ward(x[perm], 3)
    assert met.ari(y[perm], labels) == 1.0
    assert labels[0] == 0 and set(labels.tolist()) == {0, 1, 2}
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(3)]
    assert first == sorted(first)


def test_ward_ties_give_exactly_k_clusters():
    # Duplicated points: many zero-height merges; fcluster(maxclust) could return fewer.
    x = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [5.0]])
    for k in range(1, 7):
        assert len(np.unique(alg.agglomerative_ward(x, k))) == k


def test_ward_one_item_and_torch_input():
    assert alg.agglomerative_ward(np.zeros((1, 3)), 1).tolist() == [0]
    torch = pytest.importorskip("torch")
    assert alg.agglomerative_ward(torch.tensor([[0.0], [0.1], [9.0]]), 2).tolist() == [0, 0, 1]


def test_estimate_recovers_blob_count(rng):
    for n_blobs in (2, 3, 5):
        x, _ = _blobs(rng, n_per=(5,) * n_blobs)
        k, scores = alg.estimate_n_clusters(x, k_max=8)
        assert k == n_blobs, scores
        assert set(scores) == set(range(2, 9))
    labels, info = alg.cluster_embeddings(x, "estimate")
    assert info["estimated"] and info["n_clusters"] == 5 and len(np.unique(labels)) == 5
    assert alg.estimate_n_clusters(np.zeros((2, 3)))[0] == 1


def test_silhouette_matches_sklearn(rng):
    x, _ = _blobs(rng, spread=2.0)
    labels = alg.agglomerative_ward(x, 4)
    labels[0] = 3  # make a singleton possible
    np.testing.assert_allclose(alg.silhouette(x, labels), sklearn_metrics.silhouette_score(x, labels), rtol=1e-10)


def test_bad_cluster_input():
    with pytest.raises(ValueError, match=r"n_clusters must be <= 3"):
        alg.agglomerative_ward(np.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[N, D\]"):
        alg.agglomerative_ward(np.zeros(3), 1)
    with pytest.raises(ValueError, match="embeddings must contain only finite values"):
        alg.agglomerative_ward(np.array([[np.inf], [0.0]]), 1)
    with pytest.raises(ValueError, match="n_clusters must be an int >= 1 or 'estimate'"):
        alg.cluster_embeddings(np.zeros((3, 2)), "auto")


# ----------------------------------------------------------------------------- metrics
def test_metrics_match_sklearn_on_random_labelings(rng):
    for n, n_true, n_pred in [(30, 4, 4), (25, 3, 6), (40, 5, 2), (12, 1, 3), (9, 9, 9), (20, 2, 1)]:
        t = rng.integers(0, n_true, n)
        p = rng.integers(0, n_pred, n)
        np.testing.assert_allclose(met.nmi(t, p), sklearn_metrics.normalized_mutual_info_score(t, p), atol=1e-12)
        np.testing.assert_allclose(met.ari(t, p), sklearn_metrics.adjusted_rand_score(t, p), atol=1e-12)


def test_f1_is_accuracy_after_best_map(rng):
    t = np.array(["hole"] * 4 + ["scratch"] * 3 + ["good"] * 3)
    p = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1, 2])
    # Contingency: cluster 2 -> hole (3 images), 0 -> scratch (2), 1 -> good (2).
    mapped = met.best_map(t, p)
    assert mapped == ["hole"] * 3 + ["scratch"] * 3 + ["good"] * 3 + ["hole"]
    expected = sklearn_metrics.f1_score(t, np.array(mapped), average="micro")
    assert met.f1_matched(t, p) == pytest.approx(expected) == pytest.approx(7 / 10)
    # More clusters than labels: the unmatched cluster's images are errors.
    assert met.f1_matched([0, 0, 1, 1], [0, 1, 2, 2]) == pytest.approx(3 / 4)
    assert met.best_map([0, 0, 1, 1], [0, 1, 2, 2]).count(None) == 1
    # Fewer clusters than labels.
    assert met.f1_matched([0, 1, 2, 2], [0, 0, 0, 0]) == pytest.approx(2 / 4)


def test_metrics_perfect_and_permuted_partitions():
    t = ["a", "a", "b", "b", "c"]
    p = [7, 7, 3, 3, 5]
    assert met.clustering_metrics(t, p) == {"nmi": 1.0, "ari": 1.0, "f1": 1.0}
    assert met.nmi([0, 0, 0], [1, 1, 1]) == 1.0 and met.ari([0, 0, 0], [1, 1, 1]) == 1.0
    assert met.nmi([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0


def test_bad_metric_input():
    with pytest.raises(ValueError, match=r"labels_pred must have one entry per image \(3\), got 2"):
        met.nmi([0, 1, 1], [0, 1])
