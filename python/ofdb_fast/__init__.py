"""ofdb_fast: compiled kernels for OFDB fractal pretraining and PatchCore anomaly detection.

Every hot op is one function with ``backend="auto" | "numpy" | "cpu" | "cuda" | ...``; see
:func:`available_backends` for what this build and machine can run. Importing the package (and
the ops) imports neither torch nor triton.
"""

from __future__ import annotations

from ._dispatch import available_backends, has_cuda
from .ops.ifs_render import RenderConfig, ifs_render
from .ops.kcenter_greedy import kcenter_greedy
from .ops.knn_score import knn_score
from .ops.patch_aggregate import patch_aggregate

__version__ = "0.1.0"

__all__ = [
    "RenderConfig",
    "__version__",
    "available_backends",
    "has_cuda",
    "ifs_render",
    "kcenter_greedy",
    "knn_score",
    "patch_aggregate",
]
