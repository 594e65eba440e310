"""knn_score backend "triton" and the fused kernel (ofdb_fast.triton.knn_min) it runs.

CPU: under TRITON_INTERPRET=1 with small shapes (set by conftest when there is no GPU). With a
GPU and no TRITON_INTERPRET the same tests put their inputs on CUDA (``DEVICE``) and run the
compiled kernels.
The float16/bfloat16 bank mode is compared with the float64 reference on the *rounded*
inputs: the kernel must solve the rounded problem to float32-expansion accuracy (that is
stronger than the STYLE rule "error <= 2x torch at the same dtype", which the cuda test
checks at PatchCore size).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ofdb_fast.ops.knn_score import knn_score
from ofdb_fast.reference.knn_score import knn_score as knn_reference
from ofdb_fast.testing import backend_param, device_for, to_device, to_host

TRITON = backend_param("triton")
DEVICE = device_for("triton")
pytestmark = pytest.mark.triton


def _min_triton(*args, **kwargs):
    from ofdb_fast.triton.knn_min import knn_min_triton

    return knn_min_triton(*args, **kwargs)


def _atol(queries, bank):
    """A few float32 ulps of |q|^2 + |b|^2 per row (the expansion's cancellation); the same
    bound as test_knn_score (measured worst there 1.6e-7 relative to the norms)."""
    q_norm = (queries.astype(np.float64) ** 2).sum(1)
    b_norm = (bank.astype(np.float64) ** 2).sum(1).max()
    return 1e-6 * (q_norm + b_norm)[:, None]


def _check(dist, idx, queries, bank, k):
    """Distances close to the float64 reference; indices equal wherever the reference's ranks
    are separated by more than the tolerance (elsewhere both orders are right)."""
    dist, idx = np.asarray(dist), np.asarray(idx)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and dist.shape == idx.shape == (len(queries), k)
    ref_d, ref_i = knn_reference(queries, bank, k, return_indices=True)
    atol = _atol(queries, bank)
    assert (np.abs(dist - ref_d) <= atol + 1e-5 * np.abs(ref_d)).all(), np.abs(dist - ref_d).max()
    full = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    ranked = np.sort(full, axis=1)
    gaps = np.diff(ranked, axis=1) > (atol + 1e-5 * ranked)[:, 1:]
    clear = np.ones(ranked.shape, dtype=bool)
    clear[:, 1:] &= gaps
    clear[:, :-1] &= gaps
    np.testing.assert_array_equal(idx[clear[:, :k]], ref_i[clear[:, :k]])


@pytest.mark.parametrize("backend", [TRITON])
@pytest.mark.parametrize("n_queries, n_bank, dim, k", [(37, 53, 77, 1), (37, 130, 77, 5), (9, 13, 33, 13),
                                                       (1, 20, 16, 3), (17, 1, 5, 1)])
def test_knn_score_triton_matches_reference(backend, n_queries, n_bank, dim, k, rng):
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    dist, idx = knn_score(to_device(queries, DEVICE), to_device(bank, DEVICE), k, return_indices=True,
                          backend=backend)
    dist, idx = to_host(dist), to_host(idx)
    _check(dist, idx, queries, bank, k)
    if k == n_bank:  # k == M: a full sort
        assert (np.sort(idx, axis=1) == np.arange(n_bank)).all()


@pytest.mark.parametrize("backend", [TRITON])
@pytest.mark.parametrize("k, n_split", [(1, 1), (1, 3), (2, 1), (3, 3), (4, 3)])  # k < 4 copies: ties cut at k
def test_ties_lowest_index_across_splits(backend, k, n_split, rng):
    base = rng.standard_normal((40, 35)).astype(np.float32)
    bank = np.concatenate([base, base[::-1], base, base], axis=0)  # every row 4x, over 3 tiles of 64
    queries = np.concatenate([base[:3], rng.standard_normal((20, 35)).astype(np.float32)])
    dist, idx = _min_triton(torch.from_numpy(queries).to(DEVICE), torch.from_numpy(bank).to(DEVICE), k,
                            n_split=n_split)
    dist, idx = to_host(dist), to_host(idx)
    ref_d, ref_i = knn_reference(queries, bank, k, return_indices=True)
    np.testing.assert_array_equal(idx, ref_i)
    assert (np.abs(dist - ref_d) <= _atol(queries, bank)).all()
    copies = np.flatnonzero((bank == base[1]).all(axis=1))
    np.testing.assert_array_equal(idx[1, : min(k, 4)], copies[: min(k, 4)])


@pytest.mark.parametrize("backend", [TRITON])
def test_eviction_keeps_lowest_index_among_tied_worst(backend):
    """Rows 0 and 1 tie at distance 1 (filling k = 2 slots in the first tile); row 100, in a later
    tile, is nearer: the tied entry with the higher index (1) must go, not row 0."""
    bank = np.full((130, 16), 10.0, np.float32)
    bank[0], bank[1], bank[100] = 0.0, 0.0, 0.0
    bank[0, 0], bank[1, 1], bank[100, 2] = 1.0, 1.0, 0.5
    dist, idx = _min_triton(torch.zeros(1, 16, device=DEVICE), torch.from_numpy(bank).to(DEVICE), 2, n_split=1)
    np.testing.assert_array_equal(to_host(idx), [[100, 0]])
    np.testing.assert_array_equal(to_host(dist), [[0.25, 1.0]])


@pytest.mark.parametrize("backend", [TRITON])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k, n_split", [(1, 2), (3, 1)])
def test_half_bank_solves_the_rounded_problem(backend, dtype, k, n_split, rng):
    queries = torch.from_numpy(rng.standard_normal((45, 70)).astype(np.float32)).to(DEVICE)
    bank = torch.from_numpy(rng.standard_normal((140, 70)).astype(np.float32)).to(DEVICE, dtype)
    from ofdb_fast.triton.knn_min import bank_sqnorm

    dist, idx = _min_triton(queries, bank, k, sqnorm=bank_sqnorm(bank), n_split=n_split)
    q_r = to_host(queries.to(dtype).float())  # the kernel rounds the queries to the bank dtype
    _check(to_host(dist), to_host(idx), q_r, to_host(bank.float()), k)


@pytest.mark.parametrize("backend", [TRITON])
def test_torch_float64_non_contiguous_and_empty(backend, rng):
    queries = torch.from_numpy(rng.standard_normal((30, 24))).to(DEVICE).T  # [24, 30] float64 strided view
    bank = torch.from_numpy(rng.standard_normal((40, 60))).to(DEVICE)[:, ::2]  # [40, 30]
    dist, idx = knn_score(queries, bank, 2, return_indices=True, backend=backend)
    assert isinstance(dist, torch.Tensor) and dist.dtype == torch.float32 and idx.dtype == torch.int64
    assert dist.device == queries.device and idx.device == queries.device
    # float64 is rounded to float32 by this backend: compare with the reference on the rounded data.
    _check(to_host(dist), to_host(idx), to_host(queries.float()), to_host(bank.float()), 2)
    empty_queries, bank32 = to_device(np.zeros((0, 30), np.float32), DEVICE), to_device(to_host(bank.float()), DEVICE)
    empty = to_host(knn_score(empty_queries, bank32, 2, backend=backend))
    assert empty.shape == (0, 2) and empty.dtype == np.float32


@pytest.mark.parametrize("backend", [TRITON])
def test_k_too_large_for_triton(backend, rng):
    bank = rng.standard_normal((40, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="k must be <= 32 for backend 'triton'"):
        knn_score(to_device(bank[:2], DEVICE), to_device(bank, DEVICE), 33, backend=backend)


def test_bank_dtype_rejected():
    pytest.importorskip("triton")
    with pytest.raises(TypeError, match="bank must have a float16, bfloat16 or float32 dtype"):
        _min_triton(torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.float64), 1)


# ------------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k", [1, 3])
def test_cuda_patchcore_size_vs_torch(dtype, k):
    """784 queries (batch 1 at 224 px) x 16k bank x 1024: error vs float64 <= 2x the error of
    torch at the same dtype (+ atol 1e-3 relative to the distance scale), indices equal where
    unambiguous."""
    g = torch.Generator(device="cuda").manual_seed(0)
    queries = torch.randn(784, 1024, device="cuda", generator=g)
    bank = torch.randn(16_000, 1024, device="cuda", generator=g)
    exact = torch.cdist(queries.double(), bank.double()).pow(2)
    ref_d, ref_i = torch.topk(exact, k, dim=1, largest=False)
    b = bank.to(dtype)
    dist, idx = _min_triton(queries, b, k)
    torch_d = torch.topk(torch.cdist(queries.to(dtype).float(), b.float()).pow(2), k, dim=1, largest=False).values
    torch_lowp = torch.addmm((b.float() ** 2).sum(1)[None], queries.to(dtype), b.T, alpha=-2.0).float()
    torch_lowp = torch.topk(torch_lowp + (queries.to(dtype).float() ** 2).sum(1, keepdim=True), k, dim=1,
                            largest=False).values
    err = (dist.double() - ref_d).abs().max().item()
    err_torch = max((torch_d.double() - ref_d).abs().max().item(), (torch_lowp.double() - ref_d).abs().max().item())
    assert err <= 2 * err_torch + 1e-3 * ref_d.abs().max().item(), (err, err_torch)
    if dtype == torch.float32:
        assert (idx == ref_i).float().mean().item() > 0.999


@pytest.mark.cuda
def test_cuda_graph_capture_replays_same_result():
    from ofdb_fast.triton.knn_min import bank_sqnorm

    bank = torch.randn(5000, 256, device="cuda").half()
    norms = bank_sqnorm(bank)
    static_q = torch.randn(300, 256, device="cuda")
    eager = _min_triton(static_q, bank, 2, sqnorm=norms)  # also compiles before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _min_triton(static_q, bank, 2, sqnorm=norms)
    new_q = torch.randn_like(static_q)
    static_q.copy_(new_q)
    graph.replay()
    again = _min_triton(new_q, bank, 2, sqnorm=norms)
    torch.testing.assert_close(out[0], again[0], rtol=0, atol=0)
    assert torch.equal(out[1], again[1]) and not torch.equal(out[1], eager[1])


_AOT_SCRIPT = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ofdb_fast.triton.knn_min import _knn_min_kernel

for dtype, k, bq, bm, bd, f32 in [("fp16", 1, 64, 128, 64, False), ("bf16", 3, 128, 128, 64, False),
                                  ("fp32", 2, 64, 64, 32, True)]:
    sig = {"q_ptr": "*" + dtype, "b_ptr": "*" + dtype, "bnorm_ptr": "*fp32", "out_d_ptr": "*fp32",
           "out_i_ptr": "*i64", "n_q": "i32", "n_bank": "i32", "dim": "i32", "tiles_per_split": "i32"}
    consts = dict(K=k, KP=max(2, triton.next_power_of_2(k)), BLOCK_Q=bq, BLOCK_M=bm, BLOCK_D=bd, DOT_F32=f32, IEEE=f32)
    sig.update({name: "constexpr" for name in consts})
    # What a launch with 16-aligned pointers and D % 16 == 0 specialises on.
    attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 4, 7)}
    kernel = triton.compile(ASTSource(_knn_min_kernel, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": 8 if bq == 128 else 4, "num_stages": 3})
    ptx = kernel.asm["ptx"]
    print(dtype, k, "wgmma" in ptx, kernel.metadata.shared)
"""


def test_kernel_compiles_for_hopper(tmp_path):
    """The compiled (not interpreted) kernel builds for sm_90 without a GPU: half precision uses
    wgmma tensor-core instructions and the D loop is software-pipelined (3 stages of shared memory)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(__import__("pathlib").Path(__file__).parents[2] / "python"),
                                         env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line.split() for line in res.stdout.strip().splitlines()]
    assert [(d, k) for d, k, *_ in lines] == [("fp16", "1"), ("bf16", "3"), ("fp32", "2")]
    for dtype, _, wgmma, shared in lines:
        if dtype != "fp32":
            assert wgmma == "True"
            # one stage of the Q tile + bank tile is BLOCK_Q*BLOCK_D*2 + BLOCK_D*BLOCK_M*2 bytes
            assert int(shared) >= 2 * (64 * 64 * 2 + 64 * 128 * 2)
