"""patch_aggregate: numpy (float64 reference) vs cpu (C++) vs torch (the reference's code path)
vs triton, invariants, and bad inputs. Shapes are tiny: triton runs under TRITON_INTERPRET=1 in CI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ofdb_fast.ops.patch_aggregate import patch_aggregate
from ofdb_fast.reference.patch_aggregate import adaptive_bins, bilinear_taps, unfold
from ofdb_fast.reference.patch_aggregate import patch_aggregate as aggregate_reference
from ofdb_fast.testing import backend_params

BACKENDS = backend_params("numpy", "cpu", "torch", "triton")

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


# Triton runs where its inputs live: on the GPU when there is one (conftest sets TRITON_INTERPRET=1
# only without a GPU), so there the triton cases move their inputs to it and bring the result back.
TRITON_ON_GPU = os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and torch.cuda.is_available()


def _aggregate(features, backend, **kwargs):
    if backend != "triton" or not TRITON_ON_GPU:
        return patch_aggregate(features, backend=backend, **kwargs)
    was_numpy = isinstance(features[0], np.ndarray)
    out = patch_aggregate([(torch.from_numpy(f) if was_numpy else f).cuda() for f in features], backend=backend,
                          **kwargs)
    assert out.is_cuda
    return out.cpu().numpy() if was_numpy else out.cpu()


def _features(rng, shapes, n_batch=1, dtype=np.float32):
    return [rng.standard_normal((n_batch, *shape)).astype(dtype) for shape in shapes]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(backend, case, rng):
    shapes, pretrain, target = CASES[case]
    features = _features(rng, shapes)
    dims = dict(pretrain_embed_dimension=pretrain, target_embed_dimension=target)
    out = _aggregate(features, backend=backend, **dims)
    expected = aggregate_reference([f.astype(np.float64) for f in features], **dims)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (shapes[0][1] * shapes[0][2], target)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_size_one_and_five(backend, rng):
    features = _features(rng, [(3, 5, 4), (4, 3, 2)])
    for patch_size in (1, 5):
        dims = dict(patch_size=patch_size, pretrain_embed_dimension=12, target_embed_dimension=6)
        out = _aggregate(features, backend=backend, **dims)
        np.testing.assert_allclose(out, aggregate_reference(features, **dims), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_in_torch_out_float64_non_contiguous(backend, rng):
    base = _features(rng, [(8, 6, 6), (16, 3, 3)], dtype=np.float64)
    # channels-last storage: strided views of the same values
    tensors = [torch.from_numpy(f).to(memory_format=torch.channels_last) for f in base]
    assert not tensors[0].is_contiguous()
    out = _aggregate(tensors, pretrain_embed_dimension=16, target_embed_dimension=8, backend=backend)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    expected = aggregate_reference(base, pretrain_embed_dimension=16, target_embed_dimension=8)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_independence(backend, rng):
    features = _features(rng, [(8, 5, 4), (16, 3, 2)], n_batch=3)
    dims = dict(pretrain_embed_dimension=16, target_embed_dimension=8)
    whole = _aggregate(features, backend=backend, **dims)
    per_image = [_aggregate([f[i:i + 1] for f in features], backend=backend, **dims) for i in range(3)]
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
    out = _aggregate(features, pretrain_embed_dimension=12, target_embed_dimension=6, backend=backend)
    out = out.reshape(8, 8, 6)
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


@pytest.mark.parametrize("case", list(CASES))
def test_cpu_equals_reference_to_the_last_bit_or_one_ulp(case, rng):
    """cpu computes in float64 like the reference and rounds once; only the order of its sums
    differs (pool, then interpolate), so results agree to one float32 ulp at most."""
    shapes, pretrain, target = CASES[case]
    features = _features(rng, shapes, n_batch=2)
    dims = dict(pretrain_embed_dimension=pretrain, target_embed_dimension=target)
    out = patch_aggregate(features, backend="cpu", **dims)
    expected = aggregate_reference(features, **dims)
    ulp = np.spacing(np.abs(expected).astype(np.float32))
    assert (np.abs(out - expected) <= ulp).all()


def test_cpu_dtypes_and_magnitudes(rng):
    base = _features(rng, [(6, 5, 5), (9, 3, 3)], n_batch=2, dtype=np.float64)
    dims = dict(pretrain_embed_dimension=11, target_embed_dimension=7)
    # Huge values: float64 inside, no overflow in the sums (float32 would overflow at 1e38 * 9).
    huge = [f * 1e37 for f in base]
    np.testing.assert_allclose(patch_aggregate(huge, backend="cpu", **dims),
                               aggregate_reference(huge, **dims), rtol=1e-6)
    # float64 input is used as float64, not rounded to float32 first: the mean of 1e8 + 0.3
    # and -1e8 is 0.15 (1e8 + 0.3 would round to 1e8 in float32, giving 0); also when another
    # layer is float32.
    cancel = np.array([1e8 + 0.3, -1e8]).reshape(1, 2, 1, 1)
    one = dict(patch_size=1, pretrain_embed_dimension=1, target_embed_dimension=1)
    assert float(patch_aggregate([cancel], backend="cpu", **one)[0, 0]) == np.float32(0.15)
    mixed = patch_aggregate([cancel, np.zeros((1, 1, 1, 1), np.float32)], backend="cpu", patch_size=1,
                            pretrain_embed_dimension=1, target_embed_dimension=2)
    np.testing.assert_array_equal(mixed, [[np.float32(0.15), 0.0]])
    # Half precision torch tensors are widened exactly.
    for dt in (torch.float16, torch.bfloat16):
        t = [torch.from_numpy(f).to(dt) for f in base]
        out = patch_aggregate(t, backend="cpu", **dims)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        np.testing.assert_array_equal(out.numpy(), patch_aggregate([x.float() for x in t], backend="cpu", **dims).numpy())


def test_cpu_one_pixel_maps(rng):
    features = _features(rng, [(3, 1, 1), (5, 1, 1)])
    dims = dict(pretrain_embed_dimension=4, target_embed_dimension=3)
    np.testing.assert_allclose(patch_aggregate(features, backend="cpu", **dims),
                               aggregate_reference(features, **dims), rtol=1e-6)


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
    out = _aggregate([np.zeros((0, 2, 3, 3), np.float32)], pretrain_embed_dimension=4,
                     target_embed_dimension=2, backend=backend)
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
        out = _aggregate(cuda, backend=backend, **dims)
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


_AOT_SCRIPT = r"""
import os
import subprocess

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ofdb_fast.triton.patch_aggregate import _pool_taps_kernel, _upsample_add_kernel, launch_config

