"""Helpers shared by tests/ and bench/ (imports pytest lazily)."""

from __future__ import annotations

from ._dispatch import unavailable_reason


def backend_param(name: str):
    """A ``pytest.param`` for a backend, skipped with the reason when unavailable here,
    and marked ``cuda``/``triton`` where that applies."""
    import pytest

    reason = unavailable_reason(name)
    marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
    if name == "cuda":
        marks.append(pytest.mark.cuda)
    if name == "triton":
        marks.append(pytest.mark.triton)
    return pytest.param(name, marks=marks, id=name)


def backend_params(*names: str) -> list:
    return [backend_param(n) for n in names]


def device_for(backend: str) -> str:
    """Where a test puts the inputs of ``backend``: ``"cuda"`` for ``cuda``, and for ``triton``
    unless ``TRITON_INTERPRET`` is set (the interpreter runs on CPU tensors; a compiled Triton
    kernel needs CUDA tensors, so on a GPU machine the same test runs the real compiler);
    ``"cpu"`` for every other backend."""
    from ._dispatch import _interpret_triton

    if backend == "cuda" or (backend == "triton" and not _interpret_triton()):
        return "cuda"
    return "cpu"


def to_device(x, device: str):
    """``x`` (NumPy array or torch tensor) where a test runs it: unchanged on ``"cpu"`` (NumPy
    stays NumPy), else a torch tensor on ``device``."""
    if device == "cpu":
        return x
    import torch

    return torch.as_tensor(x).to(device)


def to_host(x):
    """A NumPy copy of a result for comparisons: NumPy arrays unchanged, torch tensors (CPU or
    CUDA) through ``.cpu()``."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x
    return x.detach().cpu().numpy()
