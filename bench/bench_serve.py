"""Serving latency of PatchCore scoring (issue 6): batch 1 / small batches, one call = one batch.

Providers:
- ``torch``: the unfused float32 PyTorch path (``PatchCore._score_batch`` with the ``torch``
  aggregate and kNN backends, maps on the device): the baseline;
- ``fast``: ``FastScorer`` (float16 folded-BN channels_last backbone, fused Triton aggregate and
  GEMM + running-min kNN over a float16 bank, CUDA graphs); on the CPU: float32, eager.
Model: ``wide_resnet50_2`` layer2+layer3 with random weights (the timing does not depend on
them) and a random 16,000 x 1024 memory bank (the issue's 16k x 1024), on the GPU. Without a
GPU the smoke run uses resnet18 and a 2,000-row bank so that it stays quick. Images are random,
already on the device (no host transfer is timed). Sizes: ``bench_sizes("serve")`` =
(batch, image size). ``extra_info``: p50/p99 latency (ms) and images/s over the timed rounds.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from conftest import bench_sizes

torch = pytest.importorskip("torch")

PROVIDERS = ["torch", "fast"]
ROUNDS = {"cuda": 200, "cpu": 3}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model():
    from ofdb_fast.patchcore.model import PatchCore

    on_gpu = _device() == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m = PatchCore(backbone="wide_resnet50_2" if on_gpu else "resnet18", weights="random", device=_device())
    gen = torch.Generator().manual_seed(0)
    m.memory_bank = torch.randn((16_000 if on_gpu else 2_000, 1024), generator=gen).to(m.device)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    return m


@pytest.fixture(scope="module")
def fast(model):
    from ofdb_fast.patchcore.fast_scorer import FastScorer

    return FastScorer(model, batch_sizes=[b for b, _ in bench_sizes("serve")])


@pytest.mark.parametrize("size", bench_sizes("serve"), ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_serve(benchmark, provider, size, model, fast):
    from ofdb_fast.patchcore.fast_scorer import unfused_scorer

    batch, image_size = size
    device = model.device
    images = torch.randn((batch, 3, image_size, image_size), generator=torch.Generator().manual_seed(1)).to(device)
    fn = fast.score if provider == "fast" else unfused_scorer(model)
    seconds: list[float] = []

    def run():
        t0 = time.perf_counter()
        fn(images)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)

    run()  # compile / capture outside the timed rounds
    seconds.clear()
    benchmark.group = f"serve|{batch}x{image_size}"
    benchmark.pedantic(run, rounds=ROUNDS[device], warmup_rounds=1)
    timed = np.asarray(seconds[1:] or seconds)  # drop pytest-benchmark's warm-up round
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        dtype=str(fast.dtype).replace("torch.", "") if provider == "fast" else "float32",
        shape=[batch, 3, image_size, image_size], memory_bank=list(model.memory_bank.shape),
        backbone=model.config["backbone"], cuda_graph=fast.cuda_graph if provider == "fast" else False,
        p50_ms=1e3 * float(np.percentile(timed, 50)), p99_ms=1e3 * float(np.percentile(timed, 99)),
        images_per_s=batch / float(timed.mean()),
    )
