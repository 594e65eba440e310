"""Benchmark kcenter_greedy (PatchCore approximate greedy coreset): providers x sizes.

Providers: ``reference`` (the reference sampler's per-iteration work as patchcore.md describes it:
distances by the expansion ``|a|^2 - 2ab + |b|^2`` with the norms recomputed every call, clamp,
sqrt, running minimum via ``cat`` + ``min``; on the GPU when there is one), ``torch`` (this
package's lean Python loop of torch ops, same structure without the recomputed norms), ``numpy``
(the spec), ``cpu`` (C++/OpenMP) and ``cuda`` (fused kernels). Sizes ``(N, D, percentage)`` come from ``bench_sizes("kcenter_greedy")``;
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
from ofdb_fast.testing import backend_param, backend_params

OP = "kcenter_greedy"
SLOW_MAX_POINTS = 20_000
# cuda_fp16: the cuda backend with proj_dtype="float16" (projected rows stored in float16: half the
# bytes per iteration; at 157k x 128 they fit the H100's 50 MB L2, float32's 80 MB do not).
PROVIDERS = [pytest.param("reference", id="reference"), *backend_params("torch", "numpy", "cpu", "cuda"),
             pytest.param("cuda_fp16", marks=backend_param("cuda").marks, id="cuda_fp16")]


def _reference_loop(features, percentage: float, n_starts: int = 10, seed: int = 0, proj_dim: int = 128) -> list[int]:
    """The reference's approximate greedy coreset: a fresh bias-free linear map to 128 dims when
    D != 128 (torch's default init, seeded here), then its loop of small torch ops."""
    import torch

    if features.shape[1] != proj_dim:
        mapper = torch.nn.Linear(features.shape[1], proj_dim, bias=False)
        with torch.no_grad():
            torch.nn.init.kaiming_uniform_(mapper.weight, a=5 ** 0.5, generator=torch.Generator().manual_seed(seed))
            features = mapper.to(features.device)(features)

    def dist(a, b):
        aa = a.unsqueeze(1).bmm(a.unsqueeze(2)).reshape(-1, 1)
        bb = b.unsqueeze(1).bmm(b.unsqueeze(2)).reshape(1, -1)
        return (-2 * a.mm(b.T) + aa + bb).clamp(0, None).sqrt()

    n = len(features)
    starts = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n_starts, n)]
    score = dist(features, features[starts.to(features.device)]).mean(dim=-1, keepdim=True)
    picked = []
    for _ in range(int(n * percentage)):
        i = int(torch.argmax(score))
        picked.append(i)
        score = torch.min(torch.cat([score, dist(features, features[i : i + 1])], dim=-1), dim=1).values
        score = score.reshape(-1, 1)
    return picked


def _features(n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)


@pytest.mark.parametrize("size", bench_sizes(OP), ids=lambda s: f"{s[0]}x{s[1]}@{s[2]}")
@pytest.mark.parametrize("backend", PROVIDERS)
def test_kcenter_greedy(benchmark, backend, size):
    n, dim, percentage = size
    on_gpu = backend.startswith("cuda") or (backend in ("torch", "reference") and _dispatch.has_cuda())
    slow = backend == "numpy" or (backend in ("torch", "reference") and not on_gpu)
    if slow and n > SLOW_MAX_POINTS:
        pytest.skip(f"{backend} on the CPU only runs up to {SLOW_MAX_POINTS} points")
    x = _features(n, dim)
    if on_gpu or backend == "reference":
        import torch

        x = torch.from_numpy(x).cuda() if on_gpu else torch.from_numpy(x)
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        if backend == "reference":
            _reference_loop(x, percentage)
        elif backend == "cuda_fp16":
            kcenter_greedy(x, percentage=percentage, backend="cuda", proj_dtype="float16")
        else:
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
        dtype="float16-projection" if backend == "cuda_fp16" else "float32",
        shape=[n, dim],
        n_select=n_select,
        patches_per_s=n / best,
        iterations_per_s=n_select / best,
    )
