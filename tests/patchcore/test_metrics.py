"""PatchCore metrics vs sklearn (AUROC) and the slow reference PRO (reference/pro.py)."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from ofdb_fast.patchcore import metrics as M
from ofdb_fast.reference import pro as R


def _maps_with_regions(rng, n=4, h=37, w=53, levels=None):
    masks = np.zeros((n, h, w), bool)
    masks[0, 5:15, 5:20] = True  # large region
    masks[1, 20:30, 30:34] = True
    masks[1, 2:4, 2:4] = True  # tiny region, same weight as the others
    masks[2, 10, 10:20] = True  # a line
    maps = ndimage.gaussian_filter(rng.random((n, h, w)), 1.0) + 0.15 * masks
    if levels:
        maps = np.round(maps * levels) / levels  # many ties
    return masks, maps


# ---------------------------------------------------------------------------- AUROC
@pytest.mark.parametrize("n,n_values", [(2, 10), (17, 3), (500, 20), (500, 10_000)])
def test_image_auroc_matches_sklearn_with_ties(rng, n, n_values):
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = rng.integers(0, n_values, n).astype(np.float32)
    assert M.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_values():
    assert M.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert M.image_auroc([0, 1], [1.0, 1.0]) == 0.5
    assert M.image_auroc([True, False], [0.0, 1.0]) == 0.0


def test_image_auroc_accepts_torch_and_huge_values():
    torch = pytest.importorskip("torch")
    labels = torch.tensor([0, 1, 0, 1])
    scores = torch.tensor([1e300, -1e300, 3.0, 1e308], dtype=torch.float64)
    assert M.image_auroc(labels, scores) == roc_auc_score(labels.numpy(), scores.numpy())


def test_auroc_invariant_to_min_max_normalisation(rng):
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    normed = (scores - scores.min()) / (scores.max() - scores.min())
    assert M.image_auroc(labels, normed) == pytest.approx(M.image_auroc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("levels", [None, 20])
def test_pixel_auroc_matches_sklearn(rng, levels):
    masks, maps = _maps_with_regions(rng, levels=levels)
    ref = roc_auc_score(masks.ravel(), maps.ravel())
    assert M.pixel_auroc(masks, maps) == pytest.approx(ref, abs=1e-12)
    # Non-contiguous float32 views give the same value (float32 -> float64 is exact).
    maps32 = np.asfortranarray(maps.astype(np.float32))
    assert M.pixel_auroc(masks, maps32) == pytest.approx(
        roc_auc_score(masks.ravel(), maps32.ravel()), abs=1e-12)


def test_anomaly_pixel_auroc_uses_only_defect_images(rng):
    masks, maps = _maps_with_regions(rng)
    keep = masks.any(axis=(1, 2))
    ref = roc_auc_score(masks[keep].ravel(), maps[keep].ravel())
    assert M.anomaly_pixel_auroc(masks, maps) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 50])
def test_binned_pixel_auroc_within_stated_bound(rng, levels, monkeypatch):
    monkeypatch.setattr(M, "_CHUNK_PIXELS", 5000)  # several chunks, several images per chunk
    masks, maps = _maps_with_regions(rng, n=40, h=64, w=61, levels=levels)
    exact = M.pixel_auroc(masks, maps)
    binned, bound = M._binned_auroc(masks, maps)
    assert abs(binned - exact) <= bound + 1e-12
    if levels is None:
        # Continuous maps: measured bound ~1e-6 at 156k pixels.
        assert bound < 1e-4
    else:
        # Exact ties land in the same bin and are counted 1/2 as in the exact path.
        assert binned == pytest.approx(exact, abs=1e-12)
    assert M.pixel_auroc(masks, maps, max_exact=1000) == binned


def test_binned_auroc_extreme_and_constant_values():
    masks = np.zeros((1, 2, 3), bool)
    masks[0, 0, :2] = True
    maps = np.array([[[1e308, 5.0, -1e308], [-1e308, 4.0, 0.0]]])
    exact = M.pixel_auroc(masks, maps)
    assert exact == roc_auc_score(masks.ravel(), maps.ravel()) == 1.0
    # 5, 4 and 0 share a bin at this range: counted as ties, and the bound says so.
    binned, bound = M._binned_auroc(masks, maps)
    assert binned == 0.875 and abs(binned - exact) <= bound
    assert M._binned_auroc(masks, np.ones((1, 2, 3)))[0] == 0.5


# ---------------------------------------------------------------------------- AUPRO
def test_aupro_perfect_and_inverted_maps(rng):
    masks, _ = _maps_with_regions(rng)
    assert M.aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)
    assert R.aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)
    assert M.aupro(masks, -masks.astype(float)) == pytest.approx(0.0, abs=1e-12)
    assert R.aupro(masks, -masks.astype(float)) == pytest.approx(0.0, abs=1e-12)


def test_aupro_one_region_half_covered():
    # Region of 8 px; 4 of them score 1 (with no false positives), the rest score 0 like the
    # 92 normal pixels. Curve: (0, 0) -> (0, 0.5) -> (1, 1); area to 0.3 = 0.3*0.5 + 0.3^2/4.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 2:4, 2:6] = True
    maps = np.zeros((1, 10, 10))
    maps[0, 2, 2:6] = 1.0
    expected = (0.3 * 0.5 + 0.3 * 0.3 * 0.5 / 2) / 0.3
    assert R.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert M.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_weights_regions_equally_not_pixels():
    # A 2-px and a 30-px region; only the small one is found (above all normal pixels):
    # PRO jumps to 1/2, not 2/32.
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 1, 1:3] = True
    masks[1, 2:8, 2:7] = True
    maps = np.zeros((2, 12, 12))
    maps[0][masks[0]] = 1.0
    expected = (0.3 * 0.5 + 0.3 * 0.3 * 0.5 / 2) / 0.3
    assert R.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert M.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_connectivity():
    # Two diagonal pixels: one region with 8-connectivity, two with 4-connectivity.
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True
    maps = np.zeros((1, 6, 6))
    maps[0, 1, 1] = 1.0
    for conn in (4, 8):
        assert M.aupro(masks, maps, connectivity=conn) == pytest.approx(
            R.aupro(masks, maps, connectivity=conn), abs=1e-12)
    assert M.aupro(masks, maps, connectivity=4) == pytest.approx(M.aupro(masks, maps, connectivity=8), abs=1e-12)


@pytest.mark.parametrize("levels,fpr_limit", [(None, 0.3), (30, 0.3), (None, 1.0), (None, 0.05)])
def test_aupro_matches_reference(rng, levels, fpr_limit):
    masks, maps = _maps_with_regions(rng, n=3, h=20, w=23, levels=levels)
    masks[0, 2:6, 2:6] = True  # a region in every image, plus a normal-only image
    masks[2] = False
    ref = R.aupro(masks, maps, fpr_limit=fpr_limit)
    fpr, pro = M._binned_pro_curve(masks, maps, 2**20)
    bound = M.aupro_error_bound(fpr, pro, fpr_limit)
    got = M.aupro(masks, maps, fpr_limit=fpr_limit)
    assert abs(got - ref) <= bound + 1e-12
    # Loosened: two of the 1,380 values can share one of the 2**20 bins; measured worst 4.2e-6
    # over seeds (always within ``bound``).
    assert got == pytest.approx(ref, abs=1e-5)


def test_aupro_coarse_bins_within_bound(rng):
    masks, maps = _maps_with_regions(rng, n=3, h=20, w=23)
    ref = R.aupro(masks, maps)
    fpr, pro = M._binned_pro_curve(masks, maps, 64)
    bound = M.aupro_error_bound(fpr, pro, 0.3)
    assert abs(M.aupro(masks, maps, n_thresholds=64) - ref) <= bound + 1e-12
    assert bound > 0  # coarse bins do merge thresholds here


def test_aupro_curve_invariants(rng, monkeypatch):
    monkeypatch.setattr(M, "_CHUNK_PIXELS", 3000)
    masks, maps = _maps_with_regions(rng, n=6)
    fpr, pro = M._binned_pro_curve(masks, maps, 1000)
    assert fpr[0] == pro[0] == 0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert (np.diff(fpr) >= 0).all() and (np.diff(pro) >= -1e-12).all()


def test_aupro_invariant_to_affine_normalisation(rng):
    masks, maps = _maps_with_regions(rng, levels=40)
    normed = (maps - maps.min()) / (maps.max() - maps.min())
    assert M.aupro(masks, normed) == pytest.approx(M.aupro(masks, maps), abs=1e-12)


def test_evaluate(rng):
    masks, maps = _maps_with_regions(rng)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    out = M.evaluate(labels, scores, masks, maps)
    assert set(out) == {"instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro"}
    assert out["instance_auroc"] == roc_auc_score(labels, scores)
    assert out["aupro"] == pytest.approx(R.aupro(masks, maps), abs=1e-5)  # bin collisions, see above
    assert M.evaluate(labels, scores) == {"instance_auroc": out["instance_auroc"]}


# ---------------------------------------------------------------------------- F1-max
def _brute_f1_max(labels, scores):
    """Every distinct score as the threshold (flag >= t), F1 from its confusion counts; the
    highest t on equal F1. (_check_operating_point compares the result with sklearn.)"""
    labels = np.asarray(labels, bool)
    best = None
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        tp, fp, fn = np.sum(pred & labels), np.sum(pred & ~labels), np.sum(~pred & labels)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if best is None or f1 > best[1]:
            best = (float(t), f1)
    return best


def _check_operating_point(out, labels, scores):
    """The returned threshold gives exactly the returned F1, precision and recall."""
    pred = scores >= out["threshold"]
    assert out["f1"] == pytest.approx(f1_score(labels, pred), abs=1e-12)
    assert out["precision"] == pytest.approx(precision_score(labels, pred), abs=1e-12)
    assert out["recall"] == pytest.approx(recall_score(labels, pred), abs=1e-12)


@pytest.mark.parametrize("n,n_values", [(1, 3), (2, 10), (17, 3), (300, 20), (300, 10_000)])
def test_f1_max_matches_brute_force_with_ties(rng, n, n_values):
    labels = np.r_[1, rng.integers(0, 2, n - 1)]
    scores = rng.integers(0, n_values, n).astype(np.float32) + 0.5 * labels
    out = M.f1_max(labels, scores)
    threshold, f1 = _brute_f1_max(labels, scores)
    assert out["threshold"] == threshold and out["f1"] == pytest.approx(f1, abs=1e-12)
    _check_operating_point(out, labels, scores)


def test_f1_max_hand_values():
    assert M.f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == {
        "threshold": 0.35, "f1": 0.8, "precision": 2 / 3, "recall": 1.0}
    # Perfect separation: the lowest defect score; all tied: flag everything.
    assert M.f1_max([0, 1, 1], [0.2, 0.5, 0.9])["threshold"] == 0.5
    assert M.f1_max([0, 1, 0, 1], [3.0, 3.0, 3.0, 3.0]) == {
        "threshold": 3.0, "f1": 2 / 3, "precision": 0.5, "recall": 1.0}
    assert M.f1_max([1, 1], [0.1, 0.2]) == {"threshold": 0.1, "f1": 1.0, "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize("levels", [None, 20])
def test_pixel_f1_max_exact_matches_brute_force(rng, levels):
    masks, maps = _maps_with_regions(rng, levels=levels)
    out = M.pixel_f1_max(masks, maps)
    threshold, f1 = _brute_f1_max(masks.ravel(), maps.ravel())
    assert out["threshold"] == threshold and out["f1"] == pytest.approx(f1, abs=1e-12)
    _check_operating_point(out, masks.ravel(), maps.ravel())


@pytest.mark.parametrize("n_bins", [16, 2**20])
def test_pixel_f1_max_binned(rng, n_bins, monkeypatch):
    masks, maps = _maps_with_regions(rng)
    exact = M.pixel_f1_max(masks, maps)
    monkeypatch.setattr(M, "N_BINS_AUROC", n_bins)
    binned = M.pixel_f1_max(masks, maps, max_exact=0)
    # Its threshold reproduces its F1; the bins only restrict which thresholds are tried.
    _check_operating_point(binned, masks.ravel(), maps.ravel())
    assert binned["f1"] <= exact["f1"] + 1e-12
    if n_bins == 16:
        assert binned["f1"] >= exact["f1"] - 0.05
    else:  # 7,844 continuous values in 2**20 bins: no two share a bin here, so every threshold is tried
        assert binned == exact
    constant = M.pixel_f1_max(masks, np.full(maps.shape, 2.5), max_exact=0)
    assert constant["threshold"] == 2.5 and constant["recall"] == 1.0


# ---------------------------------------------------------------------------- bad input
def test_one_class_labels_raise():
    with pytest.raises(ValueError, match="labels must contain both classes"):
        M.image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels must contain at least one defect"):
        M.f1_max([0, 0, 0], [0.1, 0.2, 0.3])


def test_empty_masks_raise():
    masks, maps = np.zeros((2, 5, 5), bool), np.zeros((2, 5, 5))
    with pytest.raises(ValueError, match="at least one anomalous pixel"):
        M.aupro(masks, maps)
    with pytest.raises(ValueError, match="masks must contain both classes"):
        M.pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match="at least one non-empty mask"):
        M.anomaly_pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match="masks must contain at least one anomalous pixel"):
        M.pixel_f1_max(masks, maps)


def test_all_anomalous_masks_raise_for_aupro():
    with pytest.raises(ValueError, match="normal pixels"):
        M.aupro(np.ones((1, 3, 3), bool), np.zeros((1, 3, 3)))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="scores must have the shape of labels"):
        M.image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels and scores must have the same shape"):
        M.f1_max([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="maps must have the shape of masks"):
        M.pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"masks must have shape \[N, H, W\]"):
        M.aupro(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="one mask per label"):
        M.evaluate([0, 1, 1], [0.1, 0.2, 0.3], np.eye(4)[None].repeat(2, 0), np.zeros((2, 4, 4)))


def test_non_binary_and_non_finite_raise():
    with pytest.raises(ValueError, match="labels must contain only 0 and 1"):
        M.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores must contain only finite values"):
        M.image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(TypeError, match="scores must have a real dtype"):
        M.image_auroc([0, 1], ["a", "b"])


def test_bad_options_raise(rng):
    masks, maps = _maps_with_regions(rng)
    with pytest.raises(ValueError, match="fpr_limit must be in"):
        M.aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        M.aupro(masks, maps, connectivity=6)
    with pytest.raises(ValueError, match="n_thresholds must be >= 2"):
        M.aupro(masks, maps, n_thresholds=1)
    with pytest.raises(ValueError, match="masks and maps must be given together"):
        M.evaluate([0, 1], [0.1, 0.2], masks=masks)
