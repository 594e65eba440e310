"""NumPy reference of ``ifs_render``: IFS chaos game, window, raster, flips, colour, blur.

This module is the spec; ``csrc/fractal/ifs_render_cpu.cpp`` equals it bit for bit.

Layout and dtypes:
- ``systems``: float64 ``[B, K, 2, 3]``; row k of system b is ``[[a, b, e], [c, d, f]]`` and the map is
  ``f_k(x, y) = (a*x + b*y + e, c*x + d*y + f)``, evaluated as ``(a*x + b*y) + e`` (no fma).
  Only the first ``n_maps[b]`` maps of system b are used.
- Output ``"rgb"``: uint8 ``[B, H, W, 3]`` (RGB order); ``"counts"``: int32 ``[B, H, W]`` raw hit
  counts after jitter and window, before flips/colour/blur.

Per image b (id ``image_ids[b]``), following fractals.md a.2-a.4 (F4AD ``IFSGenerator.generate``):

1. Jitter (``config.jitter``): attempt t in ``0..jitter_tries-1`` draws ``k = below(n_maps)`` (JITTER
   counter 2t) and ``factor = U(jitter_range)`` (counter 2t+1), multiplies a fresh copy's row k (linear part
   and translation) by ``factor`` and accepts it iff the largest singular value over the used maps is
   ``<= 1`` (closed form ``(sqrt((a+d)^2 + (b-c)^2) + sqrt((a-d)^2 + (b+c)^2)) / 2``). After all
   rejections the unjittered system is used.
2. Probabilities: ``probs`` if given, else ``|det A_k| / sum_j |det A_j|`` of the jittered system (sum
   taken sequentially k = 0, 1, ...). Deviation: if that sum is 0 or not finite (all maps singular or
   overflowing), the maps are equiprobable. Cumulative sums are sequential.
3. Chaos game: start at map 0's fixed point ``D = ((1 + det) - a) - d``, ``x0 = ((1 - d)*e + b*f) / D``,
   ``y0 = ((1 - a)*f + c*e) / D`` (deviation: ``(0, 0)`` when that is not finite). Point i uses
   ``r = u01(CHAOS, counter=i)`` and the first map k with ``r < cum_k`` (the last map if none).
   The start point is not stored; all ``n_points`` points are. Non-finite rule (deviation, the
   reference reads uninitialised memory): the chain stops at the first non-finite point; it and all
   later points are ignored (once one coordinate is non-finite every later point is, so this is also
   "ignore the non-finite points").
4. Window: tight bounding box of the kept points. If ``translate != 0`` or ``scale`` is set:
   extent ``E``, centre ``C = (min + max) / 2``, ``C += E * U(-translate, translate)`` (AUGMENT counters
   0, 1 for x, y), half-extent ``E * U(scale) / 2`` (counters 2, 3) or ``E / 2``; window ``C -+ half``.
   With both disabled the tight box is used as is: the minimum lands on row/col 0, the maximum on
   ``size - 1`` (or ``size - 2`` when ``span * ((size - 1) / span)`` rounds below ``size - 1``, as
   in the reference).
5. Raster: ``row = trunc((x - x_lo) * (H - 1) / span_x)``, ``col = trunc((y - y_lo) * (W - 1) / span_y)``
   (x -> row, y -> column; ``span <= 0`` -> 1); a point lands iff ``0 <= row < H`` and ``0 <= col < W``
   (tested in floating point before the cast: ``-1 < v < H``; NaN never lands). Patch (``config.patch``):
   one 3x3 mask per image, bit j = ``below(PATCH, j, 2)`` for ``(dr, dc) = divmod(j, 3)``; a landed point
   adds 1 to every masked ``(row + dr - 1, col + dc - 1)`` inside the image (the centre only if its bit
   is set). Without patch each landed point adds 1 to its pixel.
6. Flips (``config.flips``): transpose iff ``u01(AUGMENT, 4) > 0.5`` (only when H == W: a transpose
   would change the shape), vertical iff counter 5 ``> 0.5``, horizontal iff counter 6 ``> 0.5``.
7. Colour (``config.color``): ``hue_shift = u01(7) * 255``, ``sat = trunc(U(8; 0.3, 1) * 255)``,
   ``val = trunc(U(9; 0.5, 1) * 255)``; pixel with ``n > 0`` hits gets
   ``H = floor(n / max_n * 255 + hue_shift) & 255`` and RGB ``= lut[H]`` with the per-image 256-entry
   OpenCV 8-bit HSV->RGB table (:func:`hsv_lut`, float32 arithmetic, hue range 0..180 so H >= 180
   wraps, channel values truncated as cv2 does for whole images); ``n == 0`` is black. ``color=False``: 127 gray where ``n > 0`` (binary raster x 127).
8. Background: not implemented yet (``config.background=True`` is refused by the public op).
9. Blur (``config.blur``): iff ``u01(10) > 0.5``, ``sigma = U(11; blur_sigma)``; weights
   ``w = exp(-1 / (2 sigma^2))`` (``math.exp``, glibc, the same libm call as C++ ``std::exp``),
   ``[w, 1, w] / ((w + 1) + w)``; horizontal pass then vertical pass in float64, each
   ``((k0*left + k1*centre) + k0*right)``, reflect-101 border, then round half to even and clip to
   uint8. Deviation: cv2.GaussianBlur uses fixed-point arithmetic on uint8; float64 is exactly
   reproducible across backends.

RNG: the counter-based hash of ``reference/_rng.py`` keyed by ``(seed, stream, image_ids[b])`` with
streams JITTER, CHAOS, AUGMENT and PATCH, so image b depends only on ``(seed, image_ids[b])``, never on
the batch it was rendered in. Every draw above has a fixed counter, used or not.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import _rng

# AUGMENT stream counter slots (mirror: csrc/fractal/ifs_render.h, kAug*).
AUG_TRANSLATE = 0  # 0: x, 1: y
AUG_SCALE = 2  # 2: x, 3: y
AUG_FLIP = 4  # 4: transpose, 5: vertical, 6: horizontal
AUG_HUE = 7
AUG_SAT = 8
AUG_VAL = 9
AUG_BLUR = 10
AUG_SIGMA = 11


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Per-image rendering options; defaults are F4AD's ``IFSGenerator`` (OFDB-4AD) settings."""

    n_points: int = 100_000  # chaos-game points per image (all used for bbox and raster)
    jitter: bool = True  # reference "basic" jitter
    jitter_range: tuple[float, float] = (0.8, 1.1)
    jitter_tries: int = 4
    translate: float = 0.2  # window translation (0 disables)
    scale: tuple[float, float] | None = (0.5, 2.0)  # window scale per axis (None disables)
    flips: bool = True  # transpose, ud, lr each with p=0.5
    color: bool = True  # graded raster + HSV colouring; False: binary raster x127 gray
    patch: bool = False  # 3x3 random-mask splatting
    background: bool = False  # diamond-square background (not implemented yet)
    blur: bool = True  # 3x3 Gaussian, p=0.5, sigma ~ U(blur_sigma)
    blur_sigma: tuple[float, float] = (0.5, 1.0)


