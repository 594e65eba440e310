"""PatchCore end to end: fit (features + coreset) and predict (features + kNN + maps).

Providers (same backbone, wide_resnet50_2 layer2+layer3 with random weights: the timing does not
depend on the weights and this machine cannot download them):
- ``reference``: the reference project's approach: aggregation with torch ops (Unfold,
  bilinear resize of the unfolded patches, adaptive_avg_pool1d), the coreset as a Python loop
  of torch ops (``kcenter_greedy(backend="torch")``), scoring with chunked ``torch.cdist`` +
  ``topk``, maps smoothed per image with scipy on the host;
- ``ofdb_fast``: ``PatchCore`` with every op on ``backend="auto"``.
Sizes: ``bench_sizes("patchcore")`` = (n_images, image size); the test set has as many
images as the training set. Images are decoded once in setup, so decoding is not timed.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from conftest import bench_sizes

torch = pytest.importorskip("torch")

PROVIDERS = ["reference", "ofdb_fast"]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=bench_sizes("patchcore"), ids=lambda s: f"{s[0]}x{s[1]}")
def images(request, tmp_path_factory):
    from ofdb_fast.patchcore.data import MVTecDataset, Preprocess
    from ofdb_fast.synth import make_dataset

    n_images, size = request.param
    root = tmp_path_factory.mktemp("bench_patchcore")
    n_defect_types = 4  # synth categories have 4 defect types
    make_dataset(root, categories=["weave"], size=max(64, size), n_train=n_images,
                 n_test_good=n_images // 2, n_test_defect=max(1, n_images // (2 * n_defect_types)))
    pre = Preprocess(resize=size, imagesize=size)
    train = np.stack([it["image"] for it in MVTecDataset(root / "weave", "train", pre)])
    test = np.stack([it["image"] for it in MVTecDataset(root / "weave", "test", pre)])
    return request.param, train, test


def _model():
    from ofdb_fast.patchcore.model import PatchCore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return PatchCore(backbone="wide_resnet50_2", weights="random", device=_device(), batch_size=8)


# ---------------------------------------------------------------- reference provider
def _reference_embed(model, x):
    """The reference's PatchMaker + MeanMapper + Aggregator with torch ops."""
    import torch.nn.functional as F

    with torch.inference_mode():
        feats = model.extractor(x)
        b = x.shape[0]
        h0, w0 = feats[0].shape[2:]
        per_layer = []
        for f in feats:
            c, h, w = f.shape[1:]
            u = F.unfold(f, 3, padding=1, stride=1).reshape(b, c, 3, 3, h, w)
            if (h, w) != (h0, w0):
                u = F.interpolate(u.reshape(-1, 1, h, w), size=(h0, w0), mode="bilinear", align_corners=False)
                u = u.reshape(b, c, 3, 3, h0, w0)
            u = u.permute(0, 4, 5, 1, 2, 3).reshape(b * h0 * w0, 1, -1)
            per_layer.append(F.adaptive_avg_pool1d(u, 1024)[:, 0])
        stacked = torch.stack(per_layer, 1).reshape(b * h0 * w0, 1, -1)
        return F.adaptive_avg_pool1d(stacked, 1024)[:, 0].reshape(b, h0, w0, -1)


def _reference_fit(model, train):
    from ofdb_fast.ops.kcenter_greedy import kcenter_greedy

    dev = model.device
    chunks = [_reference_embed(model, torch.from_numpy(train[i:i + 8]).to(dev)) for i in range(0, len(train), 8)]
    feats = torch.cat([c.reshape(-1, c.shape[-1]) for c in chunks])
    idx = kcenter_greedy(feats, percentage=0.1, backend="torch")
    return feats[torch.as_tensor(idx, device=feats.device)]


def _reference_predict(model, bank, test):
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    scores, maps = [], []
    for i in range(0, len(test), 8):
        x = torch.from_numpy(test[i:i + 8]).to(model.device)
        f = _reference_embed(model, x)
        b, h, w, d = f.shape
        q = f.reshape(-1, d)
        dist = torch.cat([torch.cdist(q[j:j + 4096], bank).pow(2).topk(1, largest=False).values
                          for j in range(0, q.shape[0], 4096)])
        patch = dist[:, 0].reshape(b, h, w)
        scores.append(patch.reshape(b, -1).amax(1).cpu().numpy())
        up = F.interpolate(patch[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
        maps.extend(gaussian_filter(m, sigma=4) for m in up.cpu().numpy())
    return np.concatenate(scores), np.stack(maps)


# ------------------------------------------------------------------------------ bench
@pytest.mark.parametrize("provider", PROVIDERS)
def test_patchcore_end_to_end(benchmark, provider, images):
    (n_images, size), train, test = images
    model = _model()
    if provider == "reference":  # the reference runs its backbone in the default NCHW layout
        model.extractor.to(memory_format=torch.contiguous_format)
    timings = {}

    def run():
        t0 = time.perf_counter()
        if provider == "reference":
            bank = _reference_fit(model, train)
            _sync()
            timings["fit"] = time.perf_counter() - t0
            scores, maps = _reference_predict(model, bank, test)
        else:
            model.fit(train)
            _sync()
            timings["fit"] = time.perf_counter() - t0
            scores, maps = model.predict(test)
        _sync()
        timings["total"] = time.perf_counter() - t0
        assert scores.shape == (len(test),) and maps.shape == (len(test), size, size)

    benchmark.group = f"patchcore|{n_images}x{size}"
    benchmark.pedantic(run, rounds=1, warmup_rounds=1)
    predict_s = max(timings["total"] - timings["fit"], 1e-9)
    benchmark.extra_info.update({
        "device": model.device, "dtype": "float32", "shape": [n_images, 3, size, size],
        "backbone": "wide_resnet50_2", "fit_seconds": timings["fit"],
        "predict_images_per_s": len(test) / predict_s,
        "images_per_s": (len(train) + len(test)) / max(timings["total"], 1e-9),
    })
