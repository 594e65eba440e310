"""Test configuration.

- ``cuda`` tests are skipped without a CUDA build and device (``OFDB_FAST_REQUIRE_CUDA=1``
  makes that an error); ``triton`` tests run on a GPU (their inputs moved there), or on the
  CPU under ``TRITON_INTERPRET=1`` (set here before triton is imported when no GPU is
  present), with small shapes.
- OpenMP threads spin-wait by default and stall ~50x when the other core is busy: tests run
  with ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


if not _gpu_present():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ofdb_fast._dispatch import unavailable_reason  # noqa: E402


def pytest_sessionstart(session):
    """Under `make test` (OFDB_FAST_REQUIRE_EXT=1) a broken build fails loudly instead of
    silently skipping every compiled backend; on the GPU machine OFDB_FAST_REQUIRE_CUDA=1 does
    the same for the cuda tests (a CPU-only build, or a driver older than the static cudart,
    would otherwise skip them all)."""
    if os.environ.get("OFDB_FAST_REQUIRE_CUDA") == "1":
        reason = unavailable_reason("cuda")
        if reason:
            raise pytest.UsageError(f"OFDB_FAST_REQUIRE_CUDA=1 but the cuda backend is unavailable: {reason}")
    if os.environ.get("OFDB_FAST_REQUIRE_EXT") != "1":
        return
    from ofdb_fast import _ext

    if not _ext.available():
        _ext_error = unavailable_reason("cpu")
        raise pytest.UsageError(f"OFDB_FAST_REQUIRE_EXT=1 but {_ext_error}")
    if os.environ.get("OFDB_WITH_CUDA") == "ON" and not _ext.built_with_cuda():
        raise pytest.UsageError("OFDB_WITH_CUDA=ON but ofdb_fast._C was built without CUDA kernels")


def pytest_collection_modifyitems(config, items):
    cuda_reason = unavailable_reason("cuda")
    triton_reason = unavailable_reason("triton")
    for item in items:
        if "cuda" in item.keywords and cuda_reason:
            item.add_marker(pytest.mark.skip(reason=f"cuda: {cuda_reason}"))
        if "triton" in item.keywords and triton_reason:
            item.add_marker(pytest.mark.skip(reason=f"triton: {triton_reason}"))


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id: fresh per test, reproducible."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
