"""Lazy access to the compiled extension ``ofdb_fast._C``.

Importing ofdb_fast never fails because ``_C`` is missing: the NumPy backends still work,
and asking for a compiled backend raises a ``RuntimeError`` that says how to build it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_module: ModuleType | None = None
_error: str | None = None


def load() -> ModuleType:
    """Return ``ofdb_fast._C`` or raise ``RuntimeError`` naming the import problem."""
    global _module, _error
    if _module is not None:
        return _module
    if _error is None:
        try:
            _module = importlib.import_module("ofdb_fast._C")
            return _module
        except ImportError as exc:  # not built, or built for another Python
            _error = f"{type(exc).__name__}: {exc}"
    raise RuntimeError(
        "the compiled extension ofdb_fast._C is not available "
        f"({_error}); build it with `pip install --no-build-isolation -e .` "
        "or `make ext`, or use backend='numpy'"
    )


def available() -> bool:
    try:
        load()
    except RuntimeError:
        return False
    return True


def built_with_cuda() -> bool:
    return available() and bool(load().built_with_cuda)


def cuda_device_count() -> int:
    return int(load().cuda_device_count()) if built_with_cuda() else 0
