"""Pretraining throughput: training images/s with each data pipeline, same model, same device.

Providers:
- ``reference``: the OFDB-4AD approach (notes b.1): ``torchvision.datasets.ImageFolder`` of
  PNGs + a CPU ``DataLoader`` (shuffle, ``drop_last=False``) running the per-sample PIL
  transforms RandomResizedCrop -> flip -> AutoAugment -> ToTensor -> Normalize ->
  RandomErasing in worker processes; CutMix/MixUp on the device batch.
- ``resident``: ``ofdb_fast``'s path: the PNGs decoded once into a device tensor and augmented
  in batches on the device (:mod:`ofdb_fast.fractal.gpu_augment`), the whole step through
  ``Trainer.train_step``. This is also what ``pretrain --on-the-fly`` does when the rendered set
  fits in memory (the OFDB 1k case: rendered once, then resident).
- ``on_the_fly``: ``pretrain --on-the-fly`` for sets too large to keep: the images rendered from
  their IFS systems by ``ifs_render`` on the device (:class:`ofdb_fast.fractal.sources.IfsSource`,
  no disk, no decode; a round's batches in one render call, as ``IfsSource.ahead`` groups them),
  then the same augmentation and step; the systems are sampled with
  ``ofdb_fast.fractal.ifs.sample_systems`` (one class per system, 100k points, as generate).

Both run the same model step (bf16 autocast + channels_last on CUDA, fp32 on CPU). Without
CUDA only the tiny CPU case runs. extra_info: images/s and the data-time fraction (time spent
waiting for / producing the batch over the step time). Sizes: ``bench_sizes("pretrain")`` =
``(arch, n_images, image_side, crop, batch)``; each round is ``STEPS`` training steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pytest
from conftest import bench_sizes

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from ofdb_fast.fractal import pretrain as pt  # noqa: E402
from ofdb_fast.fractal.gpu_augment import mix_batch, reference_transform  # noqa: E402
from ofdb_fast.fractal.sources import IfsSource, ImageFolderSource  # noqa: E402

CPU_CASE = ("resnet18", 16, 64, 32, 8)
STEPS = 8


def _cases():
    if torch.cuda.is_available():
        return [(c, "cuda") for c in bench_sizes("pretrain")]
    return [(CPU_CASE, "cpu")]


@pytest.fixture(scope="module")
def folders():
    made: dict = {}
    yield lambda n, side: made.setdefault((n, side), _write_folder(n, side))
    for d in made.values():
        shutil.rmtree(d, ignore_errors=True)


def _write_folder(n: int, side: int) -> str:
    from PIL import Image

    root = tempfile.mkdtemp(prefix="bench_pretrain_")
    rng = np.random.default_rng(0)
    for i in range(n):  # sparse bright structure on black, like the fractal renders
        img = np.zeros((side, side, 3), np.uint8)
        mask = rng.random((side, side)) < 0.12
        img[mask] = rng.integers(0, 256, 3, dtype=np.uint8)
        os.makedirs(os.path.join(root, str(i)), exist_ok=True)
        Image.fromarray(img).save(os.path.join(root, str(i), f"image_{i}.png"), compress_level=1)
    return root


def _trainer(arch, n, crop, batch, device, source):
    cfg = pt.TrainConfig(arch=arch, epochs=1000, batch_size=batch, crop_size=crop, eval_every=0, ckpt_every=0)
    return pt.Trainer(cfg, source, tempfile.mkdtemp(prefix="bench_pretrain_run_"), device, progress=False)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _ifs_source(n: int, side: int, device: str) -> IfsSource:
    from ofdb_fast.fractal.ifs import sample_systems

    params = sample_systems(n, seed=0)
    return IfsSource(params.systems, params.n_maps, np.arange(n), np.arange(n), size=side, seed=0, device=device)


@pytest.mark.parametrize("provider", ["reference", "resident", "on_the_fly"])
@pytest.mark.parametrize("case,device", _cases(), ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else v)
def test_pretrain_throughput(benchmark, folders, provider, case, device):
    arch, n, side, crop, batch = case
    if provider == "on_the_fly":
        source = _ifs_source(n, side, device)
    else:
        root = folders(n, side)
        source = ImageFolderSource.open(root, device)
    trainer = _trainer(arch, n, crop, batch, device, source)
    stats = {"data": 0.0, "total": 0.0, "images": 0}

    if provider in ("resident", "on_the_fly"):
        def run():
            # The round's batches go to the source at once, as Trainer.fit hands it an epoch's:
            # on_the_fly renders them ahead in one call (IfsSource.ahead), resident slices.
            step = trainer.global_step
            idxs = [pt.epoch_batches(n, batch, 0, s // trainer.steps_per_epoch)[s % trainer.steps_per_epoch]
                    for s in range(step, step + STEPS)]
            t_start = t0 = time.perf_counter()
            for images, labels in source.batches(idxs, device):
                trainer.train_step(images, labels, trainer.global_step)
                _sync(device)
                stats["data"] += trainer._t_data - t0
                stats["images"] += int(labels.shape[0])
                trainer.global_step += 1
                t0 = time.perf_counter()
            stats["total"] += time.perf_counter() - t_start
    else:
        import torch.nn.functional as F
        import torchvision

        workers = min(16, os.cpu_count() or 1) if device == "cuda" else 0  # the baseline: 16
        ds = torchvision.datasets.ImageFolder(root, transform=reference_transform(crop))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                             pin_memory=device == "cuda", persistent_workers=workers > 0)
        state = {"it": iter(loader)}
        gen = torch.Generator().manual_seed(0)
        autocast = trainer.autocast_dtype

        def next_batch():
            try:
                return next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                return next(state["it"])

        def run():
            t_start = time.perf_counter()
            for _ in range(STEPS):
                t0 = time.perf_counter()
                x, y = next_batch()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x, ya, yb, lam = mix_batch(x, y, gen)
                x = x.contiguous(memory_format=torch.channels_last)
                _sync(device)
                stats["data"] += time.perf_counter() - t0
                with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
                    out = trainer.model(x)
                    loss = lam * F.cross_entropy(out, ya) + (1 - lam) * F.cross_entropy(out, yb)
                loss.backward()
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
                _sync(device)
                stats["images"] += int(x.shape[0])
            stats["total"] += time.perf_counter() - t_start

    benchmark.group = f"pretrain|{arch}-{n}x{side}-crop{crop}-b{batch}"
    benchmark.pedantic(run, rounds=3 if device == "cuda" else 1, warmup_rounds=1)
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": "bf16-autocast" if trainer.autocast_dtype is not None else "float32",
        "shape": [n, side, side, 3],
        "images_per_s": stats["images"] / max(stats["total"], 1e-9),
        "data_time_fraction": stats["data"] / max(stats["total"], 1e-9),
    })
