"""Multi-fractal composition: the ``multi-fractals`` dataset type (fractal4AD ``MultiGenerator``).

Per image b (reference a.6, "Multi-formula variant"), on a black ``size x size`` RGB canvas:

1. ``k ~ uniform{4..10}`` objects, capped at ``len(class_blocks[b])``.
2. Object j (in order): a system drawn uniformly *with replacement* from the class block; rendered
   by the ``ifs_render`` op at ``size // 2`` with ``patch=True``, ``blur=False`` and no window
   augmentation (``translate=0``, ``scale=None``: the reference renders objects in their tight
   box), keeping jitter, flips and colour; resized to ``s = int(U(0.15, 0.6) * size)`` (bilinear,
   :func:`resize_bilinear`); top-left column ``x`` and row ``y`` uniform in
   ``[-(s // 2), size - s // 2)``; clipped to the canvas and composited: the object pixel wins
   wherever any of its channels is non-zero. An object with ``s == 0`` (only for tiny ``size``)
   is skipped (the reference's ``cv2.resize`` would raise).
3. Blur iff ``u > 0.5``: 3x3 Gaussian, ``sigma ~ U(0.5, 1.0)`` (:func:`blur3`).

RNG: stream ``STREAM_MULTI``, item ``image_ids[b]``, fixed counters (used or not)::

    0                  k = 4 + below(7)
    1 + 4j  (j < 10)   system: block[below(len(block))]
    2 + 4j             size factor U(0.15, 0.6)
    3 + 4j             x (column): -(s // 2) + below(size)
    4 + 4j             y (row):    -(s // 2) + below(size)
    41                 blur iff u01 > 0.5
    42                 sigma U(0.5, 1.0)

Object j of image b is rendered with ``image_ids = image_ids[b] * OBJECT_SLOTS + j`` (the render
op's own streams: jitter, chaos game, flips, colour), so every image depends only on
``(seed, image_ids[b], class_blocks[b])``, never on the batch or backend.

Deviations (deliberate, so every backend gives identical bytes): the resize is float64 bilinear
with ``align_corners=False`` (half-pixel centres, source coordinate clamped at 0, no
antialiasing: the geometry of ``cv2.INTER_LINEAR``) rounded half to even, where OpenCV uses
11-bit fixed-point weights; the blur is float64 (weights ``exp(-1 / (2 sigma^2))``, horizontal
then vertical pass, reflect-101 border, round half to even) where ``cv2.GaussianBlur`` uses fixed
point on uint8; the canvas is always black (no diamond-square background yet).
"""

from __future__ import annotations

import numpy as np

from ..reference import _rng
from ..reference.ifs_render import blur3  # the render op's canvas blur, shared bit for bit
from .ifs import IFSParams

