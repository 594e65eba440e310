"""ifs_render throughput: 100k-point chaos game + window + raster + colour + blur per image.

Providers: ``reference`` (the F4AD approach: numba ``@njit`` sequential iterate per image storing
coordinates drawn with ``np.random.rand``, a separate numba graded render and HSV colourise, then
``cv2.cvtColor`` and ``cv2.GaussianBlur``; written here from fractals.md a.2-a.4, not copied),
``numpy`` (the reference backend; few images), ``cpu`` (C++/OpenMP, all cores) and ``cuda``.
Sizes (image side) come from ``bench_sizes("ifs_render")``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render
from ofdb_fast.testing import backend_params

N_POINTS = 100_000
N_IMAGES = {"reference": 8, "numpy": 2, "cpu": 64, "cuda": 512}


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


def _reference_renderer():
    """The reference generator's per-image pipeline, built lazily (numba JIT on first use)."""
    import cv2
    from numba import njit

    @njit(cache=False)
    def iterate(sys, n_iter):
        n = sys.shape[0]
        det = np.abs(sys[:, 0, 0] * sys[:, 1, 1] - sys[:, 0, 1] * sys[:, 1, 0])
        cum = np.cumsum(det / det.sum())
        a, b, e = sys[0, 0, 0], sys[0, 0, 1], sys[0, 0, 2]
        c, d, f = sys[0, 1, 0], sys[0, 1, 1], sys[0, 1, 2]
        den = 1.0 + a * d - b * c - a - d
        x, y = ((1.0 - d) * e + b * f) / den, ((1.0 - a) * f + c * e) / den
        coords = np.empty((n_iter, 2))
        for i in range(n_iter):
            r = np.random.rand()
            k = n - 1
            for j in range(n):
                if r < cum[j]:
                    k = j
                    break
            x, y = (sys[k, 0, 0] * x + sys[k, 0, 1] * y + sys[k, 0, 2],
                    sys[k, 1, 0] * x + sys[k, 1, 1] * y + sys[k, 1, 2])
            coords[i, 0] = x
            coords[i, 1] = y
        return coords

    @njit(cache=False)
    def render(coords, s):
        x_lo, y_lo = coords[:, 0].min(), coords[:, 1].min()
        sx = (s - 1) / max(coords[:, 0].max() - x_lo, 1e-12)
        sy = (s - 1) / max(coords[:, 1].max() - y_lo, 1e-12)
        img = np.zeros((s, s))
        for i in range(coords.shape[0]):
            r, c = int((coords[i, 0] - x_lo) * sx), int((coords[i, 1] - y_lo) * sy)
            if 0 <= r < s and 0 <= c < s:
                img[r, c] += 1
        return img / img.max()

    @njit(cache=False)
    def colorize(img):
        hue_shift = np.random.rand() * 255
        sat = np.uint8(np.random.uniform(0.3, 1) * 255)
        val = np.uint8(np.random.uniform(0.5, 1) * 255)
        out = np.zeros((img.shape[0], img.shape[1], 3), np.uint8)
        for i in range(img.shape[0]):
            for j in range(img.shape[1]):
                if img[i, j] > 0:
                    out[i, j, 0] = np.uint8(int(img[i, j] * 255 + hue_shift) & 255)
                    out[i, j, 1] = sat
                    out[i, j, 2] = val
        return out

    def run(systems, n_maps, size):
        rng = np.random.default_rng(0)
        out = np.empty((len(systems), size, size, 3), np.uint8)
        for b in range(len(systems)):
            coords = iterate(np.ascontiguousarray(systems[b, : n_maps[b]]), N_POINTS)
            rgb = cv2.cvtColor(colorize(render(coords, size)), cv2.COLOR_HSV2RGB)
            if rng.random() > 0.5:
                rgb = cv2.GaussianBlur(rgb, (3, 3), rng.uniform(0.5, 1.0))
            out[b] = rgb
        return out

    return run


@pytest.mark.parametrize("size", bench_sizes("ifs_render"))
@pytest.mark.parametrize(
    "provider",
    [pytest.param("reference", id="reference"), *backend_params("numpy", "cpu", "cuda")],
)
def test_ifs_render(benchmark, provider, size):
    n_img = N_IMAGES[provider]
    systems, n_maps = _systems(n_img)
    config = RenderConfig(n_points=N_POINTS)
    if provider == "reference":
        if importlib.util.find_spec("numba") is None or importlib.util.find_spec("cv2") is None:
            pytest.skip("reference: numba and opencv are needed")
        ref = _reference_renderer()
        ref(systems[:1], n_maps[:1], size)  # JIT outside the timing

        def run():
            return ref(systems, n_maps, size)
    elif provider == "cuda":
        import torch

        dev_systems, dev_maps = torch.from_numpy(systems).cuda(), torch.from_numpy(n_maps).cuda()

        def run():
            out = ifs_render(dev_systems, dev_maps, size=size, config=config, backend="cuda")
            torch.cuda.synchronize()
            return out
    else:
        def run():
            return ifs_render(systems, n_maps, size=size, config=config, backend=provider)

    benchmark.group = f"ifs_render|{size}"
    benchmark.extra_info.update(
        device="cuda" if provider == "cuda" else "cpu", dtype="float64", shape=[n_img, size, size, 3],
        n_points=N_POINTS,
    )
    # cpu timings at 512 vary by ~1.5x between rounds (fresh 50 MB output pages): take 10.
    rounds = {"numpy": 1, "reference": 3}.get(provider, 10)
    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    assert tuple(out.shape) == (n_img, size, size, 3)
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.min
        benchmark.extra_info["images_per_s"] = n_img / seconds
        benchmark.extra_info["points_per_s"] = n_img * N_POINTS / seconds
