"""Benchmark knn_score (PatchCore scoring: k-NN of test patches in the memory bank).

Providers: ``numpy`` (the reference; only up to ``NUMPY_MAX_WORK`` = Q*M*D multiply-adds),
``torch`` (chunked addmm + topk; on the GPU when there is one, else on the CPU), ``cpu``
(C++/OpenMP) and ``faiss`` (IndexFlatL2 on the CPU, the reference project's scorer). Sizes
``(Q, M, D)`` come from ``bench_sizes("knn_score")``; k = 1 (the MVTec default).
``extra_info``: queries/s and GFLOP/s (2 Q M D / time).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.ops.knn_score import knn_score
from ofdb_fast.testing import backend_params

OP = "knn_score"
K = 1
NUMPY_MAX_WORK = 2e9
PROVIDERS = backend_params("numpy", "torch", "cpu", "faiss")


def _torch_on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.parametrize("size", bench_sizes(OP), ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", PROVIDERS)
def test_knn_score(benchmark, backend, size):
    n_queries, n_bank, dim = size
    if backend == "numpy" and n_queries * n_bank * dim > NUMPY_MAX_WORK:
        pytest.skip(f"numpy reference only runs up to Q*M*D = {NUMPY_MAX_WORK:.0e}")
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    bank = rng.standard_normal((n_bank, dim), dtype=np.float32)
    on_gpu = backend == "torch" and _torch_on_gpu()
    if on_gpu:
        import torch

        queries, bank = torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda()
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        knn_score(queries, bank, K, backend=backend)
        if on_gpu:
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)

    slow = backend == "numpy"
    benchmark.group = f"{OP}|{n_queries}x{n_bank}x{dim}"
    benchmark.pedantic(run, rounds=1 if slow else 3, warmup_rounds=0 if slow else 1)
    best = min(seconds)
    benchmark.extra_info.update(
        device="cuda" if on_gpu else "cpu",
        dtype="float32",
        shape=[n_queries, n_bank, dim],
        k=K,
        queries_per_s=n_queries / best,
        gflops=2.0 * n_queries * n_bank * dim / best / 1e9,
    )
