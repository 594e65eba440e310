"""FastScorer (the low-latency scoring path) against PatchCore.predict on a synthetic category.

Model: resnet18 with random weights, layer1+layer2, 64 px, 256-d features (seconds on the CPU).
Measured on the 2-core CPU test machine (relative to the largest reference score/map value):
float32 2.3e-6 (scores) / 1.6e-6 (maps); bfloat16 2.1e-3 / 3.2e-3; float16 Triton path
(interpreter) 5.1e-4 / 6.9e-4; bfloat16 Triton path 2.5e-3 / 3.8e-3.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from ofdb_fast import synth
from ofdb_fast.patchcore import scoring
from ofdb_fast.patchcore.data import MVTecDataset, Preprocess
from ofdb_fast.patchcore.fast_scorer import FastScorer, _Smoother, fold_batchnorm
from ofdb_fast.patchcore.metrics import image_auroc
from ofdb_fast.patchcore.model import PatchCore
from ofdb_fast.testing import backend_param

SIZE = 64
KW = dict(backbone="resnet18", layers=("layer1", "layer2"), weights="random", resize=SIZE, imagesize=SIZE,
          batch_size=8, pretrain_embed_dimension=256, target_embed_dimension=256)


def _model(device="cpu", **kw) -> PatchCore:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning
        return PatchCore(**{**KW, **kw}, device=device)


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    synth.make_dataset(root, categories=["weave"], size=SIZE, n_train=6, n_test_good=4, n_test_defect=3, seed=1)
    return root / "weave"


@pytest.fixture(scope="module")
def data(category):
    pre = Preprocess(SIZE, SIZE)
    test = MVTecDataset(category, "test", pre)
    images = np.stack([test[i]["image"] for i in range(len(test))])
    labels = np.array([test[i]["label"] for i in range(len(test))])
    return MVTecDataset(category, "train", pre), images, labels


@pytest.fixture(scope="module")
def fitted(data):
    model = _model().fit(data[0])
    scores, maps = model.predict(data[1])
    return model, scores, maps


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_float32_matches_predict(fitted, data):
    model, ref_scores, ref_maps = fitted
    scores, maps = FastScorer(model, dtype="float32").score(data[1])
    assert scores.dtype == np.float32 and maps.shape == ref_maps.shape
    # BatchNorm folding and summation order only: measured 2.3e-6 relative.
    assert _rel(scores, ref_scores) < 1e-4 and _rel(maps, ref_maps) < 1e-4


def test_bfloat16_close_and_auroc_unchanged(fitted, data):
    model, ref_scores, ref_maps = fitted
    scores, maps = FastScorer(model, dtype=torch.bfloat16).score(data[1])
    # bfloat16 backbone (8-bit mantissa): measured 2.1e-3 (scores) / 3.2e-3 (maps) relative.
    assert _rel(scores, ref_scores) < 1e-2 and _rel(maps, ref_maps) < 1e-2
    labels = data[2]
    assert round(image_auroc(labels, scores), 3) == round(image_auroc(labels, ref_scores), 3)


@pytest.mark.triton
@pytest.mark.parametrize("backend", [backend_param("triton")])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_triton_path(fitted, data, backend, dtype):
    """The GPU path's kernels (fused aggregate + fp16/bf16 bank kNN), interpreted: 2 images."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):  # a GPU machine (see conftest)
        pytest.skip("a CPU model's Triton path needs TRITON_INTERPRET=1; on a GPU the cuda tests run it")
    model, ref_scores, ref_maps = fitted
    scorer = FastScorer(model, dtype=dtype, knn_backend=backend, aggregate_backend=backend, batch_sizes=(2,))
    assert scorer.bank.dtype == getattr(torch, dtype)
    scores, maps = scorer.score(data[1][:2])
    # Measured 5.1e-4 / 6.9e-4 (float16), 2.5e-3 / 3.8e-3 (bfloat16) relative.
    assert _rel(scores, ref_scores[:2]) < 1e-2 and _rel(maps, ref_maps[:2]) < 1e-2


def test_chunks_and_batch_independence(fitted, data):
    model = fitted[0]
    scorer = FastScorer(model, dtype="float32", batch_sizes=(4, 1))
    assert scorer.batch_sizes == (1, 4)
    assert scorer._chunks(11) == [(0, 4, 4), (4, 4, 4), (8, 3, 4)]
    assert scorer._chunks(1) == [(0, 1, 1)] and scorer._chunks(0) == []
    images = data[1][:7]
    scores, maps = scorer.score(images)
    one = [scorer.score(images[i:i + 1]) for i in range(len(images))]
    # The CPU convolutions pick algorithms per batch size: measured 1.1e-5 relative.
    np.testing.assert_allclose(scores, np.concatenate([s for s, _ in one]), rtol=1e-4)
    np.testing.assert_allclose(maps, np.concatenate([m for _, m in one]), rtol=1e-4, atol=1e-5)


