"""CUDA kernels on the CPU: ``csrc/fractal/ifs_render_cuda.cu`` (host function included) compiled as
C++20 against a fiber-per-thread shim (``tests/cuda_shim/``, driven by ``_cuda_shim.py``) and
compared with the ``cpu`` backend bit for bit, under AddressSanitizer and UBSan; the shim's own
checks. No GPU runs in CI, so this is
where the CUDA kernels' logic (indexing, the grouped chain, early stops at non-finite points,
barriers, the grid.y chunking) is exercised; the GPU itself is covered by the ``cuda`` tests on a
GPU machine. ``kcenter_greedy_cuda`` runs through the shim as the backends ``cuda_shim`` and
``cuda_shim_reverse`` of ``test_kcenter_greedy.py`` and ``test_kcenter_greedy_half.py``; the case
only the shim can build (more blocks than ``select_kernel`` has threads) is here."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

import _cuda_shim
from ofdb_fast.reference import kcenter_greedy as ref

pytestmark = pytest.mark.skipif(_cuda_shim.unavailable_reason() is not None,
                                reason=str(_cuda_shim.unavailable_reason()))
ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["ascending", "descending"])


def _run(exe, *args, reverse=False, check=True):
    env = dict(os.environ, FAKECUDA_REVERSE="1" if reverse else "0")
    done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module", params=["asm", "ucontext"])
def selftest(request):
    """The self-test built with each of the shim's two stack switches."""
    flags = ("-DFAKECUDA_UCONTEXT",) if request.param == "ucontext" else ()
    return _cuda_shim.build(_cuda_shim.SHIM / "selftest_shim.cpp", {}, name=f"selftest_{request.param}", flags=flags)


# ---------------------------------------------------------------- the shim itself
@ORDERS
def test_shim_runs_a_barrier_reduction_in_either_order(selftest, reverse):
    lines = _run(selftest, "sum", reverse=reverse).stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        _, _, _, got, _, want = line.split()
        assert got == want, line


def test_shim_exposes_a_missing_barrier(selftest):
    # Without the barriers, ascending order reads partial sums before their writers ran.
    results = []
    for reverse in (False, True):
        lines = _run(selftest, "racy", reverse=reverse).stdout.splitlines()
        results.append(all(line.split()[3] == line.split()[5] for line in lines))
    assert results.count(False) >= 1, "the racy reduction passed in both thread orders"


@ORDERS
def test_shim_shuffles(selftest, reverse):
    lines = _run(selftest, "shuffle", reverse=reverse).stdout.splitlines()
    x = (np.arange(64) * 37) % 101
    sums = [int(line.split()[3]) for line in lines if line.startswith("lane")]
    maxes = [int(line.split()[3]) for line in lines if line.startswith("warp")]
    assert sums == [int(x[:32].sum())] * 32 + [int(x[32:].sum())] * 32
    assert maxes == [int(x[:32].max()), int(x[32:].max())]


def test_shim_reports_a_barrier_not_every_thread_reaches(selftest):
    done = _run(selftest, "deadlock", check=False)
    assert done.returncode != 0
    assert "deadlock in block (0, 0, 0): 32 of 64 threads wait at a barrier" in done.stderr
    assert "no deadlock reported" not in done.stdout


def test_launch_rewrite():
    src = ("  k<T, true><<<ceil_div(n, kThreads) < cap ? ceil_div(n, kThreads) : cap, dim3(32, 8), 0,\n"
           "      stream>>>(a, f(b, c));\n  other();\n")
    assert _cuda_shim.launches_as_calls(src) == (
        "  fake::launch(k<T, true>, dim3(ceil_div(n, kThreads) < cap ? ceil_div(n, kThreads) : cap), "
        "dim3(dim3(32, 8)), a, f(b, c));\n  other();\n")
    with pytest.raises(ValueError, match="not of the form"):
        _cuda_shim.launches_as_calls("k<<<1, 2>>>(x);")


# ---------------------------------------------------------------- ifs_render
@ORDERS
def test_ifs_render_cuda_kernels_equal_cpu_backend(reverse):
    run = _run(_cuda_shim.ifs_render_executable(), reverse=reverse)
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "66/66 equal", run.stdout  # 9 hand-picked + 24 random configs, rgb and counts
    # every config rendered something (a blank image would compare equal too)
    assert all("(non-zero 0)" not in line for line in lines[:-1]), run.stdout


# ---------------------------------------------------------------- kcenter_greedy
@pytest.mark.parametrize("backend", _cuda_shim.BACKENDS)
def test_kcenter_select_merges_more_blocks_than_threads(backend, rng):
    # 70 fake SMs x 6 blocks = 420 blocks would fit select_kernel's 512 threads; 100 SMs give 600
    # per-block winners, so its strided first pass merges two per thread before the tree.
    centres = 50 * rng.standard_normal((40, 8))
    x = (centres[rng.integers(0, 40, 5000)] + rng.standard_normal((5000, 8))).astype(np.float32)
    want, want_rad = ref.kcenter_greedy(x, n_select=3, proj_dim=None, seed=1, return_radius=True)
    got, rad = _cuda_shim.kcenter_greedy(x, backend=backend, n_select=3, proj_dim=None, seed=1,
                                         return_radius=True, sms=100)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(rad, want_rad, rtol=1e-5)
