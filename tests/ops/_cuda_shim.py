"""The CUDA kernels' source run on the CPU, for CI (which has no GPU).

``tests/cuda_shim/fakecuda.h`` runs a kernel's threads as cooperative fibers with real block and
warp barriers, so a ``.cu`` file compiles as C++20 once ``kernel<<<grid, block, smem, stream>>>(args)``
is rewritten to ``fake::launch(kernel, grid, block, args)`` (:func:`launches_as_calls`) and the CUDA
runtime is replaced by host memory (``tests/cuda_shim/stub/``): whole ``.cu`` files, host code and
launch sequence included, not a copy of them. :func:`kcenter_greedy` runs
``kcenter_greedy_cuda`` that way behind the same arguments as the op, so the op's tests can take it
as one more backend: ``"cuda_shim"``, built with AddressSanitizer and UBSan (so an out-of-bounds
access in a kernel fails the test, as compute-sanitizer would report it on a GPU);
``"cuda_shim_reverse"``, which runs each barrier phase's
threads in descending order and so catches shared memory read before the barrier that publishes it;
``"cuda_shim_fma"``, built with fused multiply-adds as nvcc emits them by default (the other two and
the ``cpu`` backend round every product), so the tests' tolerances meet the GPU's other last bits.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "tests" / "cuda_shim"
BACKENDS = ("cuda_shim", "cuda_shim_reverse", "cuda_shim_fma")
# What compute-sanitizer's memcheck is on a GPU: any read or write outside an allocation (device
# buffers are host mallocs of their exact size here) or undefined behaviour aborts the run.
SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


def unavailable_reason() -> str | None:
    if compiler() is None:
        return "no C++ compiler for the CUDA shim"
    return None


def backend_params(*names: str) -> list:
    """``pytest.param`` per shim backend, skipped (with the reason) without a C++ compiler."""
    import pytest

    reason = unavailable_reason()
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return [pytest.param(n, marks=marks, id=n) for n in names]


def launches_as_calls(source: str) -> str:
    """Rewrite every ``expr<<<a, b, c, d>>>(args)`` statement to ``fake::launch(expr, dim3(a),
    dim3(b), args)`` (shared-memory size and stream dropped; the shim has one stream)."""
    out, pos = [], 0
    while (start := source.find("<<<", pos)) >= 0:
        line_start = source.rfind("\n", 0, start) + 1
        indent = len(source[line_start:start]) - len(source[line_start:start].lstrip())
        kernel = source[line_start + indent : start]
        end = source.find(">>>", start)
        parts = _split_top_level(source[start + 3 : end])
        if len(parts) != 4 or source[end + 3] != "(":
            raise ValueError(f"launch at offset {start} not of the form k<<<grid, block, smem, stream>>>(...): "
                             f"{source[line_start:end + 4]!r}")
        close = _matching_paren(source, end + 3)
        args = source[end + 4 : close]
        out.append(source[pos : line_start + indent])
        out.append(f"fake::launch({kernel}, dim3({parts[0].strip()}), dim3({parts[1].strip()}), {args})")
        pos = close + 1
    out.append(source[pos:])
    return "".join(out)


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _matching_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses from offset {open_at}")


@functools.cache
def _build_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ofdb-cuda-shim-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build(main: Path, generated: dict[str, str], extra_sources: tuple[Path, ...] = (), name: str | None = None,
          flags: tuple[str, ...] = ()) -> Path:
    """Compile ``main`` (a driver in tests/cuda_shim) with the ``generated`` include files
    written next to it; return the executable. Raises with the compiler's output on failure."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError(unavailable_reason())
    out_dir = _build_dir() / (name or main.stem)
    out_dir.mkdir(exist_ok=True)
    for file_name, text in generated.items():
        (out_dir / file_name).write_text(text)
    exe = out_dir / main.stem
    cmd = [cxx, "-std=c++20", "-O2", f"-I{out_dir}", f"-I{SHIM}", f"-I{SHIM / 'stub'}", f"-I{ROOT / 'csrc'}",
           *flags, str(main), *map(str, extra_sources), "-o", str(exe), "-fopenmp"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building {main.name} failed:\n{done.stderr[-6000:]}")
    return exe


@functools.cache
def kcenter_executable(variant: str = "cuda_shim") -> Path:
    """``cuda_shim``: built with the sanitizers; ``cuda_shim_reverse``: without (faster), run in
    descending thread order; ``cuda_shim_fma``: with fused multiply-adds."""
    source = (ROOT / "csrc" / "patchcore" / "kcenter_greedy_cuda.cu").read_text()
    flags = {"cuda_shim": ("-ffp-contract=off",) + SANITIZE, "cuda_shim_reverse": ("-ffp-contract=off",),
             "cuda_shim_fma": ("-mfma", "-ffp-contract=fast")}[variant]
    return build(SHIM / "kcenter_greedy_shim.cpp", {"kcenter_greedy_kernels.inc": launches_as_calls(source)},
                 name=f"kcenter_{variant}", flags=flags)


def kcenter_greedy(features, *, backend: str = "cuda_shim", percentage: float = 0.1, n_select: int | None = None,
                   method: str = "approx", proj_dim: int | None = 128, n_starts: int = 10, seed: int = 0,
                   return_radius: bool = False, proj_dtype: str = "float32", sms: int = 2):
    """``kcenter_greedy(..., backend="cuda")`` with the CUDA source run by the shim: the arguments
    reach ``kcenter_greedy_cuda`` as ``ops.kcenter_greedy`` passes them (rows as float32, proj_dim
    None -> 0, nothing launched for n_select 0). ``sms``: the fake device's multiprocessor count."""
    from ofdb_fast.reference import kcenter_greedy as ref

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, dim = x.shape
    k = ref.resolve_n_select(n, percentage, n_select)
    indices, radius = np.zeros(k, np.int64), np.zeros(k if return_radius else 0, np.float64)
    if k > 0:
        with tempfile.TemporaryDirectory(dir=_build_dir()) as tmp:
            src, dst = Path(tmp) / "x.f32", Path(tmp) / "out.bin"
            x.tofile(src)
            code = 0 if method == "approx" else 1
            args = [src, dst, n, dim, proj_dim or 0, code, n_starts, k, seed, int(return_radius),
                    int(proj_dtype == "float16"), sms]
            env = dict(os.environ, FAKECUDA_REVERSE="1" if backend == "cuda_shim_reverse" else "0")
            exe = kcenter_executable(backend)
            done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                                  env=env, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"kcenter shim exited {done.returncode}: {done.stderr[-3000:]}")
            raw = dst.read_bytes()
            assert len(raw) == 8 * k * (2 if return_radius else 1), len(raw)
            indices = np.frombuffer(raw[: 8 * k], np.int64).copy()
            if return_radius:
                radius = np.frombuffer(raw[8 * k :], np.float64).copy()
    return (indices, radius) if return_radius else indices


@functools.cache
def ifs_render_executable() -> Path:
    source = (ROOT / "csrc" / "fractal" / "ifs_render_cuda.cu").read_text()
    # Shrink the per-launch image limit on grid.y (65535 on a GPU) so the host's chunk loop runs.
    limit = "constexpr int64_t kMaxGridY = 65535;"
    if source.count(limit) != 1:
        raise ValueError(f"ifs_render_cuda.cu: expected one {limit!r} line to shrink")
    source = source.replace(limit, "constexpr int64_t kMaxGridY = 2;")
    return build(SHIM / "ifs_render_shim.cpp", {"ifs_render_kernels.inc": launches_as_calls(source)},
                 extra_sources=(ROOT / "csrc" / "fractal" / "ifs_render_cpu.cpp",), flags=SANITIZE)
