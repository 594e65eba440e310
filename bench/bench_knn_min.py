"""Benchmark the fused Triton kNN (GEMM + running min) against torch's addmm + topk.

Providers: ``torch`` (``knn_score(backend="torch")``: chunked float32 ``addmm`` + ``topk``, the
GPU baseline), ``triton`` (``knn_score(backend="triton")``, float32 IEEE dots), and the
serving modes of :func:`ofdb_fast.triton.knn_min.knn_min_triton` with the bank kept in
``float16`` / ``bfloat16`` (``triton_fp16``, ``triton_bf16``; queries rounded to the bank
dtype, float32 accumulation). GPU only (the Triton interpreter is not a benchmark). Sizes
``(Q, M, D)`` from ``bench_sizes("knn_score")``, k = 1. ``extra_info``: queries/s, GFLOP/s.
"""

from __future__ import annotations

import time

import pytest
from conftest import bench_sizes

torch = pytest.importorskip("torch")

OP = "knn_min"  # own group (with its own torch baseline): bench_knn_score.py has torch too
PROVIDERS = ["torch", "triton", "triton_fp16", "triton_bf16"]
K = 1


@pytest.mark.parametrize("size", bench_sizes("knn_score"), ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_knn_min(benchmark, provider, size):
    if not torch.cuda.is_available():
        pytest.skip("GPU benchmark: torch sees no CUDA device")
    from ofdb_fast.ops.knn_score import knn_score
    from ofdb_fast.triton.knn_min import bank_sqnorm, knn_min_triton

    n_queries, n_bank, dim = size
    gen = torch.Generator(device="cuda").manual_seed(0)
    queries = torch.randn((n_queries, dim), device="cuda", generator=gen)
    bank = torch.randn((n_bank, dim), device="cuda", generator=gen)
    if provider in ("torch", "triton"):
        dtype = "float32"

        def call():
            knn_score(queries, bank, K, backend=provider)
    else:
        dtype = "float16" if provider == "triton_fp16" else "bfloat16"
        low = bank.to(getattr(torch, dtype))
        norms = bank_sqnorm(low)

        def call():
            knn_min_triton(queries, low, K, sqnorm=norms)

    seconds: list[float] = []

    def run():
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)

    benchmark.group = f"{OP}|{n_queries}x{n_bank}x{dim}"
    benchmark.pedantic(run, rounds=10, warmup_rounds=2)
    best = min(seconds)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), dtype=dtype, shape=[n_queries, n_bank, dim], k=K,
                                queries_per_s=n_queries / best, gflops=2.0 * n_queries * n_bank * dim / best / 1e9)
