"""End-to-end dataset generation (render + encode + write) at 512x512, 100k points.

Providers:
- ``reference``: the reference generator's approach (F4AD ``dataset_generator.py``): one
  process, the per-image pipeline of ``bench/_reference_fractal.py`` (also the baseline of
  ``bench_ifs_render.py``), then ``PIL.Image.save`` with PIL's default PNG compression; skipped
  when numba is missing.
- ``cpu`` / ``cuda``: ``ofdb_fast.fractal.dataset.generate`` with that ``ifs_render`` backend
  and the threaded PNG writer (encoding and writing stay on the CPU).

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
    pytest.importorskip("numba")
    pytest.importorskip("cv2")
    from _reference_fractal import make_reference_renderer
    from PIL import Image

    render = make_reference_renderer(SIZE, N_POINTS)

    def generate(params, n_images, out_dir):
        rng = np.random.default_rng()
        for i in range(n_images):
            os.makedirs(os.path.join(out_dir, str(i)), exist_ok=True)
            system = params.systems[i, : int(params.n_maps[i])]
            Image.fromarray(render(system, rng)).save(os.path.join(out_dir, str(i), f"image_{i}.png"))

    return generate


@pytest.mark.parametrize("provider", ["reference", backend_param("cpu"), backend_param("cuda")])
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
        benchmark.extra_info.update(device="cuda" if provider == "cuda" else "cpu", dtype="uint8",
                                    shape=[n_images, SIZE, SIZE, 3], workers=os.cpu_count())
        benchmark.pedantic(run, setup=setup, rounds=1, warmup_rounds=1)
        if benchmark.stats is not None:
            benchmark.extra_info["images_per_s"] = n_images / benchmark.stats.stats.mean
    finally:
        shutil.rmtree(root, ignore_errors=True)