N_OBJECTS = (4, 10)  # inclusive range of objects per image
SIZE_RANGE = (0.15, 0.6)  # object side as a fraction of the canvas
BLUR_SIGMA = (0.5, 1.0)
OBJECT_SLOTS = 16  # render ids per image (>= N_OBJECTS[1])
_C_K, _C_OBJ, _C_BLUR, _C_SIGMA = 0, 1, 1 + 4 * N_OBJECTS[1], 2 + 4 * N_OBJECTS[1]
_IMAGES_PER_CALL = 8  # images whose objects share one ifs_render call (bounds memory)


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``img [h, w, C]`` uint8 to ``[height, width, C]`` uint8.

    ``align_corners=False``: output pixel ``i`` samples source ``(i + 0.5) * h / height - 0.5``,
    clamped to ``>= 0``; neighbours beyond the last pixel repeat it. Columns are interpolated
    first, then rows, as ``(1 - f) * a + f * b`` in float64; the result is rounded half to even.

    Example:
        >>> resize_bilinear(np.array([[[0], [100]]], np.uint8), 1, 4)[0, :, 0]
        array([  0,  25,  75, 100], dtype=uint8)
    """
    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0)

    r0, r1, fr = taps(img.shape[0], height)
    c0, c1, fc = taps(img.shape[1], width)
    x = img.astype(np.float64)
    fc = fc[None, :, None]
    x = (1.0 - fc) * x[:, c0] + fc * x[:, c1]
    fr = fr[:, None, None]
    x = (1.0 - fr) * x[r0] + fr * x[r1]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, obj: np.ndarray, x: int, y: int) -> None:
    """Composite ``obj [s, s, 3]`` with top-left column ``x``, row ``y`` (may be negative) in place."""
    size = canvas.shape[0]
    s = obj.shape[0]
    r0, c0 = max(y, 0), max(x, 0)
    r1, c1 = min(y + s, size), min(x + s, size)
    if r1 <= r0 or c1 <= c0:
        return
    part = obj[r0 - y : r1 - y, c0 - x : c1 - x]
    region = canvas[r0:r1, c0:c1]
    mask = np.any(part != 0, axis=-1)
    region[mask] = part[mask]


def plan_multi(class_blocks, image_ids, *, size: int, seed: int) -> list[list[tuple[int, int, int, int]]]:
    """The draws of :func:`render_multi_fractals` without rendering.

    Returns per image a list of objects ``(system_index, s, x, y)``.
    """
    plans = []
    for block, image_id in zip(class_blocks, image_ids):
        key = _rng.stream_key(seed, _rng.STREAM_MULTI, int(image_id))
        k = N_OBJECTS[0] + int(_rng.below(key, _C_K, N_OBJECTS[1] - N_OBJECTS[0] + 1))
        objects = []
        for j in range(min(k, len(block))):
            c = _C_OBJ + 4 * j
            system = int(block[int(_rng.below(key, c, len(block)))])
            s = int(float(_rng.uniform(key, c + 1, *SIZE_RANGE)) * size)
            x = -(s // 2) + int(_rng.below(key, c + 2, size))
            y = -(s // 2) + int(_rng.below(key, c + 3, size))
            objects.append((system, s, x, y))
        plans.append(objects)
    return plans


def _check(params, class_blocks, image_ids, size, n_points):
    if not isinstance(params, IFSParams):
        raise TypeError(f"params must be an IFSParams, got {type(params).__name__}")
    image_ids = np.asarray(image_ids)
    if image_ids.ndim != 1 or (image_ids.size and image_ids.dtype.kind not in "iu"):
        raise TypeError(f"image_ids must be a 1-D integer array, got {image_ids.dtype} {image_ids.shape}")
    if image_ids.size and (image_ids.min() < 0 or image_ids.max() >= 2**63 // OBJECT_SLOTS):
        raise ValueError(f"image_ids must be in [0, 2**63 / {OBJECT_SLOTS}), got values in "
                         f"[{image_ids.min()}, {image_ids.max()}]")
    if len(class_blocks) != len(image_ids):
        raise ValueError(f"class_blocks must have one block per image ({len(image_ids)}), "
                         f"got {len(class_blocks)}")
    blocks = []
    for b, block in enumerate(class_blocks):
        block = np.asarray(block)
        if block.ndim != 1 or block.size == 0 or block.dtype.kind not in "iu":
            raise ValueError(f"class_blocks[{b}] must be a non-empty 1-D integer array, "
                             f"got {block.dtype} {block.shape}")
        if block.min() < 0 or block.max() >= len(params):
            raise ValueError(f"class_blocks[{b}] must index systems in [0, {len(params)}), got values in "
                             f"[{block.min()}, {block.max()}]")
        blocks.append(block)
    if int(size) != size or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"n_points must be an integer >= 1, got {n_points!r}")
    return blocks, image_ids.astype(np.int64)


def render_multi_fractals(params: IFSParams, class_blocks: list, image_ids, *, size: int = 512, seed: int = 0,
                          backend: str = "auto", n_points: int = 100_000) -> np.ndarray:
    """Render multi-fractal images (several IFS objects of one class on a black canvas).

    Args:
        params: the systems.
        class_blocks: per image, the system indices of its class (``[n_b]`` int each).
        image_ids: ``[B]`` int64 global image indices (RNG items).
        size: canvas side; objects render at ``size // 2``.
        seed: RNG seed.
        backend: ``ifs_render`` backend (``"auto"``, ``"numpy"``, ``"cpu"``, ``"cuda"``, ...).
        n_points: chaos-game points per object.

    Returns:
        ``[B, size, size, 3]`` uint8 RGB.

    Example:
        >>> params = sample_systems(20, seed=0)  # doctest: +SKIP
        >>> blocks = [np.arange(10), np.arange(10, 20)]  # two classes of 10 systems  # doctest: +SKIP
        >>> imgs = render_multi_fractals(params, blocks, np.arange(2), size=128)  # doctest: +SKIP
        >>> imgs.shape  # doctest: +SKIP
        (2, 128, 128, 3)
    """
    blocks, image_ids = _check(params, class_blocks, image_ids, size, n_points)
    size, n_points = int(size), int(n_points)
    from ..ops.ifs_render import RenderConfig, ifs_render

    config = RenderConfig(n_points=n_points, patch=True, blur=False, translate=0.0, scale=None)
    plans = plan_multi(blocks, image_ids, size=size, seed=seed)
    out = np.zeros((len(image_ids), size, size, 3), np.uint8)
    for b0 in range(0, len(image_ids), _IMAGES_PER_CALL):
        chunk = range(b0, min(b0 + _IMAGES_PER_CALL, len(image_ids)))
        jobs = [(b, j, obj) for b in chunk for j, obj in enumerate(plans[b]) if obj[1] > 0]
        if not jobs:
            continue
        systems = np.array([o[0] for _, _, o in jobs], dtype=np.int64)
        ids = np.array([image_ids[b] * OBJECT_SLOTS + j for b, j, _ in jobs], dtype=np.int64)
        rendered = np.asarray(ifs_render(params.systems[systems], params.n_maps[systems], size=size // 2,
                                         seed=seed, image_ids=ids, config=config, backend=backend))
        for (b, _, (_, s, x, y)), obj in zip(jobs, rendered):
            _paste(out[b], resize_bilinear(obj, s, s), x, y)
    for b, image_id in enumerate(image_ids):
        key = _rng.stream_key(seed, _rng.STREAM_MULTI, int(image_id))
        if float(_rng.u01(key, _C_BLUR)) > 0.5:
            out[b] = blur3(out[b], float(_rng.uniform(key, _C_SIGMA, *BLUR_SIGMA)))
    return out
