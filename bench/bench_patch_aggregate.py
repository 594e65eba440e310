"""Benchmark patch_aggregate (PatchCore embedding after the backbone) on WRN50 layer shapes.

Sizes ``(B, image size s)`` from ``bench_sizes("patch_aggregate")`` become layer2
``[B, 512, s/8, s/8]`` and layer3 ``[B, 1024, s/16, s/16]``, with the MVTec defaults
(patch 3, pretrain 1024, target 1024). Providers: ``numpy`` (the reference; only up to
``NUMPY_MAX_PATCHES`` patches: it materialises the C*9 vectors in float64), ``cpu`` (C++/OpenMP,
always on the CPU), ``torch`` (the reference project's code path; on the GPU when there is one,
else the CPU) and ``triton`` (GPU only; skipped under TRITON_INTERPRET). ``extra_info``: patches/s and images/s.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.ops.patch_aggregate import patch_aggregate
from ofdb_fast.testing import backend_params

OP = "patch_aggregate"
NUMPY_MAX_PATCHES = 1000
PROVIDERS = backend_params("numpy", "cpu", "torch", "triton")


def _torch_on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.parametrize("size", bench_sizes(OP), ids=lambda s: f"B{s[0]}@{s[1]}")
@pytest.mark.parametrize("backend", PROVIDERS)
def test_patch_aggregate(benchmark, backend, size):
    n_batch, image_size = size
    grid = image_size // 8
    n_patches = n_batch * grid * grid
    if backend == "numpy" and n_patches > NUMPY_MAX_PATCHES:
        pytest.skip(f"numpy reference only runs up to {NUMPY_MAX_PATCHES} patches")
    if backend == "triton" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("triton is only timed on a GPU, not under TRITON_INTERPRET")
    rng = np.random.default_rng(0)
    features = [
        rng.standard_normal((n_batch, 512, grid, grid), dtype=np.float32),
        rng.standard_normal((n_batch, 1024, image_size // 16, image_size // 16), dtype=np.float32),
    ]
    on_gpu = backend in ("torch", "triton") and _torch_on_gpu()
    if on_gpu:
        import torch

        features = [torch.from_numpy(f).cuda() for f in features]
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        patch_aggregate(features, patch_size=3, pretrain_embed_dimension=1024,
                        target_embed_dimension=1024, backend=backend)
        if on_gpu:
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)

    slow = backend == "numpy"
    benchmark.group = f"{OP}|B{n_batch}@{image_size}"
    benchmark.pedantic(run, rounds=1 if slow else 3, warmup_rounds=0 if slow else 1)
    best = min(seconds)
    benchmark.extra_info.update(
        device="cuda" if on_gpu else "cpu",
        dtype="float32",
        shape=[list(f.shape) for f in features],
        patches_per_s=n_patches / best,
        images_per_s=n_batch / best,
    )
