"""Array-library plumbing: NumPy arrays, torch tensors and CuPy arrays in, the same kind out.

Conventions:
- ``device_of(x)`` is ``"cpu"`` or ``"cuda"``; CPU kernels receive NumPy views (zero-copy for
  NumPy and CPU torch tensors), CUDA kernels receive raw pointers plus the caller's current
  stream (torch's current stream, or CuPy's), never a copy.
- Results come back as the caller's array type (``wrap_like``): NumPy in, NumPy out; torch in,
  torch out on the same device; CuPy in, CuPy out.
- torch and CuPy are imported lazily, only when such an object is passed.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy(x: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def kind_of(x: Any) -> str:
    """``"numpy"``, ``"torch"``, ``"cupy"`` or ``"other"``."""
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_torch(x):
        return "torch"
    if _is_cupy(x):
        return "cupy"
    return "other"


def device_of(x: Any) -> str:
    kind = kind_of(x)
    if kind == "torch":
        return "cuda" if x.is_cuda else "cpu"
    if kind == "cupy":
        return "cuda"
    return "cpu"


def device_label(x: Any) -> str:
    """``"cpu"`` or ``"cuda:N"`` (the GPU a CUDA array lives on)."""
    return f"cuda:{cuda_device_index(x)}" if device_of(x) == "cuda" else "cpu"


def to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """A NumPy view of a CPU array (torch CPU tensors share memory). Raises for GPU arrays."""
    kind = kind_of(x)
    if kind == "numpy":
        return x
    if kind == "torch":
        if x.is_cuda:
            raise ValueError(f"{name} must be on the CPU for this backend, got a CUDA tensor")
        return x.detach().resolve_conj().resolve_neg().numpy()
    if kind == "cupy":
        raise ValueError(f"{name} must be on the CPU for this backend, got a CuPy (CUDA) array")
    return np.asarray(x)


def wrap_like(result: np.ndarray, like: Any) -> Any:
    """Return a NumPy ``result`` as the array type of ``like`` (CPU side)."""
    if kind_of(like) == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(result))
    return result


# ---------------------------------------------------------------------------- CUDA side
def cuda_pointer(x: Any) -> int:
    """Device pointer of a CUDA torch tensor or CuPy array."""
    kind = kind_of(x)
    if kind == "torch":
        return int(x.data_ptr())
    if kind == "cupy":
        return int(x.data.ptr)
    raise TypeError(f"expected a CUDA torch tensor or CuPy array, got {type(x).__name__}")


def cuda_stream(x: Any) -> int:
    """The caller's current CUDA stream handle for the library that owns ``x``."""
    kind = kind_of(x)
    if kind == "torch":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if kind == "cupy":
        import cupy

        with cupy.cuda.Device(x.device.id):  # the current stream of x's GPU, not of the current GPU
            return int(cupy.cuda.get_current_stream().ptr)
    raise TypeError(f"expected a CUDA torch tensor or CuPy array, got {type(x).__name__}")


def cuda_contiguous(x: Any, dtype: str) -> Any:
    """A C-contiguous CUDA array of ``dtype`` (a copy only when needed), same library."""
    kind = kind_of(x)
    if kind == "torch":
        import torch

        return x.to(getattr(torch, dtype)).contiguous()
    if kind == "cupy":
        import cupy

        return cupy.ascontiguousarray(x, dtype=dtype)
    raise TypeError(f"expected a CUDA torch tensor or CuPy array, got {type(x).__name__}")


def cuda_empty(shape: tuple[int, ...], dtype: str, like: Any) -> Any:
    """An uninitialised CUDA array on ``like``'s device, same library as ``like``."""
    kind = kind_of(like)
    if kind == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    if kind == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype=dtype)
    raise TypeError(f"expected a CUDA torch tensor or CuPy array, got {type(like).__name__}")


def cuda_device_index(x: Any) -> int:
    kind = kind_of(x)
    if kind == "torch":
        return int(x.device.index or 0)
    if kind == "cupy":
        return int(x.device.id)
    raise TypeError(f"expected a CUDA torch tensor or CuPy array, got {type(x).__name__}")
