"""A synthetic MVTec-AD-format dataset: textures and objects with pixel-exact defect masks.

Used as a realistic test fixture and as the demo default (no download needed). Everything is
NumPy + PIL; the default dataset (4 categories, 128 px) is written in a few seconds.

Conventions:
- Determinism: each image is drawn from its own ``np.random.default_rng`` keyed by
  ``(seed, crc32(category), split, defect type, index)``, so an image does not depend on which
  other categories or how many images are generated.
- Normal variation: textures change phase, orientation, lighting gradient and fine noise;
  objects change position, rotation, brightness and light direction, on a noisy background.
- Defects are composited on the clean image inside an intended region; the ground-truth mask is
  that region restricted to (and within 1 px of) pixels whose saved 8-bit value changed, and
  pixels outside the mask keep their clean value. So the mask is exactly the altered pixels,
  dilated by at most 1 px.
- Layout: ``<root>/<category>/{train/good, test/good, test/<type>, ground_truth/<type>}``,
  ``000.png`` ... and ``000_mask.png`` (0/255). Each category is written to a temporary
  directory inside ``root`` and moved into place with ``os.replace``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import prepare_output_dir, staged_dir

TEXTURES = ("weave", "grain")
OBJECTS = ("washer", "plate")
CATEGORIES = {
    "weave": "woven fabric (plain weave), small rotation/phase/lighting changes",
    "grain": "grainy sand-blasted metal surface with faint brushing",
    "washer": "tab washer on dark felt: free rotation, position/brightness jitter",
    "plate": "brushed aluminium plate with four holes: small pose/brightness jitter",
}
DEFECTS = {
    "weave": ("scratch", "hole", "stain", "contamination"),
    "grain": ("scratch", "hole", "stain", "contamination"),
    "washer": ("scratch", "stain", "missing", "contamination"),
    "plate": ("scratch", "hole", "missing", "contamination"),
}
_SPLITS = {"train": 0, "test_good": 1, "test_defect": 2}


# ---------------------------------------------------------------------------- primitives
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy + 0.5, xx + 0.5


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in ~[-1, 1]: a random ``cells x cells`` grid, bicubic upsampled."""
    from PIL import Image

    low = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = np.asarray(Image.fromarray(low, "F").resize((size + 2 * size // cells, size + 2 * size // cells),
                                                      Image.BICUBIC))
    off = size // cells
    return big[off:off + size, off:off + size].astype(np.float64) / 1.5


def _blur(a: np.ndarray, sigma: float, axis: int | None = None) -> np.ndarray:
    """Separable Gaussian blur with edge replication (small sigmas)."""
    radius = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    for ax in ((0, 1) if axis is None else (axis,)):
        pad = [(0, 0)] * a.ndim
        pad[ax] = (radius, radius)
        p = np.pad(a, pad, mode="edge")
        a = sum(w * np.take(p, np.arange(i, i + a.shape[ax]), axis=ax) for i, w in enumerate(k))
    return a


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 (8-neighbour) binary dilation."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_or.reduce([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])


def _curve(rng: np.random.Generator, start: np.ndarray, length: float, bend: float,
           wiggle: float = 0.0) -> np.ndarray:
    """Points ``[n, 2]`` (y, x) along a random quadratic Bezier (plus optional sine wiggle)."""
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([-direction[1], direction[0]])
    end = start + direction * length
    ctrl = (start + end) / 2 + normal * rng.uniform(-bend, bend) * length
    t = np.linspace(0, 1, max(8, int(4 * length)))[:, None]
    pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t ** 2 * end
    if wiggle:
        pts += normal * wiggle * np.sin(2 * np.pi * (t * rng.uniform(1.5, 3.5) + rng.uniform()))
    return pts


def _distance_to(pts: np.ndarray, size: int, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to a polyline's sample points, and the nearest point's index
    (computed in the points' bounding box only; far pixels get +inf)."""
    dist = np.full((size, size), np.inf)
    idx = np.zeros((size, size), np.int64)
    y0, x0 = np.maximum(np.floor(pts.min(0) - pad), 0).astype(int)
    y1, x1 = np.minimum(np.ceil(pts.max(0) + pad), size).astype(int)
    if y1 <= y0 or x1 <= x0:
        return dist, idx
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    d2 = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    idx[y0:y1, x0:x1] = d2.argmin(-1)
    dist[y0:y1, x0:x1] = np.sqrt(d2.min(-1))
    return dist, idx


# ---------------------------------------------------------------------------- normal images
class _Scene:
    """A clean image plus what defects need: where they may go and how to re-render."""

    def __init__(self, image: np.ndarray, allowed: np.ndarray, background: np.ndarray | None = None,
                 alpha: np.ndarray | None = None, obj: np.ndarray | None = None, kind: str = "texture"):
        self.image, self.allowed = image, allowed
        self.background, self.alpha, self.obj, self.kind = background, alpha, obj, kind


def _lighting(rng, size, yy, xx, amount):
    a = rng.uniform(0, 2 * np.pi)
    return 1 + amount * ((yy / size - 0.5) * np.sin(a) + (xx / size - 0.5) * np.cos(a))


def _weave(rng: np.random.Generator, size: int) -> _Scene:
    yy, xx = _grid(size)
    theta = rng.uniform(-0.06, 0.06)
    period = size / rng.uniform(14.0, 15.5)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform()
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period + rng.uniform()
    fu, fv = u % 1.0, v % 1.0
    warp_on_top = (np.floor(u) + np.floor(v)) % 2 == 0
    across_warp, across_weft = np.sin(np.pi * fu) ** 0.7, np.sin(np.pi * fv) ** 0.7
    warp = across_warp * (0.75 + 0.25 * np.sin(np.pi * fv))  # dives under at the cell ends
    weft = across_weft * (0.75 + 0.25 * np.sin(np.pi * fu))
    fibres = 0.03 * _blur(rng.standard_normal((size, size)), 0.6)
    level = 0.42 + 0.42 * np.where(warp_on_top, warp, weft) + fibres
    level *= _lighting(rng, size, yy, xx, 0.12) * rng.uniform(0.93, 1.07)
    level += 0.03 * _noise(rng, size, 4)
    color = np.where(warp_on_top[..., None], [0.85, 0.77, 0.62], [0.82, 0.75, 0.61])
    img = np.clip(level[..., None] * color, 0, 1)
    return _Scene(img, np.ones((size, size), bool))


def _grain(rng: np.random.Generator, size: int) -> _Scene:
    yy, xx = _grid(size)
    level = 0.52 + 0.05 * _noise(rng, size, 3) + 0.04 * _noise(rng, size, 12)
    level += 0.025 * _blur(rng.standard_normal((size, size)), 2.5, axis=1)  # faint brushing
    level += 0.055 * _blur(rng.standard_normal((size, size)), 0.5)  # grain
    level *= _lighting(rng, size, yy, xx, 0.15) * rng.uniform(0.94, 1.06)
    img = np.clip(level[..., None] * np.array([0.97, 1.0, 1.04]), 0, 1)
    return _Scene(img, np.ones((size, size), bool))


def _felt(rng, size, base, tint):
    level = base + 0.02 * _noise(rng, size, 6) + 0.025 * _blur(rng.standard_normal((size, size)), 0.7)
    return np.clip(level[..., None] * np.asarray(tint), 0, 1)


def _washer(rng: np.random.Generator, size: int) -> _Scene:
    yy, xx = _grid(size)
    s = size / 128.0
    cy, cx = size / 2 + rng.uniform(-5, 5, 2) * s
    r_out, r_in = 40 * s * rng.uniform(0.98, 1.02), 17 * s
    dy, dx = yy - cy, xx - cx
    d = np.hypot(dy, dx)
    ang = np.arctan2(dy, dx)
    rot = rng.uniform(0, 2 * np.pi)
    # Tab: a rounded rectangle sticking out of the ring at angle ``rot``.
    along = dx * np.cos(rot) + dy * np.sin(rot)
    across = -dx * np.sin(rot) + dy * np.cos(rot)
    tab = np.clip(0.5 - (np.abs(across) - 7 * s), 0, 1) * np.clip(0.5 - (along - (r_out + 11 * s)), 0, 1) \
        * np.clip(along, 0, 1)
    ring = np.clip(r_out - d + 0.5, 0, 1)
    alpha = np.maximum(ring, tab) * np.clip(d - r_in + 0.5, 0, 1)
    light = rng.uniform(0, 2 * np.pi)
    bevel = np.exp(-((d - r_out) / (3 * s)) ** 2) + np.exp(-((d - r_in) / (3 * s)) ** 2)
    level = 0.58 + 0.12 * np.cos(ang - light) + 0.12 * bevel * np.cos(ang - light + np.pi)
    level += 0.03 * np.sin(2 * np.pi * d / (1.7 * s) + 2 * _noise(rng, size, 5))  # machining rings
    level += 0.02 * _blur(rng.standard_normal((size, size)), 0.5)
    level *= rng.uniform(0.9, 1.1)
    obj = np.clip(level[..., None] * np.array([0.95, 0.97, 1.0]), 0, 1)
    bg = _felt(rng, size, 0.2, [0.75, 0.85, 0.8])
    shadow = 1 - 0.4 * _blur(np.roll(alpha, (int(2 * s), int(2 * s)), (0, 1)), 2.0 * s)
    bg = bg * shadow[..., None]
    img = bg * (1 - alpha[..., None]) + obj * alpha[..., None]
    allowed = (alpha >= 1) & (d > r_in + 2.5 * s) & (d < r_out - 2.5 * s)
    return _Scene(img, allowed, bg, alpha, obj, kind="object")


def _plate(rng: np.random.Generator, size: int) -> _Scene:
    yy, xx = _grid(size)
    s = size / 128.0
    cy, cx = size / 2 + rng.uniform(-4, 4, 2) * s
    rot = rng.uniform(-0.14, 0.14)
    ly = -(xx - cx) * np.sin(rot) + (yy - cy) * np.cos(rot)
    lx = (xx - cx) * np.cos(rot) + (yy - cy) * np.sin(rot)
    half = np.array([29.0, 40.0]) * s
    corner = 6 * s
    qy, qx = np.abs(ly) - (half[0] - corner), np.abs(lx) - (half[1] - corner)
    sd = np.hypot(np.maximum(qy, 0), np.maximum(qx, 0)) + np.minimum(np.maximum(qy, qx), 0) - corner
    alpha = np.clip(0.5 - sd, 0, 1)
    for hy in (-1, 1):
        for hx in (-1, 1):
            dh = np.hypot(ly - hy * (half[0] - 9 * s), lx - hx * (half[1] - 9 * s))
            alpha *= np.clip(dh - 4.5 * s + 0.5, 0, 1)
    # Brushed aluminium: noise stretched along the plate's long axis.
    brushed = _blur(rng.standard_normal((size, size)), 3.0 * s, axis=1)
    level = 0.66 + 0.07 * brushed / max(brushed.std(), 1e-9) * 0.5 + 0.02 * _noise(rng, size, 3)
    level *= _lighting(rng, size, yy, xx, 0.2) * rng.uniform(0.9, 1.1)
    edge = np.exp(-((sd + 1.5 * s) / (1.2 * s)) ** 2)
    level += 0.12 * edge * np.sign(np.sin(rng.uniform(0, 2 * np.pi)) + 0.1)
    obj = np.clip(level[..., None] * np.array([0.97, 0.98, 1.0]), 0, 1)
    bg = _felt(rng, size, 0.32, [0.55, 0.6, 0.75])
    img = bg * (1 - alpha[..., None]) + obj * alpha[..., None]
    allowed = (alpha >= 1) & (sd < -4 * s)
    return _Scene(img, allowed, bg, alpha, obj, kind="object")


_SCENES: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "weave": _weave, "grain": _grain, "washer": _washer, "plate": _plate,
}


# ---------------------------------------------------------------------------- defects
# Each returns (defective image, intended region weight in [0, 1]).
def _pick(rng: np.random.Generator, scene: _Scene, margin: int) -> np.ndarray:
    allowed = scene.allowed.copy()
    size = allowed.shape[0]
    allowed[:margin] = allowed[-margin:] = False
    allowed[:, :margin] = allowed[:, -margin:] = False
    ys, xs = np.nonzero(allowed)
    i = rng.integers(ys.size)
    return np.array([ys[i] + 0.5, xs[i] + 0.5]) if ys.size else np.array([size / 2, size / 2])


def _scratch(rng, scene, size):
    s = size / 128.0
    pts = _curve(rng, _pick(rng, scene, int(12 * s)), rng.uniform(18, 40) * s, 0.35)
    dist, idx = _distance_to(pts, size, 4)
    half_width = rng.uniform(0.5, 0.9) * s
    taper = np.sin(np.pi * np.clip(idx / (len(pts) - 1), 0.02, 0.98)) ** 0.4
    alpha = np.clip(1 - np.maximum(dist - half_width, 0) / 0.9, 0, 1) * taper
    target = 0.95 if rng.uniform() < 0.7 else 0.12  # a bright gouge or a dark furrow
    k = rng.uniform(0.45, 0.7)
    a = (alpha * k)[..., None]
    return scene.image * (1 - a) + a * target, alpha


def _hole(rng, scene, size):
    s = size / 128.0
    yy, xx = _grid(size)
    c = _pick(rng, scene, int(10 * s))
    r = rng.uniform(2.2, 4.2) * s
    aspect, rot = rng.uniform(0.75, 1.25), rng.uniform(0, np.pi)
    dy, dx = yy - c[0], xx - c[1]
    ey = (-dx * np.sin(rot) + dy * np.cos(rot)) * aspect
    ex = dx * np.cos(rot) + dy * np.sin(rot)
    d = np.hypot(ey, ex)
    alpha = _smoothstep(r + 1.0, r - 1.0, d)
    wall = 0.05 + 0.08 * np.clip(0.5 + (ey * 0.7 + ex * 0.7) / (2 * r), 0, 1)  # one lit inner wall
    rim = 0.12 * np.exp(-((d - r - 1.2) / 0.8) ** 2) * (d > r)
    out = scene.image * (1 - alpha[..., None]) + (alpha * wall)[..., None] + rim[..., None]
    return np.clip(out, 0, 1), np.maximum(alpha, rim / 0.12)


def _stain(rng, scene, size):
    s = size / 128.0
    yy, xx = _grid(size)
    c = _pick(rng, scene, int(12 * s))
    radius = rng.uniform(6, 11) * s
    aspect, rot = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
    dy, dx = yy - c[0], xx - c[1]
    d = np.hypot((-dx * np.sin(rot) + dy * np.cos(rot)) / aspect, dx * np.cos(rot) + dy * np.sin(rot))
    field = 1 - d / radius + 0.45 * _noise(rng, size, max(4, size // 10))
    alpha = _smoothstep(0.0, 0.35, field) * (0.65 + 0.35 * _noise(rng, size, max(4, size // 6)).clip(-1, 1))
    alpha = np.clip(alpha, 0, 1) * (d < 2.2 * radius)
    tint = np.array([0.62, 0.47, 0.30]) if rng.uniform() < 0.6 else np.array([0.48, 0.49, 0.55])
    k = rng.uniform(0.65, 0.9)
    a = (alpha * k)[..., None]
    return scene.image * (1 - a + a * tint), alpha


def _contamination(rng, scene, size):
    s = size / 128.0
    yy, xx = _grid(size)
    c = _pick(rng, scene, int(14 * s))
    color = np.array([[0.12, 0.1, 0.08], [0.55, 0.12, 0.1], [0.15, 0.2, 0.5], [0.9, 0.9, 0.85]][rng.integers(4)])
    if rng.uniform() < 0.5:  # a fibre
        pts = _curve(rng, c, rng.uniform(20, 40) * s, 0.5, wiggle=rng.uniform(1, 3) * s)
        dist, _ = _distance_to(pts, size, 4)
        alpha = np.clip(1 - np.maximum(dist - 0.6 * s, 0) / 0.8, 0, 1) * rng.uniform(0.7, 0.95)
    else:  # specks of dirt
        alpha = np.zeros((size, size))
        for _ in range(rng.integers(4, 11)):
            p = c + rng.normal(0, 4 * s, 2)
            r = rng.uniform(0.8, 1.9) * s
            alpha = np.maximum(alpha, _smoothstep(r + 0.8, r - 0.4, np.hypot(yy - p[0], xx - p[1])))
        alpha *= rng.uniform(0.75, 0.95)
    a = alpha[..., None]
    return scene.image * (1 - a) + a * color, alpha


def _missing(rng, scene, size):
    """A piece bitten out of the object's edge: background shows through."""
    s = size / 128.0
    yy, xx = _grid(size)
    edge = (scene.alpha > 0.2) & (scene.alpha < 0.8)
    ys, xs = np.nonzero(edge)
    i = rng.integers(ys.size)
    r = rng.uniform(5, 9) * s
    bite = _smoothstep(r + 0.7, r - 0.7, np.hypot(yy - ys[i] - 0.5, xx - xs[i] - 0.5))
    # A slightly jagged break: perturb the bite outline with fine noise.
    bite = np.clip(bite + 0.5 * _noise(rng, size, max(8, size // 5)) * (bite > 0.05) * (bite < 0.95), 0, 1)
    new_alpha = (scene.alpha * (1 - bite))[..., None]
    return scene.background * (1 - new_alpha) + scene.obj * new_alpha, scene.alpha * bite


_DEFECT_FNS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "contamination": _contamination,
               "missing": _missing}


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _rng(seed: int, category: str, split: str, defect: str, index: int) -> np.random.Generator:
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(category.encode()), _SPLITS[split],
           zlib.crc32(defect.encode()), int(index)]
    return np.random.default_rng(key)


def render(category: str, size: int, seed: int, split: str, index: int,
           defect: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``(clean uint8 [S, S, 3], image uint8 [S, S, 3], mask bool [S, S])``.

    ``defect=None`` gives a normal image (image == clean, mask empty). A defect image differs
    from ``clean`` exactly on ``mask`` pixels, up to a 1 px border of unchanged pixels.
    """
    if category not in _SCENES:
        raise ValueError(f"category must be one of {sorted(_SCENES)}, got {category!r}")
    rng = _rng(seed, category, "test_defect" if defect else split, defect or "good", index)
    scene = _SCENES[category](rng, size)
    clean = _to_u8(scene.image)
    if defect is None:
        return clean, clean.copy(), np.zeros((size, size), bool)
    if defect not in DEFECTS[category]:
        raise ValueError(f"defect must be one of {DEFECTS[category]} for {category!r}, got {defect!r}")
    for _ in range(20):  # redraw the rare defect that quantises to (almost) nothing
        altered, region = _DEFECT_FNS[defect](rng, scene, size)
        if scene.alpha is not None and defect in ("scratch", "hole", "stain"):
            # Surface defects stay on the part (where it is opaque enough to carry them).
            keep = np.clip(scene.alpha * 1.25 - 0.25, 0, 1)
            altered = scene.image + (altered - scene.image) * keep[..., None]
            region = region * keep
        intended = region > 0.15
        image = np.where(intended[..., None], _to_u8(altered), clean)
        changed = (image != clean).any(-1)
        mask = intended & _dilate(changed)
        if changed.sum() >= 6:
            return clean, image, mask
    raise RuntimeError(f"could not draw a visible {defect} on {category} (seed {seed}, index {index})")


# ---------------------------------------------------------------------------- dataset
def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_category(directory: Path, category: str, size: int, n_train: int, n_test_good: int,
                    n_test_defect: int, seed: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    jobs: list[tuple[str, str | None, int]] = [("train", None, i) for i in range(n_train)]
    jobs += [("test_good", None, i) for i in range(n_test_good)]
    jobs += [("test_defect", d, i) for d in DEFECTS[category] for i in range(n_test_defect)]
    for split, defect, i in jobs:
        _, image, mask = render(category, size, seed, split, i, defect)
        sub = "train/good" if split == "train" else f"test/{defect or 'good'}"
        (directory / sub).mkdir(parents=True, exist_ok=True)
        _save_png(image, directory / sub / f"{i:03d}.png")
        if defect:
            (directory / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            _save_png(mask.astype(np.uint8) * 255, directory / "ground_truth" / defect / f"{i:03d}_mask.png")
        counts[sub] = counts.get(sub, 0) + 1
    return counts


def make_dataset(root: str | os.PathLike, *, categories: list[str] | tuple[str, ...] | None = None,
                 size: int = 128, n_train: int = 20, n_test_good: int = 6, n_test_defect: int = 4,
                 seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic MVTec-format dataset.

    Args:
        root: output directory; must be absent or empty unless ``overwrite`` (which replaces
            only the generated category directories).
        categories: subset of :data:`CATEGORIES` (default: all).
        size: image side in pixels (>= 64; geometry scales with it).
        n_train: normal training images per category.
        n_test_good: normal test images per category.
        n_test_defect: test images per defect type per category.
        seed: dataset seed.
        overwrite: allow writing into a non-empty ``root``.

    Returns:
        ``{"root": str, "categories": {category: {"train/good": n, "test/good": n,
        "test/<type>": n, ...}}, "n_images": total}``.

    Example:
        >>> info = make_dataset("/tmp/synth_ad", categories=["weave"], n_train=4)  # doctest: +SKIP
        >>> info["categories"]["weave"]["train/good"]  # doctest: +SKIP
        4
    """
    cats = list(CATEGORIES) if categories is None else list(categories)
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown or not cats:
        raise ValueError(f"categories must be a non-empty subset of {list(CATEGORIES)}, got {cats}")
    for name, value, lo in (("size", size, 64), ("n_train", n_train, 1), ("n_test_good", n_test_good, 1),
                            ("n_test_defect", n_test_defect, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    root = Path(root)
    root = prepare_output_dir(root, overwrite, "output", error=ValueError,
                              hint="pass overwrite=True (--overwrite) to replace its synthetic categories")
    result: dict[str, Any] = {"root": str(root), "categories": {}, "n_images": 0}
    for cat in cats:
        with staged_dir(root / cat) as tmp:
            counts = _write_category(tmp, cat, int(size), int(n_train), int(n_test_good), int(n_test_defect),
                                     int(seed))
        result["categories"][cat] = counts
        result["n_images"] += sum(counts.values())
    return result


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``ofdb-fast synth ROOT [--categories ...] [--size] [--seed] [--overwrite]``."""
    p = subparsers.add_parser("synth", help="write a synthetic MVTec-format anomaly detection dataset",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("root", metavar="ROOT", help="output directory (absent or empty unless --overwrite)")
    p.add_argument("--categories", nargs="+", choices=list(CATEGORIES), default=None,
                   help="categories to write (default: all)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--n-train", type=int, default=20, help="normal training images per category")
    p.add_argument("--n-test-good", type=int, default=6, help="normal test images per category")
    p.add_argument("--n-test-defect", type=int, default=4, help="test images per defect type")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing synthetic categories")
    p.set_defaults(func=run)


def run(args) -> int:
    info = make_dataset(args.root, categories=args.categories, size=args.size, n_train=args.n_train,
                        n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, seed=args.seed,
                        overwrite=args.overwrite)
    for cat, counts in info["categories"].items():
        print(f"{cat}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {info['n_images']} images to {info['root']}")
    return 0
