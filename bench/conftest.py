"""Benchmark configuration: one preset table of sizes for every suite.

``OFDB_BENCH_SIZE=small`` (default; minutes on the 2-core CI machine) or ``paper`` (the
sizes the reference papers use; meant for the GPU machine). Suites read their sizes with
``bench_sizes("<op>")``. Run with ``pytest bench --benchmark-only``; never beside another job.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PRESETS: dict[str, dict[str, list]] = {
    "small": {
        "serve": [(1, 224), (8, 224), (32, 224)],
        "ifs_render": [256, 512],
        "generate": [200],
        "kcenter_greedy": [(20_000, 128, 0.1)],
        "knn_score": [(784, 1_000, 128), (784 * 8, 16_000, 1024)],
        "patch_aggregate": [(8, 224)],
        "patchcore": [(16, 224)],
        "cluster_alpha": [(16, 196, 256), (100, 784, 1024)],
        "pretrain": [("resnet18", 256, 256, 224, 64)],  # (arch, n_images, side, crop, batch)
    },
    "paper": {
        "serve": [(1, 224), (8, 224), (32, 224)],
        "ifs_render": [256, 512],
        "generate": [1000],
        "kcenter_greedy": [(20_000, 128, 0.1), (157_000, 1024, 0.1)],
        "knn_score": [(784 * 32, 16_000, 1024), (784 * 83, 15_700, 1024)],
        "patch_aggregate": [(8, 224), (32, 224)],
        "patchcore": [(200, 224)],
        "cluster_alpha": [(100, 784, 1024), (83, 784, 4096)],
        "pretrain": [("resnet50", 1000, 512, 224, 128)],  # the OFDB-4AD run
    },
}


def bench_size() -> str:
    size = os.environ.get("OFDB_BENCH_SIZE", "small")
    if size not in PRESETS:
        raise ValueError(f"OFDB_BENCH_SIZE must be one of {sorted(PRESETS)}, got {size!r}")
    return size


def bench_sizes(op: str) -> list:
    return PRESETS[bench_size()][op]
