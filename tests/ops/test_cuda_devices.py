"""Device handling of the GPU backends: arrays on a GPU other than the current one.

Every compiled and Triton kernel must run on the GPU its arrays live on (and that GPU's current
stream), whatever device is current, and arrays on two different GPUs are refused. The GPU
tests need two CUDA devices (skipped otherwise); ``device_label`` is checked on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ofdb_fast import _arrays  # noqa: E402
from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render  # noqa: E402
from ofdb_fast.ops.kcenter_greedy import kcenter_greedy  # noqa: E402
from ofdb_fast.ops.knn_score import knn_score  # noqa: E402
from ofdb_fast.ops.patch_aggregate import patch_aggregate  # noqa: E402


def test_device_label_cpu():
    assert _arrays.device_label(np.zeros(2)) == "cpu"
    assert _arrays.device_label(torch.zeros(2)) == "cpu"


@pytest.fixture
def second_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    torch.cuda.set_device(0)
    return torch.device("cuda:1")


def _systems(rng, n):
    lin = rng.uniform(-0.6, 0.6, (n, 3, 2, 2))
    return np.concatenate([lin, rng.uniform(-1, 1, (n, 3, 2, 1))], axis=-1)


@pytest.mark.cuda
def test_arrays_on_two_gpus_refused(second_gpu):
    with pytest.raises(ValueError, match=r"bank must be on the same device as queries \(cuda:0\), got cuda:1"):
        knn_score(torch.zeros(2, 3, device="cuda:0"), torch.zeros(4, 3, device=second_gpu))
    systems = torch.zeros((2, 1, 2, 3), dtype=torch.float64, device=second_gpu)
    with pytest.raises(ValueError, match=r"n_maps must be on the same device as systems \(cuda:1\), got cuda:0"):
        ifs_render(systems, torch.ones(2, dtype=torch.int64, device="cuda:0"), size=8, backend="cuda")


@pytest.mark.cuda
def test_ifs_render_on_second_gpu(second_gpu, rng):
    systems = _systems(rng, 6)
    cfg = RenderConfig(n_points=2000, blur=False)  # no blur: bit-exact with cpu
    for output in ("counts", "rgb"):
        want = ifs_render(systems, size=32, config=cfg, output=output, backend="cpu")
        got = ifs_render(torch.from_numpy(systems).to(second_gpu), size=32, config=cfg, output=output,
                         backend="cuda")
        assert got.device == second_gpu and torch.cuda.current_device() == 0
        np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.cuda
def test_kcenter_on_second_gpu(second_gpu, rng):
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    want = kcenter_greedy(torch.from_numpy(x).cuda(0), n_select=50, proj_dim=32, backend="cuda")
    got = kcenter_greedy(torch.from_numpy(x).to(second_gpu), n_select=50, proj_dim=32, backend="cuda")
    assert got.device == second_gpu and torch.cuda.current_device() == 0
    assert torch.equal(got.cpu(), want.cpu())


@pytest.mark.cuda
def test_triton_kernels_on_second_gpu(second_gpu, rng):
    queries = rng.standard_normal((300, 64)).astype(np.float32)
    bank = rng.standard_normal((900, 64)).astype(np.float32)
    want = knn_score(queries, bank, 3, return_indices=True, backend="numpy")
    dist, idx = knn_score(torch.from_numpy(queries).to(second_gpu), torch.from_numpy(bank).to(second_gpu), 3,
                          return_indices=True, backend="triton")
    assert dist.device == second_gpu
    np.testing.assert_array_equal(idx.cpu().numpy(), want[1])
    feats = [rng.standard_normal((2, 16, 8, 8)).astype(np.float32), rng.standard_normal((2, 32, 4, 4)).astype(np.float32)]
    dims = dict(pretrain_embed_dimension=40, target_embed_dimension=24)
    want = patch_aggregate([torch.from_numpy(f) for f in feats], backend="torch", **dims)
    got = patch_aggregate([torch.from_numpy(f).to(second_gpu) for f in feats], backend="triton", **dims)
    assert got.device == second_gpu
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)