def sigma_max(lin: np.ndarray) -> np.ndarray:
    """Largest singular value of 2x2 matrices ``lin[..., 2, 2]`` (closed form, fixed op order)."""
    a, b, c, d = lin[..., 0, 0], lin[..., 0, 1], lin[..., 1, 0], lin[..., 1, 1]
    p = (a + d) * (a + d) + (b - c) * (b - c)
    q = (a - d) * (a - d) + (b + c) * (b + c)
    return (np.sqrt(p) + np.sqrt(q)) * 0.5


def _used(n_maps: np.ndarray, n_max: int) -> np.ndarray:
    return np.arange(n_max)[None, :] < n_maps[:, None]  # [B, K]


def jitter_systems(systems, n_maps, keys, config: RenderConfig) -> np.ndarray:
    """Step 1: basic jitter of every system (``[B, K, 2, 3]`` in and out)."""
    out = systems.copy()
    n_img = systems.shape[0]
    used = _used(n_maps, systems.shape[1])
    done = np.zeros(n_img, dtype=bool)
    lo, hi = config.jitter_range
    for t in range(config.jitter_tries):
        k = _rng.below(keys, 2 * t, n_maps)
        factor = _rng.uniform(keys, 2 * t + 1, lo, hi)
        cand = systems.copy()
        cand[np.arange(n_img), k] *= factor[:, None, None]
        sig = np.where(used, sigma_max(cand[..., :2]), 0.0).max(axis=1)
        take = (sig <= 1.0) & ~done
        out[take] = cand[take]
        done |= take
    return out