cfg = launch_config("cuda")
ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
POOL = (["x_ptr", "out_ptr", "tap_ch_ptr", "tap_off_ptr", "tap_w_ptr", "n_t", "out_stride", "col0", "n_channels",
         "height", "width", "n_taps"], ["*fp32", "*fp32", "*i32", "*i32", "*fp32"] + ["i32"] * 7)
UP = (["src_ptr", "out_ptr", "ys0_ptr", "ys1_ptr", "wy0_ptr", "wy1_ptr", "xs0_ptr", "xs1_ptr", "wx0_ptr", "wx1_ptr",
       "n_rows", "n_t", "t_lo", "n_out", "height", "width", "grid_h", "grid_w"],
      ["*fp32", "*fp32", "*i32", "*i32", "*fp32", "*fp32", "*i32", "*i32", "*fp32", "*fp32"] + ["i32"] * 8)
variants = [(_pool_taps_kernel, POOL, dict(PATCH=p, PAD=(p - 1) // 2, ACCUMULATE=a, BLOCK_P=cfg["BLOCK_P"],
                                           BLOCK_T=cfg["BLOCK_T"]), cfg["POOL_WARPS"])
            for p in (1, 3, 5) for a in (False, True)]
variants += [(_upsample_add_kernel, UP, dict(ACCUMULATE=a, BLOCK_N=cfg["BLOCK_N"], BLOCK_T=cfg["BLOCK_UT"]),
              cfg["UP_WARPS"]) for a in (False, True)]
for i, (fn, (names, types), consts, warps) in enumerate(variants):
    sig = dict(zip(names, types))
    sig.update({name: "constexpr" for name in consts})
    kernel = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    ptx = kernel.asm["ptx"]
    spills = "no-ptxas"
    if os.path.exists(ptxas):
        path = os.path.join(os.environ["TRITON_CACHE_DIR"], f"k{i}.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        target = "sm_90a" if ".target sm_90a" in ptx else "sm_90"
        info = subprocess.run([ptxas, f"-arch={target}", "-v", path, "-o", os.devnull], capture_output=True,
                              text=True, check=True).stderr
        spills = "spills" if "0 bytes spill stores" not in info else "no-spills"
    print(fn.__name__, "ld.global" in ptx, spills)
"""


def test_kernel_compiles_for_hopper(tmp_path):
    """The compiled (not interpreted) kernels build for sm_90 without a GPU, for every constexpr
    branch (patch sizes, accumulate or not) at the CUDA block sizes, and (where Triton ships
    ptxas) without register spills: the block sizes were chosen for that (launch_config)."""
    import os
    import pathlib
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(__file__).parents[2] / "python"), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.split("\n")[:-1]
    assert len(lines) == 8, res.stdout
    assert all(line.split()[1] == "True" for line in lines), res.stdout
    assert [line.split()[0] for line in lines] == ["_pool_taps_kernel"] * 6 + ["_upsample_add_kernel"] * 2
    assert not any(line.endswith(" spills") for line in lines), res.stdout
