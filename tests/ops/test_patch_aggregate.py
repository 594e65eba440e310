"""patch_aggregate: numpy (float64 reference) vs torch (the reference's code path) vs triton,
invariants, and bad inputs. Shapes are tiny: triton runs under TRITON_INTERPRET=1 in CI; with a
GPU and no TRITON_INTERPRET its inputs go to CUDA (``_on``) and the compiled kernel runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ofdb_fast.ops.patch_aggregate import patch_aggregate
from ofdb_fast.reference.patch_aggregate import adaptive_bins, bilinear_taps, unfold
from ofdb_fast.reference.patch_aggregate import patch_aggregate as aggregate_reference
from ofdb_fast.testing import backend_params, device_for, to_device, to_host

BACKENDS = backend_params("numpy", "torch", "triton")

# (layer shapes [C, H, W] with layer 0 first, pretrain dim, target dim)
CASES = {
    "single_layer": ([(8, 6, 6)], 16, 8),
    "two_layers": ([(8, 6, 6), (16, 3, 3)], 16, 8),
    "three_layers": ([(8, 6, 6), (16, 3, 3), (4, 2, 2)], 16, 8),
    "odd_grids": ([(8, 7, 5), (16, 4, 3)], 16, 8),
    "bins_not_divisible": ([(5, 6, 6), (7, 3, 3)], 13, 7),  # C*9 = 45, 63; 26 -> 7
    "target_above_input": ([(1, 4, 4), (2, 3, 3)], 16, 40),  # 9 -> 16 and 32 -> 40 repeat
    "deeper_grid_larger": ([(3, 4, 5), (2, 6, 7)], 8, 8),  # bilinear downsampling
    "same_grid": ([(4, 5, 5), (3, 5, 5)], 10, 6),
}


def _features(rng, shapes, n_batch=1, dtype=np.float32):
    return [rng.standard_normal((n_batch, *shape)).astype(dtype) for shape in shapes]


def _on(backend, features):
    """The features where ``backend`` runs (unchanged on the CPU)."""
    return [to_device(f, device_for(backend)) for f in features]


def _back(backend, out):
    """``out`` as the caller gets it on the CPU: NumPy in, NumPy out; on CUDA a CUDA tensor,
    checked, then copied to the host."""
    if device_for(backend) == "cpu":
        return out
    assert isinstance(out, torch.Tensor) and out.is_cuda
    return to_host(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(backend, case, rng):
    shapes, pretrain, target = CASES[case]
    features = _features(rng, shapes)
    dims = dict(pretrain_embed_dimension=pretrain, target_embed_dimension=target)
    out = _back(backend, patch_aggregate(_on(backend, features), backend=backend, **dims))
    expected = aggregate_reference([f.astype(np.float64) for f in features], **dims)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (shapes[0][1] * shapes[0][2], target)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_size_one_and_five(backend, rng):
    features = _features(rng, [(3, 5, 4), (4, 3, 2)])
    for patch_size in (1, 5):
        dims = dict(patch_size=patch_size, pretrain_embed_dimension=12, target_embed_dimension=6)
        out = _back(backend, patch_aggregate(_on(backend, features), backend=backend, **dims))
        np.testing.assert_allclose(out, aggregate_reference(features, **dims), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_in_torch_out_float64_non_contiguous(backend, rng):
    base = _features(rng, [(8, 6, 6), (16, 3, 3)], dtype=np.float64)
    # channels-last storage: strided views of the same values
    device = device_for(backend)
    tensors = [torch.from_numpy(f).to(device=device, memory_format=torch.channels_last) for f in base]
    assert not tensors[0].is_contiguous()
    out = patch_aggregate(tensors, pretrain_embed_dimension=16, target_embed_dimension=8, backend=backend)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == tensors[0].device
    expected = aggregate_reference(base, pretrain_embed_dimension=16, target_embed_dimension=8)
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_independence(backend, rng):
    features = _on(backend, _features(rng, [(8, 5, 4), (16, 3, 2)], n_batch=3))
    dims = dict(pretrain_embed_dimension=16, target_embed_dimension=8)
    whole = _back(backend, patch_aggregate(features, backend=backend, **dims))
    per_image = [_back(backend, patch_aggregate([f[i:i + 1] for f in features], backend=backend, **dims))
                 for i in range(3)]
    np.testing.assert_allclose(whole, np.concatenate(per_image), rtol=1e-6, atol=1e-7)


def _interior_rows(n_in: int, n_out: int, pad: int, resized: bool) -> np.ndarray:
    """Output rows whose (bilinear) source patches never reach the zero padding."""
    if not resized:
        idx = np.arange(n_out)
        return (idx >= pad) & (idx <= n_in - 1 - pad)
    i0, i1, w0, w1 = bilinear_taps(n_in, n_out)
    ok0 = (w0 == 0) | ((i0 >= pad) & (i0 <= n_in - 1 - pad))
    ok1 = (w1 == 0) | ((i1 >= pad) & (i1 <= n_in - 1 - pad))
    return ok0 & ok1


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_map_stays_constant_inside(backend):
    value = 2.5
    shapes = [(4, 8, 8), (6, 4, 4)]
    features = [np.full((1, *shape), value, np.float32) for shape in shapes]
    out = patch_aggregate(_on(backend, features), pretrain_embed_dimension=12, target_embed_dimension=6,
                          backend=backend)
    out = _back(backend, out).reshape(8, 8, 6)
    inside_y = np.ones(8, bool)
    inside_x = np.ones(8, bool)
    for layer, (_, h, w) in enumerate(shapes):
        inside_y &= _interior_rows(h, 8, 1, layer > 0)
        inside_x &= _interior_rows(w, 8, 1, layer > 0)
    inside = inside_y[:, None] & inside_x[None, :]
    assert inside.sum() > 0 and (~inside).sum() > 0
    np.testing.assert_allclose(out[inside], value, rtol=1e-6)
    # Zero padding only lowers a positive constant, and every corner patch sees padding.
    assert (out <= value * (1 + 1e-6)).all()
    assert (out[0, 0] < value).any() and (out[-1, -1] < value).any()


def test_reference_hand_computed():
    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]  # overlapping bins
    assert adaptive_bins(2, 4) == [(0, 1), (0, 1), (1, 2), (1, 2)]  # repeats
    i0, i1, w0, w1 = bilinear_taps(2, 4)
    assert i0.tolist() == [0, 0, 0, 1] and i1.tolist() == [1, 1, 1, 1]
    assert w1.tolist() == [0.0, 0.25, 0.75, 0.25]
    patches = unfold(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 3)  # [1, 1, 3, 3, 2, 2]
    assert patches[0, 0, :, :, 0, 0].ravel().tolist() == [0, 0, 0, 0, 1, 2, 0, 3, 4]
    # One layer, one channel, 2x2 map: patch (0, 0) = [0,0,0,0,1,2,0,3,4]; pool 9 -> 3 gives
    # [0, 1, 7/3]; pool 3 -> 2 gives bins [0, 2), [1, 3): [0.5, 5/3].
    out = aggregate_reference([np.array([[[[1.0, 2.0], [3.0, 4.0]]]])], pretrain_embed_dimension=3,
                              target_embed_dimension=2)
    np.testing.assert_allclose(out[0], [0.5, 5 / 3], rtol=1e-7)


def test_tap_tables_are_averages():
    # Every output is a mean of means: its tap weights over all layers sum to 1.
    pytest.importorskip("triton")
    from ofdb_fast.triton.patch_aggregate import tap_tables

    for channels, pretrain, target in [((512, 1024), 1024, 1024), ((5, 7, 1), 13, 40), ((2,), 30, 7)]:
        totals = np.zeros(target)
        for t_lo, t_hi, channel, offset, weight in tap_tables(channels, 3, pretrain, target):
            totals[t_lo:t_hi] += weight.astype(np.float64).sum(axis=1)
            assert (offset < 9).all() and (weight >= 0).all()
        np.testing.assert_allclose(totals, 1.0, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    out = patch_aggregate(_on(backend, [np.zeros((0, 2, 3, 3), np.float32)]), pretrain_embed_dimension=4,
                          target_embed_dimension=2, backend=backend)
    out = _back(backend, out)
    assert out.shape == (0, 2) and out.dtype == np.float32


# ----------------------------------------------------------------------------- bad inputs
def test_bad_empty_list():
    with pytest.raises(ValueError, match="features must be a non-empty list"):
        patch_aggregate([])


def test_bad_not_a_list():
    with pytest.raises(TypeError, match="features must be a list"):
        patch_aggregate(np.zeros((1, 2, 3, 3), np.float32))


def test_bad_batch_mismatch():
    with pytest.raises(ValueError, match=r"features\[1\] must have the batch size of features\[0\] \(2\)"):
        patch_aggregate([np.zeros((2, 2, 4, 4), np.float32), np.zeros((3, 2, 2, 2), np.float32)])


def test_bad_ndim():
    with pytest.raises(ValueError, match=r"features\[0\] must have shape \[B, C, H, W\], got \(2, 4, 4\)"):
        patch_aggregate([np.zeros((2, 4, 4), np.float32)])


def test_bad_dtype():
    with pytest.raises(TypeError, match=r"features\[0\] must have a floating-point dtype, got int32"):
        patch_aggregate([np.zeros((1, 2, 4, 4), np.int32)])


def test_bad_patch_size():
    with pytest.raises(ValueError, match="patch_size must be odd"):
        patch_aggregate([np.zeros((1, 2, 4, 4), np.float32)], patch_size=2)
    with pytest.raises(ValueError, match="patch_size must be >= 1, got 0"):
        patch_aggregate([np.zeros((1, 2, 4, 4), np.float32)], patch_size=0)


def test_bad_dims():
    with pytest.raises(ValueError, match="target_embed_dimension must be >= 1, got 0"):
        patch_aggregate([np.zeros((1, 2, 4, 4), np.float32)], target_embed_dimension=0)


def test_bad_mixed_types():
    with pytest.raises(TypeError, match=r"features\[1\] must be the same array type as features\[0\]"):
        patch_aggregate([np.zeros((1, 2, 4, 4), np.float32), torch.zeros(1, 2, 2, 2)])


@pytest.mark.cuda
def test_bad_device_mismatch():
    with pytest.raises(ValueError, match=r"features\[1\] must be on the same device as features\[0\]"):
        patch_aggregate([torch.zeros(1, 2, 4, 4, device="cuda"), torch.zeros(1, 2, 2, 2)])


@pytest.mark.cuda
def test_cuda_triton_and_torch_match_reference(rng):
    features = _features(rng, [(64, 14, 14), (128, 7, 7)], n_batch=2)
    dims = dict(pretrain_embed_dimension=96, target_embed_dimension=80)
    expected = aggregate_reference(features, **dims)
    cuda = [torch.from_numpy(f).cuda() for f in features]
    for backend in ("triton", "torch"):
        out = patch_aggregate(cuda, backend=backend, **dims)
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
