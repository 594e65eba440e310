"""Benchmark the Anomaly Clustering weights (unsupervised mode: the O(N^2 P^2 D) part).

Providers, baselines first:
- ``reference``: the reproduction's approach, one ``torch.cdist`` per pair of images and a
  Python loop over the N^2 pairs (on the GPU when there is one);
- ``numpy``: our NumPy reference (float64, one pair at a time; only up to ``NUMPY_MAX_WORK``
  = N^2 P^2 D multiply-adds);
- ``cpu``, ``faiss``, ``torch``: ``cluster_alpha`` on the ``knn_score`` backend of that name
  (``torch`` on the GPU when there is one).

Sizes ``(N, P, D)`` from ``bench_sizes("cluster_alpha")`` (MVTec category scale: about 100
anomalous images, 28 x 28 = 784 patches). One tau: extra taus cost only ``N P D``.
``extra_info``: images/s and GFLOP/s (2 N^2 P^2 D / time).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.cluster.alpha import cluster_alpha
from ofdb_fast.testing import backend_params

OP = "cluster_alpha"
TAU = 2.0
NUMPY_MAX_WORK = 2e11
PROVIDERS = [pytest.param("reference", id="reference")] + backend_params("numpy", "cpu", "faiss", "torch")


def _torch_on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _reference_alpha(z, tau):
    """The reproduction's loop: per pair cdist, min over the other image, mean, softmax."""
    import torch

    n = z.shape[0]
    d = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i] += torch.cdist(z[i], z[j]).min(dim=1).values.double()
    d /= n - 1
    return torch.softmax(d / tau, dim=1)


@pytest.mark.parametrize("size", bench_sizes(OP), ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", PROVIDERS)
def test_cluster_alpha(benchmark, backend, size):
    n_images, n_patches, dim = size
    if backend == "numpy" and n_images ** 2 * n_patches ** 2 * dim > NUMPY_MAX_WORK:
        pytest.skip(f"numpy reference only runs up to N^2 P^2 D = {NUMPY_MAX_WORK:.0e}")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n_images, n_patches, dim), dtype=np.float32)
    on_gpu = backend in ("torch", "reference") and _torch_on_gpu()
    if backend == "reference" or on_gpu:
        import torch

        z = torch.from_numpy(z)
        if on_gpu:
            z = z.cuda()
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        if backend == "reference":
            _reference_alpha(z, TAU)
        else:
            cluster_alpha(z, "unsupervised", TAU, backend=backend)
        if on_gpu:
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)

    slow = backend in ("numpy", "reference")
    benchmark.group = f"{OP}|{n_images}x{n_patches}x{dim}"
    benchmark.pedantic(run, rounds=1 if slow else 3, warmup_rounds=0 if slow else 1)
    best = min(seconds)
    benchmark.extra_info.update(
        device="cuda" if on_gpu else "cpu",
        dtype="float32",
        shape=[n_images, n_patches, dim],
        mode="unsupervised",
        images_per_s=n_images / best,
        gflops=2.0 * n_images ** 2 * n_patches ** 2 * dim / best / 1e9,
    )
