"""ifs_render throughput: 100k-point chaos game + window + raster + colour + blur per image.

Providers: ``reference`` (the F4AD approach, ``bench/_reference_fractal.py``: numba ``@njit``
sequential iterate per image storing coordinates drawn with ``np.random.rand``, a separate numba
windowed graded render, flips, HSV colourise, ``cv2.cvtColor`` and ``cv2.GaussianBlur``),
``reference_lean`` (the same pipeline with a streamlined numba chain, ~4x faster than the
reference's own; see that module),
``numpy`` (the reference backend; few images), ``cpu`` (C++/OpenMP, all cores; a fresh output
array per call), ``cpu_out`` (the same into one reused ``out=`` buffer: no page faults on ~50 MB
of new output per call, the way a render loop should call it) and ``cuda``.
Sizes (image side) come from ``bench_sizes("ifs_render")``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render
from ofdb_fast.testing import backend_param, backend_params

N_POINTS = 100_000
# cuda: the chain kernels run one thread per image (a chaos game is one dependent chain of 100k
# steps, ~200 cycles each by the PTX, ~25 ms for both passes however many images run beside it),
# so a call's time is nearly flat in the batch until the GPU is full: 512 images would use 8 of
# an H100's 132 SMs (~20k images/s), 4,096 use 64 blocks (output 3.2 GB + counts 4.3 GB at 512 px).
N_IMAGES = {"reference": 8, "reference_lean": 8, "numpy": 2, "cpu": 64, "cpu_out": 64, "cuda": 4096}


def _systems(n_img: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Contractive 2..4-map systems (rotation * diag(sv) * rotation, sv <= 1)."""
    rng = np.random.default_rng(seed)
    n_max = 4

    def rot(t):
        c, s = np.cos(t), np.sin(t)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)

    sv = np.sort(rng.uniform(0.2, 1.0, (n_img, n_max, 2)), axis=-1)[..., ::-1]
    lin = rot(rng.uniform(-np.pi, np.pi, (n_img, n_max))) @ (sv[..., :, None] * np.eye(2))
    lin = lin @ rot(rng.uniform(-np.pi, np.pi, (n_img, n_max)))
    systems = np.concatenate([lin, rng.uniform(-1, 1, (n_img, n_max, 2, 1))], axis=-1)
    return systems, rng.integers(2, n_max + 1, n_img)


def _reference_renderer(size: int, lean: bool, raster_only: bool = False):
    """The reference generator's per-image pipeline over a batch (numba JIT on first use)."""
    from _reference_fractal import make_reference_renderer

    render = make_reference_renderer(size, N_POINTS, lean=lean, raster_only=raster_only)

    def run(systems, n_maps):
        rng = np.random.default_rng(0)
        out = np.empty((len(systems), size, size) if raster_only else (len(systems), size, size, 3),
                       np.float64 if raster_only else np.uint8)
        for b in range(len(systems)):
            out[b] = render(np.ascontiguousarray(systems[b, : n_maps[b]]), rng)
        return out

    return run


def _record(benchmark, n_img: int) -> None:
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.min
        benchmark.extra_info["images_per_s"] = n_img / seconds
        benchmark.extra_info["points_per_s"] = n_img * N_POINTS / seconds


@pytest.mark.parametrize("size", bench_sizes("ifs_render"))
@pytest.mark.parametrize(
    "provider",
    [pytest.param("reference", id="reference"), pytest.param("reference_lean", id="reference_lean"),
     *backend_params("numpy", "cpu"), pytest.param("cpu_out", marks=backend_param("cpu").marks, id="cpu_out"),
     backend_param("cuda")],
)
def test_ifs_render(benchmark, provider, size):
    n_img = N_IMAGES[provider]
    systems, n_maps = _systems(n_img)
    config = RenderConfig(n_points=N_POINTS)
    if provider.startswith("reference"):
        if importlib.util.find_spec("numba") is None or importlib.util.find_spec("cv2") is None:
            pytest.skip("reference: numba and opencv are needed")
        ref = _reference_renderer(size, lean=provider == "reference_lean")
        ref(systems[:1], n_maps[:1])  # JIT outside the timing

        def run():
            return ref(systems, n_maps)
    elif provider == "cuda":
        import torch

        dev_systems, dev_maps = torch.from_numpy(systems).cuda(), torch.from_numpy(n_maps).cuda()

        def run():
            out = ifs_render(dev_systems, dev_maps, size=size, config=config, backend="cuda")
            torch.cuda.synchronize()
            return out
    elif provider == "cpu_out":
        buffer = np.empty((n_img, size, size, 3), np.uint8)

        def run():
            return ifs_render(systems, n_maps, size=size, config=config, out=buffer, backend="cpu")
    else:
        def run():
            return ifs_render(systems, n_maps, size=size, config=config, backend=provider)

    benchmark.group = f"ifs_render|{size}"
    benchmark.extra_info.update(
        device="cuda" if provider == "cuda" else "cpu", dtype="float64", shape=[n_img, size, size, 3],
        n_points=N_POINTS,
    )
    # cpu timings at 512 vary by ~1.5x between rounds (fresh 50 MB output pages): take 10.
    rounds = {"numpy": 1, "reference": 3, "reference_lean": 3}.get(provider, 10)
    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    assert tuple(out.shape) == (n_img, size, size, 3)
    _record(benchmark, n_img)


@pytest.mark.parametrize("size", bench_sizes("ifs_render"))
@pytest.mark.parametrize(
    "provider",
    [pytest.param("reference", id="reference"), pytest.param("reference_lean", id="reference_lean"),
     pytest.param("cpu_out", marks=backend_param("cpu").marks, id="cpu_out")],
)
def test_ifs_render_raster_stage(benchmark, provider, size):
    """The chaos game and the windowed raster alone (the issue's "iterate + render"): the
    reference's graded float64 raster vs ``output="counts"`` (int32 hit counts; the division by
    the maximum is left to the colour stage) into a reused buffer."""
    n_img = N_IMAGES[provider]
    systems, n_maps = _systems(n_img)
    config = RenderConfig(n_points=N_POINTS)
    if provider.startswith("reference"):
        if importlib.util.find_spec("numba") is None:
            pytest.skip("reference: numba is needed")
        ref = _reference_renderer(size, lean=provider == "reference_lean", raster_only=True)
        ref(systems[:1], n_maps[:1])

        def run():
            return ref(systems, n_maps)
    else:
        buffer = np.empty((n_img, size, size), np.int32)

        def run():
            return ifs_render(systems, n_maps, size=size, config=config, output="counts", out=buffer, backend="cpu")

    benchmark.group = f"ifs_render_raster|{size}"
    benchmark.extra_info.update(device="cpu", dtype="float64", shape=[n_img, size, size], n_points=N_POINTS)
    out = benchmark.pedantic(run, rounds=3 if provider.startswith("reference") else 10, warmup_rounds=1)
    assert tuple(out.shape) == (n_img, size, size)
    _record(benchmark, n_img)
