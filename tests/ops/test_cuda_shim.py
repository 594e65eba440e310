"""CUDA kernels on the CPU: the kernel source of ``csrc/fractal/ifs_render_cuda.cu`` compiled as
C++20 against a thread-per-lane shim (``tests/cuda_shim/``) and compared with the ``cpu``
backend bit for bit. No GPU runs in CI, so this is where the CUDA kernels' logic (indexing,
the grouped chain, early stops at non-finite points, barriers, the grid.y chunking) is
exercised; the GPU itself is covered by the ``cuda`` tests on a GPU machine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "tests" / "cuda_shim"


def _kernels_only(cu: Path) -> str:
    """The .cu up to and including the line closing its anonymous namespace (the kernels, not
    the host launcher, which needs the CUDA runtime)."""
    text = cu.read_text()
    match = re.search(r"^}  // namespace\n", text, flags=re.M)
    assert match, f"{cu}: no '}}  // namespace' line closing the kernels' anonymous namespace"
    return text[: match.end()]


def _compiler() -> str:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    return cxx


def test_ifs_render_cuda_kernels_equal_cpu_backend(tmp_path):
    cxx = _compiler()
    (tmp_path / "ifs_kernels.inc").write_text(_kernels_only(ROOT / "csrc" / "fractal" / "ifs_render_cuda.cu"))
    exe = tmp_path / "ifs_render_shim"
    cmd = [cxx, "-std=c++20", "-O2", f"-I{tmp_path}", f"-I{SHIM}", f"-I{SHIM / 'stub'}", f"-I{ROOT / 'csrc'}",
           str(SHIM / "ifs_render_shim.cpp"), str(ROOT / "csrc" / "fractal" / "ifs_render_cpu.cpp"), "-o", str(exe),
           "-pthread", "-fopenmp"]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "barrier" in build.stderr and "No such file" in build.stderr:
        pytest.skip("the C++ compiler has no C++20 <barrier>")
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert lines[-1] == "18/18 equal", run.stdout
    # every config rendered something (a blank image would compare equal too)
    assert all("(non-zero 0)" not in line for line in lines[:-1]), run.stdout
