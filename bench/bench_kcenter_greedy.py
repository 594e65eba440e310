"""Benchmark kcenter_greedy (PatchCore approximate greedy coreset): providers x sizes.

Providers: ``torch`` (baseline: the reference project's Python loop of small torch ops, on the
GPU when there is one, else on the CPU), ``numpy`` (the reference), ``cpu`` (C++/OpenMP) and
``cuda`` (fused kernels). Sizes ``(N, D, percentage)`` come from ``bench_sizes("kcenter_greedy")``;
the NumPy reference and the CPU torch loop only run up to ``SLOW_MAX_POINTS`` rows (at the paper
size they take tens of minutes). ``extra_info``: patches/s (N / time) and iterations/s.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast import _dispatch
from ofdb_fast.ops.kcenter_greedy import kcenter_greedy
from ofdb_fast.testing import backend_params

OP = "kcenter_greedy"
SLOW_MAX_POINTS = 20_000
PROVIDERS = backend_params("torch", "numpy", "cpu", "cuda")


def _features(n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)


@pytest.mark.parametrize("size", bench_sizes(OP), ids=lambda s: f"{s[0]}x{s[1]}@{s[2]}")
@pytest.mark.parametrize("backend", PROVIDERS)
def test_kcenter_greedy(benchmark, backend, size):
    n, dim, percentage = size
    on_gpu = backend == "cuda" or (backend == "torch" and _dispatch.has_cuda())
    slow = backend == "numpy" or (backend == "torch" and not on_gpu)
    if slow and n > SLOW_MAX_POINTS:
        pytest.skip(f"{backend} on the CPU only runs up to {SLOW_MAX_POINTS} points")
    x = _features(n, dim)
    if on_gpu:
        import torch

        x = torch.from_numpy(x).cuda()
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        kcenter_greedy(x, percentage=percentage, backend=backend)
        if on_gpu:
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)

    benchmark.group = f"{OP}|{n}x{dim}@{percentage}"
    benchmark.pedantic(run, rounds=1 if slow else 3, warmup_rounds=0 if slow else 1)
    best = min(seconds)
    n_select = int(n * percentage)
    benchmark.extra_info.update(
        device="cuda" if on_gpu else "cpu",
        dtype="float32",
        shape=[n, dim],
        n_select=n_select,
        patches_per_s=n / best,
        iterations_per_s=n_select / best,
    )
