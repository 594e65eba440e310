"""kcenter_greedy: every backend against the NumPy reference, hand-checked cases, invariants, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ofdb_fast.ops.kcenter_greedy import kcenter_greedy
from ofdb_fast.reference import kcenter_greedy as ref
from ofdb_fast.testing import backend_params

import _cuda_shim

# "cuda_shim*": kcenter_greedy_cuda's source run on the CPU (see _cuda_shim.py), for the tests of
# the kernels' results; the op's argument handling is tested on the real backends only.
SHIM = _cuda_shim.backend_params(*_cuda_shim.BACKENDS)
ALL = backend_params("numpy", "torch", "cpu", "cuda")
COMPILED = backend_params("torch", "cpu", "cuda")


def run(x, backend, **kwargs):
    """Call the op with ``x`` placed where ``backend`` wants it; return NumPy results."""
    if backend in _cuda_shim.BACKENDS:
        return _cuda_shim.kcenter_greedy(x, backend=backend, **kwargs)
    if backend == "cuda":
        import torch

        x = torch.from_numpy(np.ascontiguousarray(x)).cuda()
    out = kcenter_greedy(x, backend=backend, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    outs = tuple(o.cpu().numpy() if hasattr(o, "cpu") else np.asarray(o) for o in outs)
    return outs if isinstance(out, tuple) else outs[0]


def blobs(rng, n, dim, n_blobs=12, spread=50.0, noise=1.0):
    """Gaussian blobs far apart: greedy choices are separated by far more than float32 error."""
    centres = rng.standard_normal((n_blobs, dim)) * spread
    return (centres[rng.integers(0, n_blobs, n)] + noise * rng.standard_normal((n, dim))).astype(np.float32)


def covering_radius(z, chosen):
    """max_j min_{u in chosen} |z_j - z_u| in float64, computed without the op."""
    d = np.sqrt(((z[:, None, :] - z[None, chosen, :]) ** 2).sum(-1))
    return d.min(axis=1).max()


# ---------------------------------------------------------------- reference on hand-made cases
def test_reference_exact_by_hand():
    # Row norms of the distance matrix: sqrt(101), sqrt(82), sqrt(181) -> 2 first; then the scores
    # are min(norm, |x - 10|) = (10, 9, 0) -> 0; radius after {2, 0}: max(0, 1, 0) = 1.
    x = np.array([[0.0], [1.0], [10.0]])
    idx, rad = ref.kcenter_greedy(x, n_select=2, method="exact", proj_dim=None, return_radius=True)
    np.testing.assert_array_equal(idx, [2, 0])
    np.testing.assert_allclose(rad, [10.0, 1.0])


def test_reference_approx_all_starts_by_hand():
    # n_starts = N: the initial score is the mean distance to all points: (11/3, 10/3, 19/3).
    x = np.array([[0.0], [1.0], [10.0]])
    idx = ref.kcenter_greedy(x, n_select=3, n_starts=3, proj_dim=None)
    np.testing.assert_array_equal(idx, [2, 0, 1])


def test_exact_and_approx_differ_as_specified():
    # One starting point s: approx first takes the point farthest from s; exact the largest row norm.
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    for seed in range(4):
        start = int(ref.starting_points(5, 1, seed)[0])
        approx = ref.kcenter_greedy(x, n_select=1, n_starts=1, proj_dim=None, seed=seed)
        assert approx[0] == int(np.argmax(np.abs(x[:, 0] - x[start, 0])))
    exact = ref.kcenter_greedy(x, n_select=1, method="exact", proj_dim=None)
    assert exact[0] == 4


def test_starting_points_distinct_and_seeded():
    a = ref.starting_points(1000, 10, 7)
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, ref.starting_points(1000, 10, 7))
    assert not np.array_equal(a, ref.starting_points(1000, 10, 8))
    np.testing.assert_array_equal(np.sort(ref.starting_points(5, 10, 0)), np.arange(5))


def test_projection_matrix_range():
    w = ref.projection_matrix(300, 128, 3)
    assert w.shape == (300, 128) and w.dtype == np.float32
    bound = 1.0 / np.sqrt(300)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    np.testing.assert_allclose(w.mean(), 0.0, atol=bound / 50)


def test_exact_initial_score_matches_identity(rng):
    # The compiled backends use sum_j |z_i - z_j|^2 = N |z_i - mu|^2 + sum_j |z_j - mu|^2.
    z = rng.standard_normal((50, 7))
    mu = z.mean(0)
    q = ((z - mu) ** 2).sum(1)
    np.testing.assert_allclose(ref.exact_initial_score(z), np.sqrt(50 * q + q.sum()), rtol=1e-12)


# ---------------------------------------------------------------- every backend vs numpy
@pytest.mark.parametrize("backend", COMPILED + SHIM)
@pytest.mark.parametrize(
    "n,dim,proj_dim,method",
    [
        (300, 37, 128, "approx"),
        (257, 128, 128, "approx"),  # D == proj_dim: no projection
        (200, 37, None, "exact"),  # projection disabled, width not a multiple of 16
        (150, 300, 128, "exact"),
        (180, 33, 20, "approx"),  # projected width 20: a 16-lane block plus a tail
        (9000, 20, 0, "approx"),  # enough rows for several OpenMP threads
    ],
)
def test_indices_match_numpy_on_separated_data(backend, n, dim, proj_dim, method, rng):
    x = blobs(rng, n, dim)
    k = min(40, n)
    want = ref.kcenter_greedy(x, n_select=k, method=method, proj_dim=proj_dim, seed=5)
    got = run(x, backend, n_select=k, method=method, proj_dim=proj_dim, seed=5)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", COMPILED + SHIM)
@pytest.mark.parametrize("method", ["approx", "exact"])
def test_radius_matches_numpy_on_random_data(backend, method, rng):
    x = rng.standard_normal((400, 50)).astype(np.float32)
    want_idx, want = ref.kcenter_greedy(x, n_select=60, method=method, seed=1, return_radius=True)
    got_idx, got = run(x, backend, n_select=60, method=method, seed=1, return_radius=True)
    assert got.dtype == np.float64 and got.shape == (60,)
    np.testing.assert_allclose(got, want, rtol=1e-4)


# ---------------------------------------------------------------- ties and edge cases
@pytest.mark.parametrize("backend", ALL + SHIM)
def test_duplicates_lowest_index_wins(backend):
    # Exact distances in float32 too: row norms all sqrt(50) -> 0; then (0, 0, 5, 5) -> 2;
    # then everything is covered (radius 0) and the lowest index, 0, wins again.
    x = np.array([[0, 0], [0, 0], [5, 0], [5, 0]], dtype=np.float32)
    idx, rad = run(x, backend, n_select=4, method="exact", proj_dim=None, return_radius=True)
    np.testing.assert_array_equal(idx, [0, 2, 0, 0])
    np.testing.assert_array_equal(rad, [5.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("backend", backend_params("cpu", "cuda") + SHIM)
def test_ties_across_thread_blocks(backend):
    # 9000 rows: the cpu loop splits them over OpenMP threads. Rows 100 and 8000 are equal and far,
    # the rest are 0: exact picks 100 (tie with 8000, lowest wins), then row 0 (all zeros tie at 10),
    # then everything is covered and row 0 wins again.
    x = np.zeros((9000, 2), np.float32)
    x[[100, 8000], 0] = 10.0
    idx, rad = run(x, backend, n_select=3, method="exact", proj_dim=None, return_radius=True)
    np.testing.assert_array_equal(idx, [100, 0, 0])
    np.testing.assert_array_equal(rad, [10.0, 0.0, 0.0])


@pytest.mark.parametrize("backend", ALL + SHIM)
def test_all_equal_points(backend):
    x = np.full((7, 5), 3.0, dtype=np.float32)
    idx, rad = run(x, backend, n_select=3, proj_dim=None, return_radius=True)
    np.testing.assert_array_equal(idx, [0, 0, 0])
    np.testing.assert_array_equal(rad, [0.0, 0.0, 0.0])
    idx, rad = run(x, backend, n_select=3, return_radius=True)  # with the random projection
    if backend == "torch":
        # torch projects with the BLAS, whose GEMM kernels may sum a row in another order
        # depending on its position (seen with torch 2.14 on AMD EPYC: rows 4-6 of 7 differ from
        # rows 0-3 in the last bits), so equal rows become near-ties: any index, radius ~0.
        assert ((0 <= idx) & (idx < 7)).all() and (rad <= 1e-5).all(), (idx, rad)
    else:
        np.testing.assert_array_equal(idx, [0, 0, 0])
        np.testing.assert_array_equal(rad, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("backend", ALL + SHIM)
def test_n_select_zero_one_all(backend, rng):
    x = blobs(rng, 37, 53, n_blobs=37)
    empty = run(x, backend, n_select=0)
    assert empty.shape == (0,) and empty.dtype == np.int64
    one = run(x, backend, n_select=1, seed=2)
    np.testing.assert_array_equal(one, ref.kcenter_greedy(x, n_select=1, seed=2))
    every, rad = run(x, backend, n_select=37, return_radius=True)
    np.testing.assert_array_equal(np.sort(every), np.arange(37))
    assert rad[-1] == 0.0 and np.all(rad[:-1] > 0)


@pytest.mark.parametrize("backend", ALL + SHIM)
def test_single_point(backend):
    x = np.array([[1.5, -2.0, 3.0]], dtype=np.float32)
    idx, rad = run(x, backend, n_select=1, return_radius=True)
    np.testing.assert_array_equal(idx, [0])
    np.testing.assert_array_equal(rad, [0.0])
    assert run(x, backend, percentage=0.5).shape == (0,)  # int(1 * 0.5) == 0


@pytest.mark.parametrize("backend", ALL)
def test_percentage_sets_count(backend, rng):
    x = rng.standard_normal((205, 16)).astype(np.float32)
    assert run(x, backend, percentage=0.1).shape == (20,)
    assert run(x, backend, percentage=1.0, proj_dim=None).shape == (205,)


@pytest.mark.parametrize("backend", ALL)
def test_empty_input_with_zero_select(backend):
    out = run(np.zeros((0, 8), np.float32), backend, n_select=0)
    assert out.shape == (0,) and out.dtype == np.int64


# ---------------------------------------------------------------- invariants (no oracle)
@pytest.mark.parametrize("backend", ALL + SHIM)
@pytest.mark.parametrize("method", ["approx", "exact"])
def test_invariants(backend, method, rng):
    x = rng.standard_normal((300, 24)).astype(np.float32)
    x[100:110] = x[0]  # some duplicates
    idx, rad = run(x, backend, n_select=120, method=method, proj_dim=None, return_radius=True)
    positive = rad > 0
    assert len(set(idx[positive].tolist())) == positive.sum()  # unique while radius > 0
    assert np.all(np.diff(rad) <= 0)  # non-increasing
    z = x.astype(np.float64)
    for t in (0, 1, 17, 119):
        # float32 backends against this float64 check: worst relative error seen 2e-7 (x86 CPU)
        np.testing.assert_allclose(rad[t], covering_radius(z, idx[: t + 1]), rtol=1e-5)


# ---------------------------------------------------------------- determinism, layout, dtypes
@pytest.mark.parametrize("backend", ALL + SHIM)
def test_deterministic_by_seed(backend, rng):
    x = rng.standard_normal((120, 40)).astype(np.float32)
    a = run(x, backend, n_select=20, seed=11)
    np.testing.assert_array_equal(a, run(x, backend, n_select=20, seed=11))
    others = [run(x, backend, n_select=20, seed=s) for s in (12, 13, 14)]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("backend", ALL)
def test_non_contiguous_input(backend, rng):
    base = blobs(rng, 90, 70)
    view = base[::2, ::2]  # strided rows and columns
    want = ref.kcenter_greedy(np.ascontiguousarray(view), n_select=15, seed=3)
    np.testing.assert_array_equal(run(view, backend, n_select=15, seed=3), want)
    t_view = np.ascontiguousarray(base.T).T  # Fortran-ordered
    np.testing.assert_array_equal(
        run(t_view, backend, n_select=15, seed=3), ref.kcenter_greedy(base, n_select=15, seed=3)
    )


@pytest.mark.parametrize("backend", ALL + SHIM)
def test_float64_input(backend, rng):
    x = blobs(rng, 150, 45).astype(np.float64)
    want = ref.kcenter_greedy(x, n_select=25, method="exact", seed=4)
    np.testing.assert_array_equal(run(x, backend, n_select=25, method="exact", seed=4), want)


@pytest.mark.parametrize("backend", ALL + SHIM)
def test_huge_values(backend, rng):
    # 1e15 * blobs: squared distances ~1e33 still fit in float32.
    x = blobs(rng, 80, 10) * np.float32(1e15)
    want = ref.kcenter_greedy(x, n_select=12, proj_dim=None)
    np.testing.assert_array_equal(run(x, backend, n_select=12, proj_dim=None), want)


@pytest.mark.parametrize("backend", backend_params("numpy", "torch", "cpu"))
def test_returns_caller_array_type(backend, rng):
    import torch

    x = rng.standard_normal((40, 6)).astype(np.float32)
    out = kcenter_greedy(torch.from_numpy(x), n_select=4, backend=backend, return_radius=True)
    assert isinstance(out[0], torch.Tensor) and out[0].dtype == torch.int64
    assert isinstance(out[1], torch.Tensor) and out[1].dtype == torch.float64
    assert isinstance(kcenter_greedy(x, n_select=4, backend=backend), np.ndarray)


@pytest.mark.cuda
def test_cuda_matches_cpu_same_seed(rng):
    import torch

    x = blobs(rng, 3000, 200, n_blobs=40)
    idx_c, rad_c = kcenter_greedy(x, n_select=300, seed=9, backend="cpu", return_radius=True)
    idx_g, rad_g = kcenter_greedy(torch.from_numpy(x).cuda(), n_select=300, seed=9, backend="cuda", return_radius=True)
    assert idx_g.is_cuda and idx_g.dtype == torch.int64 and rad_g.dtype == torch.float64
    np.testing.assert_array_equal(idx_g.cpu().numpy(), idx_c)
    np.testing.assert_allclose(rad_g.cpu().numpy(), rad_c, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_input_rejected_by_cpu_backends():
    import torch

    x = torch.zeros((4, 3), device="cuda")
    for backend in ("numpy", "cpu"):
        with pytest.raises(ValueError, match="cannot take inputs on the cuda device"):
            kcenter_greedy(x, n_select=1, backend=backend)


# ---------------------------------------------------------------- bad input
def test_bad_ndim():
    with pytest.raises(ValueError, match=r"features must have shape \[N, D\]"):
        kcenter_greedy(np.zeros(5, np.float32), n_select=1)


def test_bad_dtype():
    with pytest.raises(TypeError, match="features must have a floating-point"):
        kcenter_greedy(np.zeros((5, 2), np.int32), n_select=1)
    with pytest.raises(TypeError, match="features must have a float32 or float64 dtype"):
        kcenter_greedy(np.zeros((5, 2), np.float16), n_select=1)


@pytest.mark.parametrize("percentage", [0.0, -0.1, 1.5])
def test_bad_percentage(percentage):
    with pytest.raises(ValueError, match=r"percentage must be in \(0, 1\]"):
        kcenter_greedy(np.zeros((5, 2), np.float32), percentage=percentage)


def test_n_select_too_large():
    with pytest.raises(ValueError, match="n_select must be <= N = 5"):
        kcenter_greedy(np.zeros((5, 2), np.float32), n_select=6)


def test_empty_features_need_zero_select():
    with pytest.raises(ValueError, match="features must have at least one row"):
        kcenter_greedy(np.zeros((0, 2), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(bad):
    x = np.zeros((5, 2), np.float32)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="features must contain only finite values"):
        kcenter_greedy(x, n_select=1)


def test_bad_method_and_options():
    x = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="method must be one of"):
        kcenter_greedy(x, n_select=1, method="kmeans")
    with pytest.raises(ValueError, match="n_starts must be >= 1"):
        kcenter_greedy(x, n_select=1, n_starts=0)
    with pytest.raises(ValueError, match="proj_dim must be >= 0"):
        kcenter_greedy(x, n_select=1, proj_dim=-3)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        kcenter_greedy(x, n_select=1, backend="triton")


@pytest.mark.parametrize("backend", COMPILED)
def test_float64_beyond_float32_range(backend):
    x = np.zeros((5, 2))
    x[0, 0] = -1e300
    if backend == "cuda":
        import torch

        x = torch.from_numpy(x).cuda()
    with pytest.raises(ValueError, match="features must fit in float32"):
        kcenter_greedy(x, n_select=1, backend=backend)
