"""The reference generator's approach, as a benchmark baseline (shared by bench_ifs_render and
bench_generate).

Written from ``shared/reference/fractals.md`` a.2-a.4 (F4AD ``IFSGenerator``), not copied: one
numba ``@njit`` sequential chaos game per image storing every point, drawn with
``np.random.rand`` (numba's own unseeded stream, as the reference), a separate numba graded
render over a window (translate 0.2, per-axis scale 0.5-2), flips, numba HSV colouring, OpenCV
``HSV2RGB`` and a 3x3 ``GaussianBlur`` with p = 0.5. Single process, like the reference. Jitter
is left out (a few microseconds per image). numba and OpenCV are needed; callers skip without them.

Two versions of the chaos game:

- ``lean=False`` (the ``reference`` provider): the reference's per-step work as fractals.md a.2
  describes it: the chosen map's six coefficients unpacked from its ``[2, 3]`` block every step
  and the non-finite guard (stop before storing) every step. Measured on this VM class: 6.9 ms
  per 100k points, in line with the 6.5 ms fractals.md measured for the reference's own
  ``iterate``.
- ``lean=True`` (the ``reference_lean`` provider): the same chain with the coefficients read as
  scalars and no per-step guard, 1.6 ms per 100k points: what a careful numba port of the
  reference reaches, kept to show how much of the speed-up is the compiled pipeline itself.
"""

from __future__ import annotations

import numpy as np


def make_reference_renderer(size: int, n_points: int, lean: bool = False, raster_only: bool = False):
    """Return ``render(system [n, 2, 3] f64, rng) -> uint8 [size, size, 3]`` (JIT on first call).

    ``raster_only``: stop after the graded raster (float64 ``[size, size]``): the reference's
    per-image "iterate + render", without flips, colour and blur.
    """
    import cv2
    from numba import njit

    @njit(cache=True)
    def iterate_reference(system, cum, n_iter):
        s0 = system[0]
        den = (1.0 + (s0[0, 0] * s0[1, 1] - s0[0, 1] * s0[1, 0])) - s0[0, 0] - s0[1, 1]
        x = ((1 - s0[1, 1]) * s0[0, 2] + s0[0, 1] * s0[1, 2]) / den
        y = ((1 - s0[0, 0]) * s0[1, 2] + s0[1, 0] * s0[0, 2]) / den
        pts = np.empty((n_iter, 2))
        for i in range(n_iter):
            r = np.random.rand()
            k = cum.size - 1
            for j in range(cum.size):
                if r < cum[j]:
                    k = j
                    break
            a, b, e, c, d, f = system[k].ravel()  # the map's block unpacked each step
            x, y = a * x + b * y + e, c * x + d * y + f
            if not np.isfinite(x) or not np.isfinite(y):  # the per-step guard: stop before storing
                break
            pts[i, 0], pts[i, 1] = x, y
        return pts

    @njit(cache=True)
    def iterate_lean(system, cum, n_iter):
        a, b, e = system[0, 0, 0], system[0, 0, 1], system[0, 0, 2]
        c, d, f = system[0, 1, 0], system[0, 1, 1], system[0, 1, 2]
        den = (1.0 + (a * d - b * c)) - a - d
        x, y = ((1 - d) * e + b * f) / den, ((1 - a) * f + c * e) / den
        pts = np.empty((n_iter, 2))
        for i in range(n_iter):
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

    @njit(cache=True)
    def minmax(pts):  # one pass, as the reference's numba ``minmax`` (NumPy's axis-0 min/max is ~30x slower)
        lo = pts[0].copy()
        hi = pts[0].copy()
        for i in range(1, pts.shape[0]):
            for a in range(2):
                lo[a] = min(lo[a], pts[i, a])
                hi[a] = max(hi[a], pts[i, a])
        return lo, hi

    @njit(cache=True)
    def raster(pts, lo, hi, side):
        img = np.zeros((side, side))
        span = hi - lo
        for i in range(pts.shape[0]):
            r = int((pts[i, 0] - lo[0]) / span[0] * (side - 1))
            c = int((pts[i, 1] - lo[1]) / span[1] * (side - 1))
            if 0 <= r < side and 0 <= c < side:
                img[r, c] += 1.0
        return img / img.max()

    @njit(cache=True)
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

    iterate = iterate_lean if lean else iterate_reference

    def render(system: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        det = np.abs(system[:, 0, 0] * system[:, 1, 1] - system[:, 0, 1] * system[:, 1, 0])
        pts = iterate(system, np.cumsum(det / det.sum()), n_points)
        lo, hi = minmax(pts)
        centre, extent = (lo + hi) / 2, hi - lo
        centre = centre + extent * rng.uniform(-0.2, 0.2, 2)
        half = extent * rng.uniform(0.5, 2.0, 2) / 2
        img = raster(pts, centre - half, centre + half, size)
        if raster_only:
            return img
        if rng.random() > 0.5:
            img = img.T
        if rng.random() > 0.5:
            img = img[::-1]
        if rng.random() > 0.5:
            img = img[:, ::-1]
        rgb = cv2.cvtColor(hsv_colorize(np.ascontiguousarray(img)), cv2.COLOR_HSV2RGB)
        if rng.random() > 0.5:
            rgb = cv2.GaussianBlur(rgb, (3, 3), rng.uniform(0.5, 1.0))
        return rgb

    return render
