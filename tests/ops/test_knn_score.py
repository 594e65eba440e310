"""knn_score: every backend against the float64 NumPy reference, edge cases, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ofdb_fast.ops.knn_score import knn_score
from ofdb_fast.reference.knn_score import knn_score as knn_reference
from ofdb_fast.testing import backend_params

BACKENDS = backend_params("numpy", "cpu", "torch", "faiss")


def _expansion_atol(queries, bank):
    """Absolute error allowed for the float32 expansion |q|^2 - 2 q.b + |b|^2: a few ulps of
    the norms, per query row. Measured worst: 1.6e-7 * (|q|^2 + max |b|^2) (torch, ties test,
    2-core Xeon); 1e-6 leaves margin for other BLAS summation orders."""
    q_norm = (queries.astype(np.float64) ** 2).sum(1)
    b_norm = (bank.astype(np.float64) ** 2).sum(1).max()
    return 1e-6 * (q_norm + b_norm)[:, None]


def _assert_close(actual, expected, rtol, atol):
    bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    assert not bad.any(), f"{bad.sum()} mismatches, worst {np.abs(actual - expected).max()}"


def _assert_matches_reference(dist, idx, queries, bank, k, rtol=1e-5, atol=None):
    """Distances within float32 tolerance of the reference; indices equal wherever the
    reference's neighbour distances are separated by more than that tolerance (elsewhere
    both orders are correct answers)."""
    ref_d, ref_i = knn_reference(queries, bank, k, return_indices=True)
    dist, idx = np.asarray(dist), np.asarray(idx)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert dist.shape == idx.shape == (len(queries), k)
    atol = _expansion_atol(queries, bank) if atol is None else atol
    _assert_close(dist, ref_d, rtol, atol)
    # The distances of the returned indices, recomputed exactly, must equal the returned ones.
    exact = ((queries[:, None, :].astype(np.float64) - bank[idx].astype(np.float64)) ** 2).sum(-1)
    _assert_close(dist, exact, rtol, atol)
    full = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    ranked = np.sort(full, axis=1)
    tol = atol + rtol * ranked
    # Rank j is unambiguous when its distance is clear of both neighbouring ranks.
    gaps = np.diff(ranked, axis=1) > tol[:, 1:]
    clear = np.ones(ranked.shape, dtype=bool)
    clear[:, 1:] &= gaps
    clear[:, :-1] &= gaps
    clear = clear[:, :k]
    np.testing.assert_array_equal(idx[clear], ref_i[clear])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "n_queries, n_bank, dim, k",
    [(37, 53, 77, 1), (37, 53, 77, 5), (9, 13, 33, 13), (1, 20, 16, 3), (17, 1, 5, 1), (130, 300, 96, 4)],
)
def test_matches_reference(backend, n_queries, n_bank, dim, k, rng):
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    dist, idx = knn_score(queries, bank, k, return_indices=True, backend=backend)
    _assert_matches_reference(dist, idx, queries, bank, k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_and_torch_in_torch_out(backend, rng):
    queries = torch.from_numpy(rng.standard_normal((21, 19)))
    bank = torch.from_numpy(rng.standard_normal((40, 19)))
    dist, idx = knn_score(queries, bank, 3, return_indices=True, backend=backend)
    assert isinstance(dist, torch.Tensor) and isinstance(idx, torch.Tensor)
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64
    _assert_matches_reference(dist.numpy(), idx.numpy(), queries.numpy(), bank.numpy(), 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_base", [6, 67])  # 67 * 4 rows span several cpu bank blocks
def test_ties_lowest_index_first(backend, n_base, rng):
    base = rng.standard_normal((n_base, 35)).astype(np.float32)
    bank = np.concatenate([base, base[::-1], base, base], axis=0)  # every row 4 times
    queries = np.concatenate([base[:3], rng.standard_normal((30, 35)).astype(np.float32)])
    dist, idx = knn_score(queries, bank, 6, return_indices=True, backend=backend)
    ref_d, ref_i = knn_reference(queries, bank, 6, return_indices=True)
    np.testing.assert_array_equal(idx, ref_i)
    _assert_close(dist, ref_d, 1e-5, _expansion_atol(queries, bank))
    # A query equal to bank row r: its 4 copies come first, in increasing index order.
    row = 1
    copies = np.flatnonzero((bank == base[row]).all(axis=1))
    np.testing.assert_array_equal(idx[row, :4], copies)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_equals_m_is_a_full_sort(backend, rng):
    queries = rng.standard_normal((5, 10)).astype(np.float32)
    bank = rng.standard_normal((12, 10)).astype(np.float32)
    dist, idx = knn_score(queries, bank, 12, return_indices=True, backend=backend)
    assert (np.sort(idx, axis=1) == np.arange(12)).all()
    assert (np.diff(dist, axis=1) >= 0).all()
    _assert_matches_reference(dist, idx, queries, bank, 12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_values(backend, rng):
    queries = (1e4 * rng.standard_normal((23, 41))).astype(np.float32)
    bank = (1e4 * rng.standard_normal((31, 41))).astype(np.float32)
    dist, idx = knn_score(queries, bank, 2, return_indices=True, backend=backend)
    # The float32 expansion loses ~ulp(|q|^2 + |b|^2) absolute; the distances here are of the
    # same order as the norms, so a relative tolerance holds (worst seen over 20 draws:
    # 3.5e-7 relative, torch; cpu 3.1e-7, faiss 1.8e-7; 2-core Xeon).
    _assert_matches_reference(dist, idx, queries, bank, 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend, rng):
    queries = rng.standard_normal((30, 24)).astype(np.float32).T  # [24, 30] strided view
    bank = rng.standard_normal((40, 60)).astype(np.float32)[:, ::2]  # [40, 30]
    dist, idx = knn_score(queries, bank, 3, return_indices=True, backend=backend)
    _assert_matches_reference(dist, idx, np.ascontiguousarray(queries), np.ascontiguousarray(bank), 3)
    tdist = knn_score(torch.from_numpy(queries), torch.from_numpy(bank), 3, backend=backend)
    np.testing.assert_allclose(tdist.numpy(), dist, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_queries(backend, rng):
    bank = rng.standard_normal((8, 5)).astype(np.float32)
    dist, idx = knn_score(np.zeros((0, 5), np.float32), bank, 3, return_indices=True, backend=backend)
    assert dist.shape == (0, 3) and idx.shape == (0, 3)
    assert dist.dtype == np.float32 and idx.dtype == np.int64


@pytest.mark.parametrize("backend", backend_params("numpy", "torch"))
def test_chunking_does_not_change_results(backend, rng):
    queries = rng.standard_normal((50, 12)).astype(np.float32)
    bank = rng.standard_normal((70, 12)).astype(np.float32)
    whole = knn_score(queries, bank, 4, return_indices=True, backend=backend)
    chunked = knn_score(queries, bank, 4, return_indices=True, chunk_size=7, backend=backend)
    np.testing.assert_array_equal(whole[1], chunked[1])
    if backend == "numpy":
        np.testing.assert_array_equal(whole[0], chunked[0])
    else:
        # torch's addmm goes to BLAS (MKL/OpenBLAS, cuBLAS on the GPU), which picks its kernel by
        # matrix shape: a 7-row chunk can round q.b differently from the 50-row whole (measured:
        # 33 of 200 distances differ, by <= 2.9e-7 relative). Same neighbours, float32 rounding.
        np.testing.assert_allclose(whole[0], chunked[0], rtol=1e-6, atol=1e-6)


def test_torch_tie_fixup_selects_lowest_indices():
    # Row 0: five equal values compete for the last two places (torch.topk may pick any).
    from ofdb_fast.ops.knn_score import _topk_lowest_index

    dist = torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.5, 3.0, 3.0], [2.0, 2.0, 1.0, 0.0, 2.0, 5.0, 2.0]])
    vals, idx = _topk_lowest_index(dist, 4)
    assert idx.tolist() == [[4, 1, 0, 2], [3, 2, 0, 1]]
    assert vals.tolist() == [[0.5, 1.0, 3.0, 3.0], [0.0, 1.0, 2.0, 2.0]]


def test_reference_hand_computed():
    bank = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    dist, idx = knn_reference(np.array([[1.0, 1.0]]), bank, 4, return_indices=True)
    assert dist.tolist() == [[1.0, 1.0, 2.0, 2.0]]
    assert idx.tolist() == [[1, 3, 0, 2]]


def test_auto_backend_runs(rng):
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    bank = rng.standard_normal((9, 8)).astype(np.float32)
    _assert_close(knn_score(queries, bank, 2), knn_reference(queries, bank, 2), 1e-5, _expansion_atol(queries, bank))


# ----------------------------------------------------------------------------- bad inputs
def test_bad_k():
    q, b = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="k must be <= 4, got 5"):
        knn_score(q, b, 5)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_score(q, b, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        knn_score(q, b, 1.5)


def test_bad_dim_mismatch():
    with pytest.raises(ValueError, match=r"bank must have shape \[M, D\] with D == 3"):
        knn_score(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32))


def test_bad_ndim():
    with pytest.raises(ValueError, match=r"queries must have shape \[Q, D\], got \(3,\)"):
        knn_score(np.zeros(3, np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"bank must have shape \[M, D\], got \(1, 4, 3\)"):
        knn_score(np.zeros((2, 3), np.float32), np.zeros((1, 4, 3), np.float32))


def test_bad_dtype():
    with pytest.raises(TypeError, match="queries must have a float32 or float64 dtype, got int64"):
        knn_score(np.zeros((2, 3), np.int64), np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="bank must have a float32 or float64 dtype, got float16"):
        knn_score(torch.zeros(2, 3), torch.zeros(4, 3, dtype=torch.float16))


def test_bad_empty_bank_or_dims():
    with pytest.raises(ValueError, match="bank must have shape .* with M >= 1"):
        knn_score(np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="queries must have shape .* with D >= 1"):
        knn_score(np.zeros((2, 0), np.float32), np.zeros((3, 0), np.float32))


def test_bad_non_finite():
    bank = np.zeros((4, 3), np.float32)
    bank[1, 2] = np.nan
    with pytest.raises(ValueError, match="bank must contain only finite values"):
        knn_score(np.zeros((2, 3), np.float32), bank)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        knn_score(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), chunk_size=0)


def test_bad_mixed_array_types():
    with pytest.raises(TypeError, match="bank must be the same array type as queries"):
        knn_score(np.zeros((2, 3), np.float32), torch.zeros(4, 3))


def test_bad_backend():
    q, b = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        knn_score(q, b, backend="cuda")


@pytest.mark.cuda
def test_device_mismatch():
    with pytest.raises(ValueError, match="bank must be on the same device as queries"):
        knn_score(torch.zeros(2, 3, device="cuda"), torch.zeros(4, 3))


@pytest.mark.cuda
def test_torch_cuda_matches_reference(rng):
    queries = rng.standard_normal((300, 77)).astype(np.float32)
    bank = rng.standard_normal((500, 77)).astype(np.float32)
    dist, idx = knn_score(torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda(), 5,
                          return_indices=True)
    assert dist.is_cuda and idx.is_cuda
    _assert_matches_reference(dist.cpu().numpy(), idx.cpu().numpy(), queries, bank, 5)
