"""PatchCore scoring: image scores, re-weighting, anomaly maps (NumPy/scipy vs torch paths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ofdb_fast.patchcore import scoring


def test_gaussian_kernel_matches_scipy_impulse():
    # scipy's response to a centred impulse is its kernel.
    for sigma in (0.7, 2.0, 4.0):
        k = scoring.gaussian_kernel1d(sigma)
        impulse = np.zeros(2 * len(k) + 1)
        impulse[len(k)] = 1.0
        resp = gaussian_filter(impulse, sigma, mode="reflect", truncate=4.0)
        r = (len(k) - 1) // 2
        np.testing.assert_allclose(resp[len(k) - r: len(k) + r + 1], k, rtol=1e-12, atol=1e-15)
        assert r == int(4.0 * sigma + 0.5)


def test_symmetric_index_is_scipy_reflect():
    # "reflect" in scipy is NumPy's "symmetric" pad (edge sample repeated), also past the edge.
    assert scoring.symmetric_index(3, 4).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    for n, r in [(1, 2), (5, 16), (16, 16), (37, 3)]:
        assert scoring.symmetric_index(n, r).tolist() == np.pad(np.arange(n), r, mode="symmetric").tolist()


@pytest.mark.parametrize("n_in,n_out", [(8, 64), (28, 224), (5, 7), (7, 5), (1, 4), (4, 4)])
def test_bilinear_weights_match_torch(n_in, n_out, rng):
    x = rng.standard_normal((2, n_in, n_in + 1))
    ours = scoring.anomaly_maps_numpy(x, (n_out, n_out + 3), sigma=0)
    ref = F.interpolate(torch.from_numpy(x)[:, None], size=(n_out, n_out + 3), mode="bilinear",
                        align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,size,sigma", [
    ((2, 8, 8), 64, 4.0),       # the test pipeline's shape
    ((1, 28, 28), 224, 4.0),    # the paper's shape
    ((3, 5, 7), (37, 53), 4.0),  # odd, non-square
    ((1, 2, 3), (6, 9), 4.0),   # kernel (33 taps) wider than the image: repeated reflection
    ((2, 4, 4), 16, 1.3),
])
def test_torch_maps_match_numpy_scipy(shape, size, sigma, rng):
    scores = rng.random(shape).astype(np.float32) * 10
    ref = scoring.anomaly_maps_numpy(scores, size, sigma)
    out = scoring.anomaly_maps_torch(torch.from_numpy(scores), size, sigma).numpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_numpy_maps_are_per_image_scipy(rng):
    scores = rng.random((3, 6, 6))
    up = F.interpolate(torch.from_numpy(scores)[:, None], size=(48, 48), mode="bilinear",
                       align_corners=False)[:, 0].numpy()
    ref = np.stack([gaussian_filter(u, 4.0) for u in up])
    np.testing.assert_allclose(scoring.anomaly_maps_numpy(scores, 48), ref, rtol=1e-5, atol=1e-6)


def test_constant_scores_give_constant_maps():
    maps = scoring.anomaly_maps_torch(torch.full((2, 5, 3), 7.5), (37, 53))
    np.testing.assert_allclose(maps.numpy(), 7.5, rtol=1e-6)


def test_non_contiguous_and_empty_input(rng):
    base = rng.random((4, 6, 2)).astype(np.float32)
    view = torch.from_numpy(base).permute(2, 1, 0)  # [2, 6, 4] strided view
    np.testing.assert_allclose(scoring.anomaly_maps_torch(view, 24).numpy(),
                               scoring.anomaly_maps_numpy(view.numpy(), 24), rtol=1e-5, atol=1e-6)
    assert scoring.anomaly_maps_torch(torch.zeros(0, 4, 4), 8).shape == (0, 8, 8)
    assert scoring.anomaly_maps_numpy(np.zeros((0, 4, 4)), 8).shape == (0, 8, 8)


def test_maps_bad_input():
    with pytest.raises(ValueError, match=r"patch_scores must have shape \[B, h, w\]"):
        scoring.anomaly_maps_torch(torch.zeros(4, 4), 8)
    with pytest.raises(ValueError, match="size\\[0\\] must be >= 1"):
        scoring.anomaly_maps_numpy(np.zeros((1, 4, 4)), (0, 8))


def test_patch_and_image_scores():
    d = torch.tensor([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])
    assert scoring.patch_scores_from_distances(d).tolist() == [2.0, 0.0, 2.0]
    assert scoring.patch_scores_from_distances(d[:, :1]).tolist() == [1.0, 0.0, 2.0]
    p = torch.tensor([[[1.0, 5.0], [2.0, 0.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    assert scoring.image_scores_from_patches(p).tolist() == [5.0, -1.0]


def test_reweight_hand_computed():
    # Bank on a line: 0, 1, 3, 10 (1-D features); the max patch sits at 0.5 with score 0.25,
    # nearest bank entry m* = 0, N_3(m*) = {0, 1, 3}; distances 0.5, 0.5, 2.5.
    bank = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    feats = torch.tensor([[[0.5], [0.0]]])  # one image, two patches
    patch = torch.tensor([[0.25, 0.0]])
    nn_index = torch.tensor([[0, 0]])
    d = np.array([0.5, 0.5, 2.5])
    w = 1 - np.exp(d[0]) / np.exp(d).sum()
    out = scoring.reweight_image_scores(feats, patch, nn_index, bank, b=3)
    np.testing.assert_allclose(out.numpy(), [w * 0.25], rtol=1e-6)
    # b=1: N_1 = {m*} and the softmax is 1: weight 0.
    assert scoring.reweight_image_scores(feats, patch, nn_index, bank, b=1).item() == 0.0
    # b larger than the bank is clamped.
    out4 = scoring.reweight_image_scores(feats, patch, nn_index, bank, b=10)
    d4 = np.array([0.5, 0.5, 2.5, 9.5])
    np.testing.assert_allclose(out4.numpy(), [(1 - np.exp(0.5) / np.exp(d4).sum()) * 0.25], rtol=1e-6)


def test_reweight_keeps_m_star_first_with_duplicates():
    # Bank entries 0 and 1 are identical; m* is index 1: it must stay the first support entry.
    bank = torch.tensor([[2.0], [2.0], [5.0]])
    feats = torch.tensor([[[3.0]]])
    patch = torch.tensor([[1.0]])
    out = scoring.reweight_image_scores(feats, patch, torch.tensor([[1]]), bank, b=2)
    d = np.array([1.0, 1.0])
    np.testing.assert_allclose(out.numpy(), [1 - np.exp(1.0) / np.exp(d).sum()], rtol=1e-6)