def test_torch_in_torch_out_and_empty(fitted, data):
    scorer = FastScorer(fitted[0], dtype="float32")
    scores, maps = scorer.score(torch.from_numpy(data[1][:2]))
    assert isinstance(scores, torch.Tensor) and scores.shape == (2,) and maps.shape == (2, SIZE, SIZE)
    scores, maps = scorer.score(np.zeros((0, 3, SIZE, SIZE), np.float32))
    assert scores.shape == (0,) and maps.shape == (0, SIZE, SIZE)


def test_reweight_matches_predict(data):
    model = _model(reweight=True, anomaly_scorer_num_nn=3).fit(data[0])
    ref_scores, ref_maps = model.predict(data[1][:5])
    scores, maps = FastScorer(model, dtype="float32").score(data[1][:5])
    # Same tolerance as float32 above (measured 1.7e-6 relative).
    assert _rel(scores, ref_scores) < 1e-4 and _rel(maps, ref_maps) < 1e-4


def test_graph_captured_torch_code_makes_no_host_tensors():
    """The torch code FastScorer captures in a CUDA graph (after the Triton kernels) must make
    no host tensor (its host-to-device copy cannot be captured) and read no value on the host.
    Run on the meta device: every tensor it makes must be a meta tensor (a host read raises)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ofdb_fast.triton.knn_min import merge_partials

    class Devices(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.seen.setdefault(str(t.device), set()).add(str(func))
            return out

    def meta(*shape, dtype=torch.float32):
        return torch.zeros(*shape, dtype=dtype, device="meta")

    smoother = _Smoother((16, 12), 4.0, "meta")  # built during the warm-up, outside the capture
    with Devices() as rec:
        for k in (1, 2):
            merge_partials(meta(3, 24, k), meta(3, 24, k, dtype=torch.int64), k)
        patch = scoring.patch_scores_from_distances(meta(24, 2)).reshape(2, 12)
        scoring.image_scores_from_patches(patch)
        scoring.reweight_image_scores(meta(2, 12, 8), patch, meta(2, 12, dtype=torch.int64), meta(30, 8), b=3)
        smoother(patch.reshape(2, 4, 3))
    assert set(rec.seen) == {"meta"}, {k: sorted(v) for k, v in rec.seen.items() if k != "meta"}


def test_capture_runs_on_a_stream_of_the_scorers_gpu(monkeypatch):
    """torch.cuda.graph without ``stream=`` captures on one process-wide stream, created on the
    GPU that was current at the first capture in the process: a scorer on cuda:1 after one on
    cuda:0 would capture on cuda:0. The capture must get a stream of the scorer's own GPU.
    Checked here with stand-ins for torch.cuda (no GPU needed); the real capture on a second GPU
    is test_cuda_graph_on_second_gpu (needs two GPUs)."""
    import contextlib

    captured = []

    class Stream:
        def __init__(self, device=None):
            self.device = torch.device("cuda", 0) if device is None else torch.device(device)

        def wait_stream(self, other):
            pass

    class Graph:
        def __init__(self, cuda_graph, pool=None, stream=None, **kwargs):
            captured.append(stream)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", Graph)
    monkeypatch.setattr(torch, "zeros", lambda *args, **kwargs: "static input")
    scorer = object.__new__(FastScorer)
    scorer.device = torch.device("cuda", 1)
    scorer._pipeline = lambda images: ("scores", "maps")
    _, static_in, static_out = scorer._capture(2, 8, 8)
    assert static_in == "static input" and static_out == ("scores", "maps")
    assert len(captured) == 1 and captured[0] is not None
    assert captured[0].device == torch.device("cuda", 1)


def test_fold_batchnorm_keeps_the_features(fitted, data):
    import copy

    extractor = fitted[0].extractor
    folded = fold_batchnorm(copy.deepcopy(extractor))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.from_numpy(data[1][:2])
    with torch.inference_mode():
        for a, b in zip(extractor(x), folded(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sigma", [4.0, 0.0, 1.5])
def test_smoother_is_anomaly_maps_torch(sigma, rng):
    patch = torch.from_numpy(rng.standard_normal((2, 7, 9)).astype(np.float32))
    expected = scoring.anomaly_maps_torch(patch, (37, 53), sigma)
    torch.testing.assert_close(_Smoother((37, 53), sigma, "cpu")(patch), expected, rtol=0, atol=0)


def test_bad_arguments(fitted):
    model = fitted[0]
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        FastScorer(model, dtype="float64")
    with pytest.raises(ValueError, match="batch_sizes must be a non-empty sequence"):
        FastScorer(model, batch_sizes=())
    with pytest.raises(ValueError, match="batch_sizes\\[i\\] must be >= 1"):
        FastScorer(model, batch_sizes=(0, 2))
    with pytest.raises(ValueError, match="knn_backend must be one of"):
        FastScorer(model, knn_backend="cuda")
    with pytest.raises(RuntimeError, match="no memory bank yet"):
        FastScorer(_model())
    saved = model.memory_bank
    try:
        model.memory_bank = saved * 1e5
        with pytest.raises(ValueError, match="the memory bank must fit in float16"):
            FastScorer(model, dtype="float16", knn_backend="triton")
    finally:
        model.memory_bank = saved
    scorer = FastScorer(model, dtype="float32")
    with pytest.raises(ValueError, match="images must have shape \\[B, 3, H, W\\]"):
        scorer.score(np.zeros((2, 1, SIZE, SIZE), np.float32))
    with pytest.raises(TypeError, match="images must have a floating dtype"):
        scorer.score(np.zeros((1, 3, SIZE, SIZE), np.uint8))


# ------------------------------------------------------------------------------- GPU only
@pytest.fixture(scope="module")
def fitted_cuda(data):
    model = _model(device="cuda").fit(data[0])
    scores, maps = model.predict(data[1])
    return model, scores, maps


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_graph_path_matches_predict(fitted_cuda, data, dtype):
    model, ref_scores, ref_maps = fitted_cuda
    scorer = FastScorer(model, dtype=dtype, batch_sizes=(1, 8)).warmup()
    assert set(scorer._graphs) == {(1, SIZE, SIZE), (8, SIZE, SIZE)}
    scores, maps = scorer.score(data[1])  # 16 images: 2 graph replays of 8
    assert _rel(scores, ref_scores) < 1e-2 and _rel(maps, ref_maps) < 1e-2
    assert round(image_auroc(data[2], scores), 3) == round(image_auroc(data[2], ref_scores), 3)
    eager = FastScorer(model, dtype=dtype, cuda_graph=False)
    # Same batch size, same kernels: the graph replays what eager runs.
    e_scores, e_maps = eager.score(data[1][:8])
    g_scores, g_maps = scorer.score(data[1][:8])
    np.testing.assert_allclose(g_scores, e_scores, rtol=1e-5)
    np.testing.assert_allclose(g_maps, e_maps, rtol=1e-5, atol=1e-6)
    # 3 images padded into the batch-8 graph: the padding does not touch the real rows.
    p_scores, p_maps = scorer.score(data[1][:3])
    np.testing.assert_allclose(p_scores, g_scores[:3], rtol=1e-6)
    np.testing.assert_allclose(p_maps, g_maps[:3], rtol=1e-6, atol=1e-7)
    one = scorer.score(torch.from_numpy(data[1][:1]).cuda())  # batch-1 graph, torch on the GPU in/out
    assert one[0].is_cuda and one[1].shape == (1, SIZE, SIZE)
    e_one = eager.score(data[1][:1])
    np.testing.assert_allclose(one[0].cpu().numpy(), e_one[0], rtol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_path_with_reweight(data):
    # The re-weighting runs inside the captured graph too (its indexing must stay on the device).
    model = _model(device="cuda", reweight=True, anomaly_scorer_num_nn=3).fit(data[0])
    graph = FastScorer(model, dtype="float32", batch_sizes=(4,)).warmup()
    eager = FastScorer(model, dtype="float32", cuda_graph=False)
    g_scores, g_maps = graph.score(data[1][:4])
    e_scores, e_maps = eager.score(data[1][:4])
    np.testing.assert_allclose(g_scores, e_scores, rtol=1e-5)
    np.testing.assert_allclose(g_maps, e_maps, rtol=1e-5, atol=1e-6)
    ref_scores, _ = model.predict(data[1][:4])
    assert _rel(g_scores, ref_scores) < 1e-4


@pytest.mark.cuda
def test_cuda_graph_on_second_gpu(data):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    torch.cuda.set_device(0)
    model = _model(device="cuda:1").fit(data[0])
    scores, maps = FastScorer(model, dtype="float16", batch_sizes=(2,)).warmup().score(data[1][:2])
    ref_scores, ref_maps = model.predict(data[1][:2])
    assert _rel(scores, ref_scores) < 1e-2 and _rel(maps, ref_maps) < 1e-2


@pytest.mark.cuda
def test_cuda_graph_needs_triton_knn(fitted_cuda):
    with pytest.raises(ValueError, match="cuda_graph=True needs knn_backend='triton'"):
        FastScorer(fitted_cuda[0], knn_backend="torch")


def test_serve_bench_cli(fitted, tmp_path, capsys):
    import json

    from ofdb_fast.cli import main

    model_dir = fitted[0].save(tmp_path / "model")
    out = tmp_path / "serve.json"
    argv = ["patchcore", "serve-bench", "--model", str(model_dir), "--device", "cpu", "--batch-sizes", "2", "1",
            "--iters", "3", "--warmup", "1", "--dtype", "float32", "--baseline", "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    rows = doc["results"]
    assert [(r["provider"], r["batch"]) for r in rows] == [("fast", 1), ("torch_fp32", 1), ("fast", 2),
                                                           ("torch_fp32", 2)]
    for r in rows:
        assert r["iters"] == 3 and 0 < r["min_ms"] <= r["p50_ms"] <= r["p99_ms"]
        assert r["images_per_s"] == pytest.approx(1e3 * r["batch"] / r["mean_ms"])
    assert doc["dtype"] == "float32" and doc["cuda_graph"] is False and doc["memory_bank_shape"][1] == 256
    assert "p50_ms" in capsys.readouterr().out
    assert main(argv) == 2  # refuses to overwrite the JSON
    assert "exists; pass --overwrite" in capsys.readouterr().err
