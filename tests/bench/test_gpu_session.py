""".ci/gpu-session: its selections still collect what the GPU session must measure and test
(a renamed benchmark, provider, size or test cannot silently drop out of the one GPU call), and
.ci/gpu_targets.py reads the targets off a record."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "gpu-session"

# stage -> node-id patterns; each must match at least one node id the stage selects.
_GENERATE = [rf"test_generate\[200-{p}\]" for p in ("reference", "cpu", "cuda")]
EXPECTED = {
    "tests": [
        r"^tests/ops/test_ifs_render\.py::.*cuda",
        r"^tests/ops/test_kcenter_greedy\.py::.*\[.*cuda\]",
        r"^tests/ops/test_kcenter_greedy_half\.py::test_one_million_patches_fit_in_memory",
        r"^tests/ops/test_knn_triton\.py::test_knn_score_triton_matches_reference\[",
        r"^tests/ops/test_knn_triton\.py::test_ties_lowest_index_across_splits\[",
        r"^tests/ops/test_knn_triton\.py::test_cuda_patchcore_size_vs_torch\[",
        r"^tests/ops/test_patch_aggregate\.py::test_matches_reference\[.*triton\]",
        r"^tests/ops/test_patch_aggregate\.py::test_cuda_triton_and_torch_match_reference",
        r"^tests/patchcore/test_fast_scorer\.py::test_triton_path\[",
        r"^tests/patchcore/test_fast_scorer\.py::test_cuda_graph_path_matches_predict\[",
        r"^tests/fractal/test_generate\.py::test_cuda_backend_matches_cpu",
        r"^tests/fractal/test_pretrain\.py::test_cuda_training_steps",
        r"^tests/fractal/test_gpu_augment\.py::test_cuda_matches_cpu",
    ],
    "bench-ifs": [rf"::test_ifs_render\[{p}-{s}\]" for p in ("cuda", "reference", "cpu_out") for s in (256, 512)],
    "bench-kcenter-paper": [rf"::test_kcenter_greedy\[{p}-157000x1024@0\.1\]" for p in ("cuda", "torch")],
    "bench-serve": [rf"::test_serve\[{p}-{b}x224\]" for p in ("torch", "fast") for b in (1, 8, 32)],
    "bench-patch-aggregate": [rf"::test_patch_aggregate\[{p}-B{b}@224\]" for p in ("torch", "triton") for b in (8, 32)],
    "bench-knn": [rf"::test_knn_min\[{p}-{s}\]" for p in ("torch", "triton", "triton_fp16", "triton_bf16")
                  for s in ("25088x16000x1024", "65072x15700x1024")]
    + [r"::test_knn_score\[torch-25088x16000x1024\]", r"::test_knn_score\[torch-65072x15700x1024\]"],
    # The case id depends on whether torch sees a GPU at collection: match the provider only.
    "bench-pretrain": [rf"::test_pretrain_throughput\[.*-{p}\]" for p in ("reference", "resident", "on_the_fly")],
    "bench-generate": _GENERATE,
    "bench-generate-paper": [r"::test_generate\[1000-cpu\]", r"::test_generate\[1000-cuda\]"],
    "bench-kcenter-small": [rf"::test_kcenter_greedy\[{p}-20000x128@0\.1\]" for p in ("reference", "torch", "cuda")],
}
# Host providers that take minutes at paper size and must stay out of the GPU call.
FORBIDDEN = {
    "bench-kcenter-paper": [r"\[(numpy|cpu|reference)-"],
    "bench-knn": [r"::test_knn_score\[(numpy|cpu|faiss)-"],
    "bench-patch-aggregate": [r"\[numpy-"],
    "bench-ifs": [r"\[numpy-", r"test_ifs_render_raster_stage"],
}


@pytest.fixture(scope="module")
def selected() -> dict[str, list[str]]:
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    stages: dict[str, list[str]] = defaultdict(list)
    for line in res.stdout.splitlines():
        if line.startswith("SELECT "):
            _, stage, node = line.split(" ", 2)
            stages[stage].append(node)
    return stages


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_stage_selects_what_the_gpu_session_needs(selected, stage):
    nodes = selected[stage]
    missing = [p for p in EXPECTED[stage] if not any(re.search(p, n) for n in nodes)]
    assert not missing, f"{stage} no longer selects {missing}; it selects {nodes}"
    unwanted = [n for n in nodes for p in FORBIDDEN.get(stage, []) if re.search(p, n)]
    assert not unwanted, f"{stage} selects slow host providers {unwanted}"


@pytest.mark.slow
def test_tests_stage_is_exactly_the_gpu_tests(selected):
    """Every cuda/triton test and nothing else (the run's -m expression, collected here too)."""
    env = {k: v for k, v in os.environ.items() if k != "OFDB_FAST_REQUIRE_EXT"}
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    every = [line for line in res.stdout.splitlines() if "::" in line]
    assert 0 < len(selected["tests"]) < len(every)
    assert set(selected["tests"]) <= set(every)


def test_unknown_stage_and_option_are_usage_errors():
    for argv, message in ((["--only", "bench-nope"], "unknown stage 'bench-nope'"),
                          (["--frobnicate"], "unknown option"), (["--deadline", "soon"], "whole seconds")):
        res = subprocess.run(["bash", str(SCRIPT), *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and message in res.stderr, res.stderr


# ------------------------------------------------------------------------------ gpu_targets.py
@pytest.fixture(scope="module")
def targets():
    spec = importlib.util.spec_from_file_location("gpu_targets", ROOT / ".ci" / "gpu_targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(group, provider, median, **extra):
    return {"group": group, "name": f"t[{provider}]", "fullname": f"b.py::t[{provider}]",
            "params": {"provider": provider}, "stats": {"median": median}, "extra_info": extra}


def test_targets_pass_miss_absent(targets):
    record = {"benchmarks": [
        _bench("ifs_render|256", "cuda", 0.01, images_per_s=60_000.0),
        _bench("ifs_render|512", "cuda", 0.02, images_per_s=20_000.0),
        _bench("kcenter_greedy|157000x1024@0.1", "cuda", 0.25, iterations_per_s=62_800.0),
        _bench("kcenter_greedy|157000x1024@0.1", "torch", 2.5, iterations_per_s=6_280.0),
    ]}
    lines = targets.summary(record)
    for line in ("  PASS   ifs_render cuda fractals/s, 256 px: 6e+04 (target >= 50,000)",
                 "  MISS   ifs_render cuda fractals/s, 512 px: 2e+04 (target >= 50,000)",
                 "  PASS   kcenter_greedy cuda seconds, 157k x 1024 10%: 0.25 (target <= 0.3)",
                 "  MISS   kcenter_greedy cuda x torch loop, 157k x 1024: 10 (target >= 20)",  # from iterations/s
                 "  ABSENT serve fast p50 ms, batch 1: - (target <= 1.5)",
                 "  kcenter_greedy cuda x torch loop [kcenter_greedy|157000x1024@0.1]: 10x"):
        assert line in lines, lines


def test_pretrain_targets_read_the_paper_group(targets):
    group = "pretrain|resnet50-1000x512-crop224-b128"
    record = {"benchmarks": [
        _bench(group, "reference", 1.0, images_per_s=900.0, data_time_fraction=0.6),
        _bench(group, "resident", 0.3, images_per_s=2_700.0, data_time_fraction=0.02),
        _bench(group, "on_the_fly", 0.4, images_per_s=2_400.0, data_time_fraction=0.08),
    ]}
    lines = targets.summary(record)
    for line in ("  PASS   pretrain resident x ImageFolder+DataLoader (16 workers): 3 (target >= 2)",
                 "  PASS   pretrain resident data-time fraction: 0.02 (target <= 0.05)",
                 "  MISS   pretrain on_the_fly data-time fraction: 0.08 (target <= 0.05)"):
        assert line in lines, lines
    # the bench names its groups this way for the paper size, so the targets find them
    spec = importlib.util.spec_from_file_location("bench_conftest", ROOT / "bench" / "conftest.py")
    bench_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_conftest)
    arch, n, side, crop, batch = bench_conftest.PRESETS["paper"]["pretrain"][0]
    assert f"pretrain|{arch}-{n}x{side}-crop{crop}-b{batch}" == group
