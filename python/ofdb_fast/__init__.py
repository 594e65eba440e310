"""ofdb_fast: compiled kernels for OFDB fractal pretraining and PatchCore anomaly detection.

Every hot op is one function with ``backend="auto" | "numpy" | "cpu" | "cuda" | ...``; see
:func:`available_backends` for what this build and machine can run.
"""

from __future__ import annotations

from ._dispatch import available_backends, has_cuda

__version__ = "0.1.0"

__all__ = ["__version__", "available_backends", "has_cuda"]
