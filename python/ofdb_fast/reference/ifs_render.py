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
8. Background (``config.background``): diamond-square noise from the BACKGROUND stream, coloured
   (:func:`background_rgb`, grid side ``2**ceil(log2(max(H, W))) + 1`` cropped to ``H x W``); every
   pixel whose foreground RGB is (0, 0, 0) takes the background colour. Deviation: the decay draw
   uses the counter RNG (the reference used a fresh ``default_rng()``).
9. Blur (``config.blur``): iff ``u01(10) > 0.5``, ``sigma = U(11; blur_sigma)``; weights
   ``w = exp(-1 / (2 sigma^2))`` (``math.exp``, glibc, the same libm call as C++ ``std::exp``),
   ``[w, 1, w] / ((w + 1) + w)``; horizontal pass then vertical pass in float64, each
   ``((k0*left + k1*centre) + k0*right)``, reflect-101 border, then round half to even and clip to
   uint8. Deviation: cv2.GaussianBlur uses fixed-point arithmetic on uint8; float64 is exactly
   reproducible across backends.

RNG: the counter-based hash of ``reference/_rng.py`` keyed by ``(seed, stream, image_ids[b])`` with
streams JITTER, CHAOS, AUGMENT, PATCH and BACKGROUND, so image b depends only on ``(seed, image_ids[b])``, never on
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

# BACKGROUND stream counter slots (mirror: csrc/fractal/ifs_render.h, kBg*).
BG_COLOR = 0  # 0..5: hue_scale, hue_shift, sat_scale, sat_shift, val_scale, val_shift
BG_DECAY = 6
BG_CORNER = 7  # 7..10
BG_NOISE = 11  # then one draw per visited grid point


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
    background: bool = False  # diamond-square background
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