def cumulative_probs(systems, n_maps, probs) -> np.ndarray:
    """Step 2: ``[B, K]`` sequential cumulative map probabilities (unused maps: +inf)."""
    n_img, n_max = systems.shape[:2]
    used = _used(n_maps, n_max)
    if probs is None:
        a, b = systems[..., 0, 0], systems[..., 0, 1]
        c, d = systems[..., 1, 0], systems[..., 1, 1]
        det = np.where(used, np.abs(a * d - b * c), 0.0)
        total = np.zeros(n_img)
        for k in range(n_max):
            total = total + det[:, k]
        ok = np.isfinite(total) & (total > 0.0)
        safe_total = np.where(ok, total, 1.0)
        p = np.where(ok[:, None], det / safe_total[:, None], 1.0 / n_maps[:, None])
    else:
        p = probs
    cum = np.empty((n_img, n_max))
    run = np.zeros(n_img)
    for k in range(n_max):
        run = run + p[:, k]
        cum[:, k] = run
    return np.where(used, cum, np.inf)


def fixed_point(systems) -> tuple[np.ndarray, np.ndarray]:
    """Map 0's fixed point ``(I - A_0)^-1 t_0`` per system, ``(0, 0)`` where not finite."""
    a, b, e = systems[:, 0, 0, 0], systems[:, 0, 0, 1], systems[:, 0, 0, 2]
    c, d, f = systems[:, 0, 1, 0], systems[:, 0, 1, 1], systems[:, 0, 1, 2]
    det = a * d - b * c
    den = 1.0 + det - a - d
    x0 = ((1.0 - d) * e + b * f) / den
    y0 = ((1.0 - a) * f + c * e) / den
    ok = np.isfinite(x0) & np.isfinite(y0)
    return np.where(ok, x0, 0.0), np.where(ok, y0, 0.0)


def chaos_game(systems, n_maps, cum, keys, n_points):
    """Step 3: points ``xs, ys`` ``[N, B]`` and the number of kept (finite) points ``[B]``."""
    n_img, n_max = systems.shape[:2]
    r = _rng.u01(keys[None, :], np.arange(n_points, dtype=np.uint64)[:, None])  # [N, B]
    # First k with r < cum_k, the last map if none: cum is non-decreasing (p >= 0), so this is
    # the number of k < n - 1 with cum_k <= r (cum is +inf from index n_maps on).
    k = np.zeros((n_points, n_img), dtype=np.int64)
    for j in range(n_max - 1):
        k += (cum[None, :, j] <= r) & (j < n_maps - 1)[None, :]
    rows = systems[np.arange(n_img)[None, :], k]  # [N, B, 2, 3]
    ca, cb, ce = rows[..., 0, 0].copy(), rows[..., 0, 1].copy(), rows[..., 0, 2].copy()
    cc, cd, cf = rows[..., 1, 0].copy(), rows[..., 1, 1].copy(), rows[..., 1, 2].copy()
    x, y = fixed_point(systems)
    xs = np.empty((n_points, n_img))
    ys = np.empty((n_points, n_img))
    for i in range(n_points):
        x, y = ca[i] * x + cb[i] * y + ce[i], cc[i] * x + cd[i] * y + cf[i]
        xs[i] = x
        ys[i] = y
    finite = np.isfinite(xs) & np.isfinite(ys)
    n_kept = np.where(finite.all(axis=0), n_points, np.argmin(finite, axis=0))
    return xs, ys, n_kept


