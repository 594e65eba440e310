"""Argument validation, done once in Python before dispatch.

Messages read ``f"{name} must <requirement>, got {actual}"``. ``TypeError`` for type/dtype,
``ValueError`` for shape/range/device.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._arrays import kind_of


def expect_array(x: Any, name: str) -> Any:
    """Accept NumPy arrays, torch tensors and CuPy arrays (lists are converted to NumPy)."""
    if kind_of(x) in ("numpy", "torch", "cupy"):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError as exc:
            raise TypeError(f"{name} must be a rectangular array, got a ragged {type(x).__name__}") from exc
    raise TypeError(f"{name} must be a NumPy array, torch tensor or CuPy array, got {type(x).__name__}")


def dtype_kind(x: Any) -> str:
    """NumPy dtype kind character ('f', 'i', 'u', 'b', ...) of any supported array."""
    if kind_of(x) == "torch":
        if x.dtype.is_floating_point:
            return "f"
        if x.dtype.is_complex:
            return "c"
        return "b" if str(x.dtype) == "torch.bool" else ("u" if str(x.dtype) == "torch.uint8" else "i")
    return np.dtype(x.dtype).kind


def dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


def require_dtype_kind(x: Any, name: str, kinds: str, what: str) -> None:
    if dtype_kind(x) not in kinds:
        raise TypeError(f"{name} must have a {what} dtype, got {dtype_name(x)}")


def require_ndim(x: Any, name: str, ndim: int, layout: str) -> None:
    if len(x.shape) != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")


def require_dim(x: Any, name: str, axis: int, size: int, layout: str) -> None:
    if x.shape[axis] != size:
        raise ValueError(f"{name} must have shape {layout} with dim {axis} == {size}, got {tuple(x.shape)}")


def require_finite(x: Any, name: str) -> None:
    if kind_of(x) == "torch":
        import torch

        ok = bool(torch.isfinite(x).all())
    elif kind_of(x) == "cupy":
        import cupy

        ok = bool(cupy.isfinite(x).all())
    else:
        ok = bool(np.isfinite(x).all())
    if not ok:
        raise ValueError(f"{name} must contain only finite values, got NaN or inf")


def require_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def require_float(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")
    return value


def require_size2(value: Any, name: str) -> tuple[int, int]:
    """An image size: an int (square) or a pair ``(H, W)``, each >= 1."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be an int or a pair (H, W), got {value!r}")
    h = require_int(value[0], f"{name}[0]", minimum=1)
    w = require_int(value[1], f"{name}[1]", minimum=1)
    return h, w


def require_same_device(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Same device, and for CUDA arrays the same GPU (kernels get raw pointers of one device)."""
    from ._arrays import device_label

    if device_label(a) != device_label(b):
        raise ValueError(f"{name_b} must be on the same device as {name_a} ({device_label(a)}), got {device_label(b)}")