def hsv_to_rgb(hue, sat, val) -> np.ndarray:
    """uint8 ``[..., 3]`` RGB of 8-bit HSV arrays (broadcast), OpenCV semantics.

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
    hue, sat, val = np.broadcast_arrays(np.asarray(hue), np.asarray(sat), np.asarray(val))
    h = hue.astype(f32) * (f32(6.0) / f32(180.0))
    s = sat.astype(f32) * (one / f32(255.0))
    v = val.astype(f32) * (one / f32(255.0))
    pre = np.trunc(h)
    frac = h - pre
    sector = (pre - np.trunc(pre * (one / f32(6.0))) * f32(6.0)).astype(np.int64)
    tab = np.stack([v, v * (one - s), v * fma32(-s, frac, one), v * fma32(-s, one - frac, one)],
                   axis=-1).astype(f32)  # [..., 4]
    # (r, g, b) indices into tab per sector (OpenCV's table lists (b, g, r)).
    rgb_from_sector = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])
    rgb = np.take_along_axis(tab, rgb_from_sector[sector], axis=-1)
    return np.clip(np.trunc(rgb * f32(255.0)), 0, 255).astype(np.uint8)


def hsv_lut(sat: int, val: int) -> np.ndarray:
    """uint8 ``[256, 3]``: :func:`hsv_to_rgb` of ``(H, sat, val)`` for H = 0..255."""
    return hsv_to_rgb(np.arange(256), sat, val)


def diamond_square(keys, side: int) -> np.ndarray:
    """float64 ``[B, g, g]`` diamond-square noise, ``g = 2**ceil(log2(side)) + 1`` (fractals.md a.5).

    Draws (BACKGROUND stream): decay ``U(0.4, 0.8)`` (counter BG_DECAY), corners [0,0], [0,g-1],
    [g-1,0], [g-1,g-1] ``U[0,1)`` (BG_CORNER..+3), then one ``U(-m, m)`` per visited point from
    counter BG_NOISE on, in visiting order. Level k = 1..n: ``m = 0.5 * exp(decay * (1 - k))``
    (``math.exp``), ``h = 2**(n-k)``; diamond step over the centres ``(h(2a+1), h(2b+1))`` row-major,
    value ``(((nw + ne) + sw) + se) / 4 + noise``; square step over the points ``(i h, j h)`` with
    ``i + j`` odd, row-major, value ``(((up + down) + left) + right) / 4 + noise`` with toroidal
    neighbours (row 0's up is row ``g - 1 - h``, row ``g - 1``'s down is row ``h``; same for columns).
    """
    keys = np.asarray(keys)
    n = (int(side) - 1).bit_length()
    g = 2**n + 1
    n_img = keys.shape[0]
    grid = np.zeros((n_img, g, g))
    decay = _rng.uniform(keys, BG_DECAY, 0.4, 0.8)
    for c, (r0, c0) in enumerate([(0, 0), (0, g - 1), (g - 1, 0), (g - 1, g - 1)]):
        grid[:, r0, c0] = _rng.u01(keys, BG_CORNER + c)
    counter = BG_NOISE
    img = np.arange(n_img)[:, None]
    for k in range(1, n + 1):
        m = np.array([0.5 * math.exp(float(d) * (1 - k)) for d in decay])[:, None]
        h = 2 ** (n - k)
        cnt = 2 ** (k - 1)
        a = np.arange(cnt)
        r = np.repeat(h * (2 * a + 1), cnt)
        c = np.tile(h * (2 * a + 1), cnt)
        noise = _rng.uniform(keys[:, None], counter + np.arange(r.size, dtype=np.uint64)[None, :], -m, m)
        counter += r.size
        mean = (((grid[img, r - h, c - h] + grid[img, r - h, c + h]) + grid[img, r + h, c - h])
                + grid[img, r + h, c + h]) / 4.0
        grid[img, r, c] = mean + noise
        i, j = np.meshgrid(np.arange(2**k + 1), np.arange(2**k + 1), indexing="ij")
        odd = (i + j) % 2 == 1  # row-major order of the square-step points
        r, c = i[odd] * h, j[odd] * h
        noise = _rng.uniform(keys[:, None], counter + np.arange(r.size, dtype=np.uint64)[None, :], -m, m)
        counter += r.size
        up = np.where(r - h >= 0, r - h, g - 1 - h)
        down = np.where(r + h <= g - 1, r + h, h)
        left = np.where(c - h >= 0, c - h, g - 1 - h)
        right = np.where(c + h <= g - 1, c + h, h)
        mean = (((grid[img, up, c] + grid[img, down, c]) + grid[img, r, left]) + grid[img, r, right]) / 4.0
        grid[img, r, c] = mean + noise
    return grid


def background_rgb(keys, height: int, width: int) -> np.ndarray:
    """uint8 ``[B, H, W, 3]``: diamond-square noise cropped and coloured (fractals.md a.5).

    Draws BG_COLOR..+5: ``hue_scale = U(0.25, 1)*255``, ``hue_shift = U[0,1)*255``,
    ``sat_scale = U(0.1, 0.3)*255``, ``sat_shift = U(0.4, 0.6)*255``, ``val_scale = U(0.3, 0.6)*255``,
    ``val_shift = U(0.4, 0.6)*255``; ``H = floor(x*hue_scale + hue_shift) & 255``,
    ``S = floor(min(x*sat_scale + sat_shift, 255)) & 255``, V likewise (negative values wrap, the
    defined form of the reference's uint8 casts), then :func:`hsv_to_rgb`.
    """
    keys = np.asarray(keys)
    x = diamond_square(keys, max(height, width))[:, :height, :width]
    d = [(_rng.uniform(keys, BG_COLOR + c, lo, hi) * 255.0)[:, None, None]
         for c, (lo, hi) in enumerate([(0.25, 1.0), (0.0, 1.0), (0.1, 0.3), (0.4, 0.6), (0.3, 0.6), (0.4, 0.6)])]
    hue = np.floor(x * d[0] + d[1]).astype(np.int64) & 255
    sat = np.floor(np.minimum(x * d[2] + d[3], 255.0)).astype(np.int64) & 255
    val = np.floor(np.minimum(x * d[4] + d[5], 255.0)).astype(np.int64) & 255
    return hsv_to_rgb(hue, sat, val)


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
    systems = np.ascontiguousarray(systems, dtype=np.float64)
    n_img, n_max = systems.shape[:2]
    height, width = (size, size) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    n_maps = np.full(n_img, n_max, np.int64) if n_maps is None else np.asarray(n_maps, np.int64)
    ids = np.arange(n_img, dtype=np.int64) if image_ids is None else np.asarray(image_ids, np.int64)
    if n_img == 0:
        shape = (0, height, width) if output == "counts" else (0, height, width, 3)
        return np.zeros(shape, np.int32 if output == "counts" else np.uint8)
    key = {s: _rng.stream_key(seed, s, ids) for s in
           (_rng.STREAM_JITTER, _rng.STREAM_CHAOS, _rng.STREAM_AUGMENT, _rng.STREAM_PATCH,
            _rng.STREAM_BACKGROUND)}
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
    if config.background:
        with np.errstate(all="ignore"):
            bg = background_rgb(key[_rng.STREAM_BACKGROUND], height, width)
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
        if config.background:
            out[b] = np.where(out[b].any(axis=-1, keepdims=True), out[b], bg[b])
        if config.blur and _rng.u01(aug[b], AUG_BLUR) > 0.5:
            lo, hi = config.blur_sigma
            out[b] = blur3(out[b], float(_rng.uniform(aug[b], AUG_SIGMA, lo, hi)))
    return out