def window(xs, ys, kept, keys, config: RenderConfig):
    """Step 4: ``(x_lo, y_lo, x_hi, y_hi)`` per image, each ``[B]``."""
    x_lo = np.where(kept, xs, np.inf).min(axis=0)
    x_hi = np.where(kept, xs, -np.inf).max(axis=0)
    y_lo = np.where(kept, ys, np.inf).min(axis=0)
    y_hi = np.where(kept, ys, -np.inf).max(axis=0)
    empty = ~kept.any(axis=0)
    x_lo, x_hi, y_lo, y_hi = (np.where(empty, 0.0, v) for v in (x_lo, x_hi, y_lo, y_hi))
    if config.translate == 0 and config.scale is None:
        return x_lo, y_lo, x_hi, y_hi
    ex, ey = x_hi - x_lo, y_hi - y_lo
    cx, cy = (x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0
    if config.translate != 0:
        t = float(config.translate)
        cx = cx + ex * _rng.uniform(keys, AUG_TRANSLATE, -t, t)
        cy = cy + ey * _rng.uniform(keys, AUG_TRANSLATE + 1, -t, t)
    if config.scale is not None:
        lo, hi = config.scale
        hx = ex * _rng.uniform(keys, AUG_SCALE, lo, hi) / 2.0
        hy = ey * _rng.uniform(keys, AUG_SCALE + 1, lo, hi) / 2.0
    else:
        hx, hy = ex / 2.0, ey / 2.0
    return cx - hx, cy - hy, cx + hx, cy + hy


def rasterize(xs, ys, kept, box, height, width, patch_keys=None) -> np.ndarray:
    """Step 5: int32 hit counts ``[B, H, W]``."""
    n_img = xs.shape[1]
    x_lo, y_lo, x_hi, y_hi = box
    span_x, span_y = x_hi - x_lo, y_hi - y_lo
    span_x = np.where(span_x <= 0, 1.0, span_x)
    span_y = np.where(span_y <= 0, 1.0, span_y)
    fr = (xs - x_lo) * ((height - 1) / span_x)
    fc = (ys - y_lo) * ((width - 1) / span_y)
    lands = kept & (fr > -1.0) & (fr < height) & (fc > -1.0) & (fc < width)
    img = np.broadcast_to(np.arange(n_img), xs.shape)[lands]
    row = np.trunc(fr[lands]).astype(np.int64)
    col = np.trunc(fc[lands]).astype(np.int64)
    if patch_keys is None:
        offsets = [(0, 0, None)]
    else:
        mask = np.stack([_rng.below(patch_keys, j, 2) for j in range(9)], axis=1)  # [B, 9]
        offsets = [(j // 3 - 1, j % 3 - 1, mask[:, j].astype(bool)) for j in range(9)]
    counts = np.zeros(n_img * height * width, dtype=np.int64)
    for dr, dc, on in offsets:
        rr, cc = row + dr, col + dc
        ok = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        if on is not None:
            ok &= on[img]
        flat = (img[ok] * height + rr[ok]) * width + cc[ok]
        counts += np.bincount(flat, minlength=counts.size)
    return counts.reshape(n_img, height, width).astype(np.int32)


def fma32(a, b, c) -> np.ndarray:
    """float32 ``a*b + c`` rounded once (as ``std::fmaf``), for float32 inputs.

    ``a*b`` is exact in float64; the float64 sum is rounded to odd (TwoSum error decides), which
    makes the final rounding to float32 correct (53 >= 24 + 2 bits).
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    prod = a * b
    r = c + prod
    bp = r - c
    err = (c - (r - bp)) + (prod - bp)
    even = (np.asarray(r).view(np.int64) & 1) == 0
    r = np.where((err != 0) & even, np.nextafter(r, np.where(err > 0, np.inf, -np.inf)), r)
    return r.astype(np.float32)


def hsv_lut(sat: int, val: int) -> np.ndarray:
    """uint8 ``[256, 3]`` RGB for 8-bit HSV ``(H, sat, val)``, H = 0..255, OpenCV semantics.

    Mirrors the vectorised path of OpenCV's uint8 ``COLOR_HSV2RGB`` (the one that converts whole
    512-wide images; hue range 0..180), all in float32: ``h = H * (6/180)``, ``i = trunc(h)``,
    ``f = h - i``, ``sector = i - trunc(i * (1/6)) * 6`` (so H >= 180 wraps), ``s = S * (1/255)``,
    ``v = V * (1/255)``, values ``v, v*(1-s), v*fma(-s, f, 1), v*fma(-s, 1-f, 1)`` picked per
    sector, output ``trunc(x * 255)``. Deviations from the task note, both measured against cv2 5.0
    (x86-64, AVX-512 dispatch; all 65,536 (S, V) pairs equal): OpenCV truncates here (only its scalar
    tail rounds), and its compiler fuses ``1 - s*f`` into one fma.
    """
    f32 = np.float32
    one = f32(1.0)
    h = np.arange(256).astype(f32) * (f32(6.0) / f32(180.0))
    s = f32(sat) * (one / f32(255.0))
    v = f32(val) * (one / f32(255.0))
    pre = np.trunc(h)
    frac = h - pre
    sector = (pre - np.trunc(pre * (one / f32(6.0))) * f32(6.0)).astype(np.int64)
    tab = np.stack(
        [
            np.full(256, v, dtype=f32),
            np.full(256, v * (one - s), dtype=f32),
            v * fma32(-s, frac, one),
            v * fma32(-s, one - frac, one),
        ],
        axis=1,
    ).astype(f32)  # [256, 4]
    # (r, g, b) indices into tab per sector (OpenCV's table lists (b, g, r)).
    rgb_from_sector = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])
    rgb = np.take_along_axis(tab, rgb_from_sector[sector], axis=1)
    return np.clip(np.trunc(rgb * f32(255.0)), 0, 255).astype(np.uint8)


def _reflect101(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right neighbour indices of ``0..n-1`` with reflect-101 border."""
    idx = np.arange(n)
    left = np.abs(idx - 1)
    right = (n - 1) - np.abs((n - 1) - (idx + 1))
    if n == 1:
        left, right = idx, idx
    return left, right


def blur3(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 3x3 Gaussian of a uint8 ``[H, W, C]`` image (horizontal, then vertical, float64)."""
    s2 = 2.0 * sigma * sigma
    w = math.exp(-1.0 / s2)
    total = (w + 1.0) + w
    k0, k1 = w / total, 1.0 / total
    x = img.astype(np.float64)
    left, right = _reflect101(img.shape[1])
    x = (k0 * x[:, left] + k1 * x) + k0 * x[:, right]
    up, down = _reflect101(img.shape[0])
    x = (k0 * x[up] + k1 * x) + k0 * x[down]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def ifs_render(
    systems,  # [B, K, 2, 3] float64
    n_maps=None,  # [B] int, 1..K; None -> K
    *,
    size=512,
    seed: int = 0,
    image_ids=None,  # [B] int64; None -> arange(B)
    probs=None,  # [B, K] float64; None -> |det| / sum
    config: RenderConfig | None = None,
    output: str = "rgb",
) -> np.ndarray:
    """Render one image per IFS system (NumPy reference; see the module docstring).

    Inputs are assumed validated (the public op ``ofdb_fast.ops.ifs_render`` checks them).

    Returns:
        uint8 ``[B, H, W, 3]`` for ``output="rgb"``, int32 ``[B, H, W]`` for ``"counts"``.
    """
    config = config or RenderConfig()
    if config.background:
        raise RuntimeError("config.background=True is not implemented yet")
    systems = np.ascontiguousarray(systems, dtype=np.float64)
    n_img, n_max = systems.shape[:2]
    height, width = (size, size) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    n_maps = np.full(n_img, n_max, np.int64) if n_maps is None else np.asarray(n_maps, np.int64)
    ids = np.arange(n_img, dtype=np.int64) if image_ids is None else np.asarray(image_ids, np.int64)
    if n_img == 0:
        shape = (0, height, width) if output == "counts" else (0, height, width, 3)
        return np.zeros(shape, np.int32 if output == "counts" else np.uint8)
    key = {s: _rng.stream_key(seed, s, ids) for s in
           (_rng.STREAM_JITTER, _rng.STREAM_CHAOS, _rng.STREAM_AUGMENT, _rng.STREAM_PATCH)}
    aug = key[_rng.STREAM_AUGMENT]

    with np.errstate(all="ignore"):  # non-finite values are handled explicitly
        if config.jitter:
            systems = jitter_systems(systems, n_maps, key[_rng.STREAM_JITTER], config)
        p = None if probs is None else np.asarray(probs, np.float64)
        cum = cumulative_probs(systems, n_maps, p)
        xs, ys, n_kept = chaos_game(systems, n_maps, cum, key[_rng.STREAM_CHAOS], config.n_points)
        kept = np.arange(config.n_points)[:, None] < n_kept[None, :]
        box = window(xs, ys, kept, aug, config)
        counts = rasterize(xs, ys, kept, box, height, width,
                           key[_rng.STREAM_PATCH] if config.patch else None)
    if output == "counts":
        return counts

    out = np.zeros((n_img, height, width, 3), np.uint8)
    for b in range(n_img):
        c = counts[b]
        if config.flips:
            if height == width and _rng.u01(aug[b], AUG_FLIP) > 0.5:
                c = c.T
            if _rng.u01(aug[b], AUG_FLIP + 1) > 0.5:
                c = c[::-1, :]
            if _rng.u01(aug[b], AUG_FLIP + 2) > 0.5:
                c = c[:, ::-1]
        hit = c > 0
        if config.color:
            hue_shift = _rng.u01(aug[b], AUG_HUE) * 255.0
            sat = int(_rng.uniform(aug[b], AUG_SAT, 0.3, 1.0) * 255.0)
            val = int(_rng.uniform(aug[b], AUG_VAL, 0.5, 1.0) * 255.0)
            dens = c / max(int(c.max()), 1)
            hue = np.floor(dens * 255.0 + hue_shift).astype(np.int64) & 255
            out[b] = np.where(hit[..., None], hsv_lut(sat, val)[hue], 0)
        else:
            out[b] = np.where(hit[..., None], 127, 0)
        if config.blur and _rng.u01(aug[b], AUG_BLUR) > 0.5:
            lo, hi = config.blur_sigma
            out[b] = blur3(out[b], float(_rng.uniform(aug[b], AUG_SIGMA, lo, hi)))
    return out
