"""Backend registry: which backends exist, which this build/machine can run, and which one
an op call resolves to.

Rules (see shared STYLE.md):
- ``backend="auto"`` picks the first available backend of the op's preference list for the
  input's device; ``OFDB_FAST_BACKEND`` replaces ``"auto"`` only (an explicit argument wins),
  and only for ops that offer that backend.
- An explicit backend that is unknown to the op is a ``ValueError``; one that this build or
  machine cannot run is a ``RuntimeError`` saying why and what to do; a device mismatch (CPU
  input with ``backend="cuda"``) is a ``ValueError``: arrays are never copied silently.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence

from . import _ext

KNOWN_BACKENDS = ("numpy", "cpu", "cuda", "triton", "torch", "faiss")
ENV_VAR = "OFDB_FAST_BACKEND"

# Default preference per input device when an op does not give its own.
DEFAULT_AUTO_ORDER = {"cpu": ("cpu", "numpy"), "cuda": ("cuda", "triton", "torch")}


def _interpret_triton() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=None)
def _cached_reason(name: str) -> str | None:
    if name == "numpy":
        return None
    if name == "cpu":
        return None if _ext.available() else _ext_reason()
    if name == "cuda":
        if not _ext.available():
            return _ext_reason()
        if not _ext.built_with_cuda():
            return ("ofdb_fast._C was built without CUDA (no nvcc at build time, or "
                    "OFDB_WITH_CUDA=OFF); rebuild with nvcc on PATH")
        if _ext.cuda_device_count() == 0:
            return "no CUDA device is visible (no GPU or no driver on this machine)"
        return None
    if name == "torch":
        return None if importlib.util.find_spec("torch") else "torch is not installed"
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (it comes with the CUDA builds of torch)"
        return None
    if name == "faiss":
        return None if importlib.util.find_spec("faiss") else "faiss is not installed (pip install faiss-cpu)"
    raise ValueError(f"backend must be one of {KNOWN_BACKENDS}, got {name!r}")


def _ext_reason() -> str:
    try:
        _ext.load()
    except RuntimeError as exc:
        return str(exc)
    return ""


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run here, or ``None`` when it can."""
    reason = _cached_reason(name)
    if reason is None and name == "triton" and not _torch_cuda() and not _interpret_triton():
        return "Triton needs a CUDA GPU, or TRITON_INTERPRET=1 to run on the CPU"
    return reason


def is_available(name: str) -> bool:
    return unavailable_reason(name) is None


def available_backends() -> list[str]:
    """The backends this build and machine can run, in :data:`KNOWN_BACKENDS` order."""
    return [b for b in KNOWN_BACKENDS if is_available(b)]


def has_cuda() -> bool:
    """True when ``_C`` has CUDA kernels and a CUDA device is visible."""
    return is_available("cuda")


def _device_ok(backend: str, device: str) -> bool:
    if backend in ("numpy", "cpu", "faiss"):
        return device == "cpu"
    if backend == "cuda":
        return device == "cuda"
    if backend == "triton":
        return device == "cuda" or _interpret_triton()
    return True  # torch runs on either device


def resolve(
    op: str,
    backend: str,
    device: str,
    supported: Sequence[str],
    auto_order: dict[str, Sequence[str]] | None = None,
) -> str:
    """Resolve ``backend`` for one call of ``op`` on inputs living on ``device``.

    Args:
        op: the op's name, used in messages.
        backend: ``"auto"`` or one of ``supported``.
        device: ``"cpu"`` or ``"cuda"``, where the inputs live.
        supported: backends this op implements.
        auto_order: preference per device for ``"auto"``; defaults to
            :data:`DEFAULT_AUTO_ORDER`.
    """
    if not isinstance(backend, str):
        raise TypeError(f"{op}: backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            if env not in KNOWN_BACKENDS:
                raise ValueError(f"{ENV_VAR} must be 'auto' or one of {KNOWN_BACKENDS}, got {env!r}")
            if env in supported:
                backend = env
    if backend != "auto":
        if backend not in supported:
            raise ValueError(f"{op}: backend must be 'auto' or one of {tuple(supported)}, got {backend!r}")
        if not _device_ok(backend, device):
            raise ValueError(
                f"{op}: backend {backend!r} cannot take inputs on the {device} device; "
                f"move the inputs (ofdb_fast never copies them silently) or pick another backend"
            )
        reason = unavailable_reason(backend)
        if reason is not None:
            raise RuntimeError(f"{op}: backend {backend!r} is not available: {reason}")
        return backend
    order = (auto_order or DEFAULT_AUTO_ORDER).get(device, ())
    for candidate in order:
        if candidate in supported and _device_ok(candidate, device) and is_available(candidate):
            return candidate
    raise RuntimeError(
        f"{op}: no available backend for inputs on {device} (tried {tuple(order)}); "
        f"available here: {available_backends()}"
    )
