"""PNG overlays for PatchCore results: image | ground-truth mask | heat map over the image.

Conventions: images arrive normalised ``[3, H, W]`` float (undone with the model's mean/std),
masks bool ``[H, W]`` (None: no ground truth, drawn black), maps float ``[H, W]`` scaled to
colours with a shared ``(vmin, vmax)`` so overlays of one category are comparable. The colour
map is a piecewise-linear "jet"-like ramp (blue -> cyan -> yellow -> red), written here so no
plotting library is needed. Files are written to a temporary name and moved into place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .._io import atomic_write

# Colour ramp anchors (position in [0, 1], RGB in [0, 1]).
_RAMP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[0.0, 0.0, 0.5], [0.0, 0.4, 1.0], [0.2, 1.0, 0.8], [1.0, 0.9, 0.0], [0.8, 0.0, 0.0]])
GAP = 4  # pixels between panels


def colorize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``[H, W]`` values -> uint8 ``[H, W, 3]`` colours; values outside ``[vmin, vmax]`` clip."""
    span = float(vmax) - float(vmin)
    t = np.clip((np.asarray(values, np.float64) - vmin) / span, 0.0, 1.0) if span > 0 else np.zeros(np.shape(values))
    rgb = np.stack([np.interp(t, _RAMP_POS, _RAMP_RGB[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``[3, H, W]`` -> uint8 ``[H, W, 3]``."""
    x = np.asarray(image, np.float32).transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def overlay_panel(image: np.ndarray, mask: np.ndarray | None, amap: np.ndarray, *, mean: Sequence[float],
                  std: Sequence[float], vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """uint8 ``[H, 3W + 2*GAP, 3]``: image | mask | heat map blended over the image."""
    rgb = denormalize(image, mean, std)
    h, w = rgb.shape[:2]
    if np.shape(amap) != (h, w):
        raise ValueError(f"amap must have the image's size {(h, w)}, got {np.shape(amap)}")
    mask_rgb = np.zeros_like(rgb)
    if mask is not None:
        mask_rgb[np.asarray(mask, bool)] = 255
    heat = colorize(amap, vmin, vmax)
    blend = np.round((1 - alpha) * rgb + alpha * heat).astype(np.uint8)
    if mask is not None:  # mask outline over the heat map: pixels inside with a neighbour outside
        m = np.asarray(mask, bool)
        pad = np.pad(m, 1, mode="edge")
        inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        blend[m & ~inner] = 255
    panel = np.full((h, 3 * w + 2 * GAP, 3), 255, np.uint8)
    for i, part in enumerate((rgb, mask_rgb, blend)):
        panel[:, i * (w + GAP): i * (w + GAP) + w] = part
    return panel


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write uint8 ``[H, W, 3]`` (or ``[H, W]``) as PNG atomically."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), makedirs=True)


def save_overlay(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray | None, amap: np.ndarray, *,
                 mean: Sequence[float], std: Sequence[float], vmin: float, vmax: float) -> None:
    """Write :func:`overlay_panel` as a PNG."""
    save_png(path, overlay_panel(image, mask, amap, mean=mean, std=std, vmin=vmin, vmax=vmax))
