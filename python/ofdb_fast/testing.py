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
