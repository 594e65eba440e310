"""cluster_alpha: the fast (knn_score) backends against the NumPy reference, the reference on
hand-computed cases, invariants, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ofdb_fast.cluster import alpha as ca
from ofdb_fast.reference import cluster_alpha as ref
from ofdb_fast.testing import backend_params

FAST = backend_params("cpu", "torch", "faiss")
ALL = backend_params("numpy", "cpu", "torch", "faiss")
TAUS = [0.0, 0.3, 1.0, 2.0, 10.0]


def _data(rng, n=5, p=7, d=37, m=3, dtype=np.float32):
    # Clustered patches: the nearest-patch distances are well separated from float32 rounding.
    z = rng.standard_normal((n, p, d)).astype(dtype)
    normals = rng.standard_normal((m, p + 2, d)).astype(dtype)
    return z, normals


# ---------------------------------------------------------------------------- reference
def test_reference_hand_computed():
    # Image 0: patches at 0 and 10; image 1: patches at 0 and 4 (1-D).
    z = np.array([[[0.0], [10.0]], [[0.0], [4.0]]])
    d = ref.patch_distances(z, "unsupervised")
    np.testing.assert_allclose(d, [[0.0, 6.0], [0.0, 4.0]])
    normals = np.array([[[1.0], [9.0]]])
    np.testing.assert_allclose(ref.patch_distances(z, "supervised", normal_embeddings=normals),
                               [[1.0, 1.0], [1.0, 3.0]])
    a = ref.alpha_from_distances(np.array([[0.0, 6.0]]), 2.0)
    np.testing.assert_allclose(a, [[1 / (1 + np.exp(3.0)), np.exp(3.0) / (1 + np.exp(3.0))]])
    # tau = 0: arg-max set, ties split.
    np.testing.assert_array_equal(ref.alpha_from_distances(np.array([[1.0, 3.0, 3.0]]), 0.0), [[0, 0.5, 0.5]])
    x = ref.weighted_embeddings(z, np.array([[0.25, 0.75], [1.0, 0.0]]))
    np.testing.assert_allclose(x, [[7.5], [0.0]])


def test_reference_average_is_uniform(rng):
    z, _ = _data(rng)
    for tau in TAUS:
        np.testing.assert_allclose(ref.cluster_alpha(z, "average", tau), np.full(z.shape[:2], 1 / z.shape[1]))


def test_reference_select_normal_images():
    idx = ref.select_normal_images(20, 10, 0.5, seed=3)
    assert len(idx) == 5 and len(set(idx.tolist())) == 5 and np.all(np.diff(idx) > 0) and idx.max() < 20
    np.testing.assert_array_equal(idx, ref.select_normal_images(20, 10, 0.5, seed=3))
    assert not np.array_equal(idx, ref.select_normal_images(20, 10, 0.5, seed=4))
    # The reproduction's quirk: relative to the test count, capped by the normal count.
    assert len(ref.select_normal_images(8, 10, 1.3, seed=0)) == 8
    np.testing.assert_array_equal(ref.select_normal_images(8, 10, 1.3, seed=0), np.arange(8))


# ------------------------------------------------------------------------ fast vs numpy
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", ["unsupervised", "supervised", "average"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_matches_reference(backend, mode, dtype, rng):
    z, normals = _data(rng, dtype=dtype)
    # supervised / semi-supervised: the bank is a train_ratio draw of the normal images.
    sel = ca.select_normal_images(normals.shape[0], z.shape[0], train_ratio=0.4, seed=1)
    assert len(sel) == 2
    nrm = normals[sel] if mode == "supervised" else None
    d_ref = ref.patch_distances(z, mode, normal_embeddings=nrm)
    d = ca.patch_distances(z, mode, normal_embeddings=nrm, backend=backend)
    assert d.dtype == np.float64 and d.shape == z.shape[:2]
    # knn_score returns float32 squared distances. float32 input (and faiss, always float32):
    # expansion |q|^2 - 2q.b + |b|^2 in float32, worst measured relative error 3e-7 at D=37;
    # float64 input on cpu/torch: only the final rounding to float32, 1.3e-8 measured.
    exact64 = dtype == np.float64 and backend != "faiss"
    np.testing.assert_allclose(d, d_ref, rtol=1e-7 if exact64 else 2e-6, atol=1e-12 if exact64 else 1e-5)
    a_ref = ref.cluster_alpha(z, mode, TAUS, normal_embeddings=nrm)
    a = ca.cluster_alpha(z, mode, TAUS, normal_embeddings=nrm, backend=backend)
    assert a.shape == (len(TAUS),) + z.shape[:2]
    np.testing.assert_allclose(a, a_ref, rtol=1e-5, atol=1e-9)
    x = ca.image_embeddings(z, mode, TAUS, normal_embeddings=nrm, backend=backend)
    assert x.shape == (len(TAUS), z.shape[0], z.shape[2]) and x.dtype == dtype
    x_ref = np.stack([ref.weighted_embeddings(z, a_t) for a_t in a_ref])
    np.testing.assert_allclose(x, x_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("mode", ["unsupervised", "supervised"])
def test_torch_input_returns_torch(backend, mode, rng):
    torch = pytest.importorskip("torch")
    z, normals = _data(rng, n=3, p=4, d=8)
    zt, nt = torch.from_numpy(z), torch.from_numpy(normals)
    nt, normals = (nt, normals) if mode == "supervised" else (None, None)
    a = ca.cluster_alpha(zt, mode, [0.0, 1.0], normal_embeddings=nt, backend=backend)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float64
    np.testing.assert_allclose(a.numpy(), ref.cluster_alpha(z, mode, [0.0, 1.0], normal_embeddings=normals),
                               rtol=1e-5, atol=1e-9)
    a = a[1]
    x = ca.weighted_embeddings(zt, a)
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (3, 8)


@pytest.mark.parametrize("backend", FAST)
def test_edge_shapes(backend, rng):
    # Two images of one patch each (P = 1: alpha is 1), D = 1, and an odd 37-patch case.
    z = rng.standard_normal((2, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(ca.cluster_alpha(z, "unsupervised", [0.0, 1.0], backend=backend), np.ones((2, 2, 1)))
    z = rng.standard_normal((3, 37, 53)).astype(np.float32)
    np.testing.assert_allclose(ca.patch_distances(z, backend=backend), ref.patch_distances(z), rtol=2e-6, atol=1e-5)


@pytest.mark.parametrize("backend", FAST)
def test_non_contiguous_input(backend, rng):
    base = rng.standard_normal((9, 4, 6)).astype(np.float32)
    z = base.transpose(2, 1, 0)[:, :, ::2]  # [6, 4, 5], strided view
    assert not z.flags.c_contiguous
    np.testing.assert_allclose(ca.patch_distances(z, backend=backend), ref.patch_distances(z), rtol=2e-6, atol=1e-5)


@pytest.mark.parametrize("backend", ALL)
def test_invariants(backend, rng):
    z, _ = _data(rng, n=4, p=6, d=10)
    z[2] = z[1]  # a duplicated image: patch distances of the pair are zero
    d = ca.patch_distances(z, backend=backend)
    assert np.all(d >= 0)
    a = ca.cluster_alpha(z, "unsupervised", [0.0, 0.5, 5.0], backend=backend)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-12)
    # Larger tau flattens the weights towards 1/P: max weight is non-increasing in tau.
    assert np.all(a[1].max(-1) >= a[2].max(-1) - 1e-12)
    # Each image's weights favour its most distant patch.
    np.testing.assert_array_equal(a[1].argmax(-1), d.argmax(-1))


def test_huge_values_do_not_overflow(rng):
    # The reproduction's softmax without max subtraction overflows at d / tau > 709.
    d = np.array([[0.0, 1e4, 2e4]])
    a = ca.alpha_from_distances(d, 1.0)
    np.testing.assert_allclose(a, [[0.0, 0.0, 1.0]])
    z = (rng.standard_normal((3, 5, 4)) * 1e3).astype(np.float32)
    assert np.isfinite(ca.cluster_alpha(z, "unsupervised", 0.01, backend="cpu")).all()


# ---------------------------------------------------------------------------- bad input
def test_bad_embeddings():
    with pytest.raises(ValueError, match=r"embeddings must have shape \[N, P, D\]"):
        ca.cluster_alpha(np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="embeddings must have a float32 or float64 dtype"):
        ca.cluster_alpha(np.zeros((3, 4, 2), np.int32))
    with pytest.raises(ValueError, match="embeddings must contain only finite values"):
        ca.cluster_alpha(np.full((3, 4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="N >= 2 images for mode 'unsupervised'"):
        ca.cluster_alpha(np.zeros((1, 4, 2), np.float32))


def test_bad_mode_and_normals():
    z = np.zeros((3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="mode must be one of"):
        ca.cluster_alpha(z, "semi")
    with pytest.raises(ValueError, match="normal_embeddings must be given for mode 'supervised'"):
        ca.cluster_alpha(z, "supervised")
    with pytest.raises(ValueError, match="normal_embeddings must be None for mode 'average'"):
        ca.cluster_alpha(z, "average", normal_embeddings=z)
    with pytest.raises(ValueError, match=r"normal_embeddings must have shape \[M, P', D\] with D == 2"):
        ca.cluster_alpha(z, "supervised", normal_embeddings=np.zeros((2, 4, 3), np.float32))


def test_bad_tau_and_backend():
    z = np.zeros((3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        ca.cluster_alpha(z, tau=-1.0)
    with pytest.raises(ValueError, match="tau must be a number >= 0 or a non-empty list"):
        ca.cluster_alpha(z, tau=[])
    with pytest.raises(TypeError, match="tau must be a number"):
        ca.cluster_alpha(z, tau="2")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        ca.cluster_alpha(z, backend="triton")


def test_bad_train_ratio():
    with pytest.raises(ValueError, match="train_ratio must select at least one normal image"):
        ca.select_normal_images(10, 4, train_ratio=0.2)


def test_bad_alpha_shape():
    with pytest.raises(ValueError, match=r"alpha must have shape \[N, P\] == \(3, 4\)"):
        ca.weighted_embeddings(np.zeros((3, 4, 2), np.float32), np.zeros((3, 5)))
