"""End-to-end dataset generation (render + encode + write) at 512x512, 100k points.

Providers:
- ``reference``: the reference generator's approach (F4AD ``dataset_generator.py``): one
  process, per image a numba chaos game storing the points (``np.random.rand`` inside njit),
  a numba graded raster, flips, numba HSV colouring + ``cv2.cvtColor``, ``cv2.GaussianBlur``,
  ``PIL.Image.save`` with PIL's default PNG compression. Written here from fractals.md a.2-a.4;
  skipped when numba is missing. (``bench/bench_ifs_render.py``'s reference covers rendering
  only; this one adds the window, flips, colour, blur and the PNG write.)
- ``cpu``: ``ofdb_fast.fractal.dataset.generate`` with the C++/OpenMP renderer and the
  threaded PNG writer.

extra_info: images/s. Sizes: ``bench_sizes("generate")`` = number of images.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from conftest import bench_sizes

from ofdb_fast.testing import backend_param

SIZE = 512
N_POINTS = 100_000


def _numba_reference():
    numba = pytest.importorskip("numba")
    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    @numba.njit(cache=True)
    def iterate(system, probs, n_points):
        cum = np.cumsum(probs)
        a, b, e = system[0, 0, 0], system[0, 0, 1], system[0, 0, 2]
        c, d, f = system[0, 1, 0], system[0, 1, 1], system[0, 1, 2]
        den = (1.0 + (a * d - b * c)) - a - d
        x, y = ((1 - d) * e + b * f) / den, ((1 - a) * f + c * e) / den
        pts = np.empty((n_points, 2))
        for i in range(n_points):
            r = np.random.rand()
            k = cum.size - 1
            for j in range(cum.size):
                if r < cum[j]:
                    k = j
                    break
            m = system[k]
            x, y = m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]
            pts[i, 0], pts[i, 1] = x, y
        return pts

    @numba.njit(cache=True)
    def render(pts, lo, hi, size):
        img = np.zeros((size, size))
        span = hi - lo
        for i in range(pts.shape[0]):
            r = int((pts[i, 0] - lo[0]) / span[0] * (size - 1))
            c = int((pts[i, 1] - lo[1]) / span[1] * (size - 1))
            if 0 <= r < size and 0 <= c < size:
                img[r, c] += 1.0
        return img / img.max()

    @numba.njit(cache=True)
    def hsv_colorize(x):
        hue_shift = np.random.rand() * 255
        sat = np.uint8((0.3 + 0.7 * np.random.rand()) * 255)
        val = np.uint8((0.5 + 0.5 * np.random.rand()) * 255)
        out = np.zeros(x.shape + (3,), np.uint8)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                if x[i, j] > 0:
                    out[i, j, 0] = np.uint8(int(x[i, j] * 255 + hue_shift) & 255)
                    out[i, j, 1] = sat
                    out[i, j, 2] = val
        return out

    def make_one(system, rng, path):
        lin = system[:, :, :2]
        probs = np.abs(np.linalg.det(lin))
        probs = probs / probs.sum()
        pts = iterate(system, probs, N_POINTS)
        lo, hi = pts.min(0), pts.max(0)
        centre, extent = (lo + hi) / 2, hi - lo
        centre = centre + extent * rng.uniform(-0.2, 0.2, 2)
        half = extent * rng.uniform(0.5, 2.0, 2) / 2
        img = render(pts, centre - half, centre + half, SIZE)
        if rng.random() > 0.5:
            img = img.T
        if rng.random() > 0.5:
            img = img[::-1]
        if rng.random() > 0.5:
            img = img[:, ::-1]
        rgb = cv2.cvtColor(hsv_colorize(np.ascontiguousarray(img)), cv2.COLOR_HSV2RGB)
        if rng.random() > 0.5:
            sigma = rng.uniform(0.5, 1.0)
            rgb = cv2.GaussianBlur(rgb, (3, 3), sigma)
        Image.fromarray(rgb).save(path)

    def generate(params, n_images, out_dir):
        rng = np.random.default_rng()
        for i in range(n_images):
            os.makedirs(os.path.join(out_dir, str(i)), exist_ok=True)
            system = params.systems[i, : int(params.n_maps[i])]
            make_one(system, rng, os.path.join(out_dir, str(i), f"image_{i}.png"))

    return generate


@pytest.mark.parametrize("provider", ["reference", backend_param("cpu")])
@pytest.mark.parametrize("n_images", bench_sizes("generate"))
def test_generate(benchmark, provider, n_images):
    from ofdb_fast.fractal.dataset import GenerateOptions, generate
    from ofdb_fast.fractal.ifs import sample_systems

    root = tempfile.mkdtemp(prefix="ofdb-bench-generate-")
    counter = [0]

    def setup():
        counter[0] += 1
        return (os.path.join(root, f"run{counter[0]}"),), {}

    if provider == "reference":
        ref_generate = _numba_reference()
        params = sample_systems(n_images, seed=0)
        ref_generate(params, 2, os.path.join(root, "warmup-jit"))  # numba compile outside timing

        def run(out_dir):
            ref_generate(params, n_images, out_dir)
    else:
        def run(out_dir):
            generate(GenerateOptions(dataset_dir=out_dir, num_systems=n_images, num_class=n_images, size=SIZE,
                                     n_points=N_POINTS, backend=provider, progress=False))

    try:
        benchmark.group = f"generate|{n_images}"
        benchmark.extra_info.update(device="cpu", dtype="uint8", shape=[n_images, SIZE, SIZE, 3],
                                    workers=os.cpu_count())
        benchmark.pedantic(run, setup=setup, rounds=1, warmup_rounds=1)
        if benchmark.stats is not None:
            benchmark.extra_info["images_per_s"] = n_images / benchmark.stats.stats.mean
    finally:
        shutil.rmtree(root, ignore_errors=True)
