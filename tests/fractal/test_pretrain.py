"""ofdb-fast pretrain: schedule, data sources, training loop, resume, checkpoints, export, CLI."""

from __future__ import annotations

import contextlib

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("safetensors")

from ofdb_fast import cli  # noqa: E402
from ofdb_fast.fractal import checkpoint as ck  # noqa: E402
from ofdb_fast.fractal import pretrain as pt  # noqa: E402
from ofdb_fast.fractal.schedule import CosineWarmupSchedule  # noqa: E402
from ofdb_fast.fractal.sources import (  # noqa: E402
    IfsSource, ImageFolderSource, ResidentSource, lexicographic_rank, scan_image_folder)


# ----------------------------------------------------------------------------- schedule
def test_schedule_hand_computed_points():
    s = CosineWarmupSchedule(0.1, t_initial=20000)  # the reference's settings
    assert s.lr_at(0) == 1e-6
    assert s.lr_at(1) == pytest.approx(1e-6 + (0.1 - 1e-6) / 5, rel=1e-15)
    assert s.lr_at(4) == pytest.approx(1e-6 + 4 * (0.1 - 1e-6) / 5, rel=1e-15)
    # no warm-up prefix: the cosine sees t = 5 itself, not t - warmup_t
    assert s.lr_at(5) == pytest.approx(1e-5 + 0.5 * (0.1 - 1e-5) * (1 + math.cos(math.pi * 5 / 20000)), rel=1e-15)
    assert s.lr_at(10000) == pytest.approx(0.050005, rel=1e-12)
    assert s.lr_at(19999) == pytest.approx(1e-5 + 0.5 * (0.1 - 1e-5) * (1 + math.cos(math.pi * 19999 / 20000)))
    assert s.lr_at(20000) == 1e-5 and s.lr_at(25000) == 1e-5
    # reference step timing: epochs 0 and 1 at warmup_lr_init, epoch e >= 1 at lr(e - 1)
    assert s.lr_for_epoch(0) == s.lr_for_epoch(1) == 1e-6
    assert [s.lr_for_epoch(e) for e in range(2, 8)] == [s.lr_at(t) for t in range(1, 7)]
    flat = CosineWarmupSchedule(0.1, t_initial=10, warmup_t=0)
    assert flat.lr_for_epoch(0) == flat.lr_at(0) == pytest.approx(0.1)


def test_schedule_matches_timm():
    timm_sched = pytest.importorskip("timm.scheduler")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    epochs = 40
    ref = timm_sched.CosineLRScheduler(opt, t_initial=epochs, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6,
                                       cycle_limit=1, t_in_epochs=True)
    ours = CosineWarmupSchedule(0.1, t_initial=epochs)
    for epoch in range(epochs + 5):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours.lr_for_epoch(epoch), rel=1e-12, abs=0)
        ref.step(epoch)  # after the epoch, as the reference main.py


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="t_initial must be >= 1"):
        CosineWarmupSchedule(0.1, t_initial=0)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        CosineWarmupSchedule(0.1, t_initial=3).lr_for_epoch(-1)


# ----------------------------------------------------------------------------- batches
def test_epoch_batches_permutation_and_rank_slices():
    b = pt.epoch_batches(10, 4, seed=3, epoch=0)
    assert [len(x) for x in b] == [4, 4, 2]  # drop_last=False
    assert sorted(torch.cat(b).tolist()) == list(range(10))
    again = pt.epoch_batches(10, 4, seed=3, epoch=0)
    assert all(torch.equal(x, y) for x, y in zip(b, again))
    assert not torch.equal(torch.cat(b), torch.cat(pt.epoch_batches(10, 4, seed=3, epoch=1)))
    parts = b[0].tensor_split(3)  # what 3 ranks take
    assert sorted(torch.cat(parts).tolist()) == sorted(b[0].tolist())


# ----------------------------------------------------------------------------- sources
def _textures(n_classes=4, size=40, seed=0):
    """uint8 [C, size, size, 3]: one image per class, a distinct colour plus noise."""
    r = np.random.default_rng(seed)
    base = r.integers(30, 226, (n_classes, 1, 1, 3))
    return np.clip(base + r.integers(-30, 31, (n_classes, size, size, 3)), 0, 255).astype(np.uint8)


def _write_folder(root, images, names=None):
    from PIL import Image

    for k, img in enumerate(images):
        d = os.path.join(root, str(k if names is None else names[k]))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img).save(os.path.join(d, f"image_{k}.png"))


def test_lexicographic_rank():
    rank = lexicographic_rank(12)
    assert [k for _, k in sorted(zip(rank, range(12)))] == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]


def _tiny_generate_options(tmp_path, **kw):
    from ofdb_fast.fractal.dataset import GenerateOptions

    base = dict(dataset_dir=str(tmp_path / "gen"), num_systems=30, num_class=12, per_class=1, size=24,
                n_points=1500, seed=5, workers=1, progress=False)
    base.update(kw)
    return GenerateOptions(**base)


def test_on_the_fly_equals_image_folder(tmp_path):
    """IfsSource renders what generate writes: same pixels (PNG is lossless), same labels."""
    from PIL import Image

    from ofdb_fast.fractal.dataset import class_system_index, image_relpath

    opts = _tiny_generate_options(tmp_path, per_class=2, num_class=11)
    fly = IfsSource.from_generate_options(opts, "cpu")
    folder, systems = class_system_index(opts.num_class, opts.per_class, opts.num_systems)
    images = fly.render(torch.arange(fly.num_samples)).numpy()
    for i in range(fly.num_samples):  # generate's layout, written here with generate's mapping
        path = os.path.join(opts.dataset_dir, image_relpath(int(folder[i]), i, opts.per_class))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(images[i]).save(path)
    disk = ImageFolderSource.open(opts.dataset_dir, "cpu")
    resident = fly.to_resident()
    assert isinstance(disk, ResidentSource) and disk.classes == resident.classes == fly.classes
    assert disk.classes[:4] == ["0", "1", "10", "2"]
    # ImageFolder order: class "0" (i = 0, 1), class "1" (2, 3), class "10" (20, 21), class "2" ...
    order = [i for c in sorted(range(opts.num_class), key=str) for i in range(c * 2, c * 2 + 2)]
    assert torch.equal(disk.images, resident.images[order])
    assert torch.equal(disk.labels, resident.labels[order])
    assert resident.images.float().mean() > 0  # the renders are not empty
    # batches from both sources agree sample by sample
    (xa, ya), = disk.batches([torch.tensor([0, 5, 7])], "cpu")
    (xb, yb), = fly.batches([torch.tensor(order)[[0, 5, 7]]], "cpu")
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_on_the_fly_renders_ahead_in_few_calls(tmp_path):
    """batches() renders whole batches ahead (up to `ahead` images per call): the same images
    and labels, in order, as one render per batch, with fewer calls."""
    opts = _tiny_generate_options(tmp_path)
    calls = []
    base = IfsSource.from_generate_options(opts, "cpu")

    def counting(*args, **kwargs):
        calls.append(int(kwargs["image_ids"].shape[0]))
        return base.render_fn(*args, **kwargs)

    idx = list(torch.randperm(12, generator=torch.Generator().manual_seed(0)).split(5))  # 5, 5, 2
    one = IfsSource.from_generate_options(opts, "cpu", render_fn=counting, ahead=1)
    singles = list(one.batches(idx, "cpu"))
    assert calls == [5, 5, 2]
    calls.clear()
    grouped = IfsSource.from_generate_options(opts, "cpu", render_fn=counting, ahead=10)  # 5 + 5, then 2
    ahead = list(grouped.batches(iter(idx), "cpu"))  # any iterable, not only lists
    assert calls == [10, 2]
    assert len(ahead) == len(singles) == 3
    for (xa, ya), (xb, yb), i in zip(singles, ahead, idx):
        assert xa.shape[0] == len(i) and torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(ya, base.labels[i])
    assert IfsSource.from_generate_options(opts, "cpu").ahead == 256  # cpu default: the resident chunk
    from ofdb_fast.fractal.sources import default_ahead

    assert default_ahead("cuda", 512, 256) == 4096  # 4096 * 512^2 * 7 bytes = 7 GiB
    assert default_ahead("cuda", 1024, 256) == 1170  # capped by 8 GiB
    assert default_ahead("cuda", 4096, 256) == 256 and default_ahead("cpu", 512, 64) == 64
    with pytest.raises(ValueError, match="ahead must be an int >= 1, got 0"):
        IfsSource(base.systems, base.n_maps, base.rows, np.arange(12), size=24, seed=5, ahead=0)


def test_on_the_fly_equals_generate_output(tmp_path):
    """The real `generate` against the on-the-fly source."""
    from ofdb_fast.fractal.dataset import generate

    opts = _tiny_generate_options(tmp_path, backend="cpu")
    generate(opts)
    disk = ImageFolderSource.open(opts.dataset_dir, "cpu")
    fly = IfsSource.from_generate_options(opts, "cpu").to_resident()
    order = sorted(range(opts.num_class), key=str)
    assert torch.equal(disk.images, fly.images[order]) and torch.equal(disk.labels, fly.labels[order])


def test_image_folder_scan_and_streaming(tmp_path):
    imgs = _textures(3, 16)
    _write_folder(tmp_path / "d", imgs, names=["b", "a", "c"])
    (tmp_path / "d" / "a" / "notes.txt").write_text("not an image")
    classes, paths, labels = scan_image_folder(tmp_path / "d")
    assert classes == ["a", "b", "c"] and labels == [0, 1, 2] and len(paths) == 3
    resident = ImageFolderSource.open(tmp_path / "d", "cpu")
    stream = ImageFolderSource.open(tmp_path / "d", "cpu", max_resident_bytes=10, num_workers=0)
    assert isinstance(stream, ImageFolderSource)
    idx = [torch.tensor([2, 0]), torch.tensor([1])]
    for (xa, ya), (xb, yb) in zip(resident.batches(idx, "cpu"), stream.batches(idx, "cpu")):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(resident.images[0], torch.from_numpy(imgs[1]))  # folder "a" holds image 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(OSError, match="is not a directory"):
        ImageFolderSource.open(tmp_path / "missing", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="one sub-folder per class"):
        ImageFolderSource.open(tmp_path / "empty", "cpu")
    _write_folder(tmp_path / "mixed", [_textures(1, 16)[0]])
    _write_folder(tmp_path / "mixed2", [_textures(1, 20)[0]])
    os.rename(tmp_path / "mixed2" / "0", tmp_path / "mixed" / "1")
    with pytest.raises(ValueError, match="same size"):
        ImageFolderSource.open(tmp_path / "mixed", "cpu")


# ----------------------------------------------------------------------------- training
def _resident(n_classes=4, size=40, seed=0):
    imgs = torch.from_numpy(_textures(n_classes, size, seed))
    labels = torch.arange(n_classes)
    return ResidentSource(imgs, labels, [str(k) for k in range(n_classes)])


def _cfg(**kw):
    base = dict(arch="resnet18", epochs=100, batch_size=4, lr=0.02, warmup_epochs=0, crop_size=32, eval_every=0,
                ckpt_every=0, log_every=1, seed=1, mix_prob=0.0)
    base.update(kw)
    return pt.TrainConfig(**base)


def test_training_loss_falls(tmp_path):
    # 4 colour-texture classes, two copies each; AutoAugment off: its colour ops (invert,
    # solarize, equalize) hide the class cue from a 30-step run (measured: no decrease).
    imgs = torch.from_numpy(_textures(4, 40)).repeat(2, 1, 1, 1)
    src = ResidentSource(imgs, torch.arange(4).repeat(2), [str(k) for k in range(4)])
    trainer = pt.Trainer(_cfg(epochs=30, batch_size=8, auto_augment=False), src, str(tmp_path), "cpu",
                         progress=False)
    trainer.fit()
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-8:]) < 0.25 * np.mean(losses[:8])  # measured: 0.46 -> 0.0004
    rec = json.loads(open(tmp_path / "metrics.jsonl").read().splitlines()[-1])
    assert {"step", "epoch", "loss", "lr", "images_per_s", "data_time", "step_time"} <= set(rec)
    assert trainer.evaluate() >= 0.75


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_reproduces_uninterrupted_run(tmp_path, accum):
    # 8 samples, batch 4: 2 steps per epoch, so 3 steps stop mid-epoch (and mid-window for accum 2)
    src = _resident(8, size=24)
    cfg = dict(epochs=5, crop_size=24, mix_prob=0.8, accum_steps=accum, warmup_epochs=1, lr=0.05)
    full = pt.Trainer(_cfg(**cfg), src, str(tmp_path / "a"), "cpu", progress=False)
    os.makedirs(tmp_path / "a")
    full.fit(max_steps=6)
    os.makedirs(tmp_path / "b")
    first = pt.Trainer(_cfg(**cfg), src, str(tmp_path / "b"), "cpu", progress=False)
    first.fit(max_steps=3)
    ckpt = str(tmp_path / "b" / "last.safetensors")
    assert ck.load_checkpoint(ckpt).state["pending"] == (1 if accum == 2 else 0)
    second = pt.Trainer(_cfg(**cfg), src, str(tmp_path / "b"), "cpu", progress=False)
    second.load(ckpt)
    second.fit(max_steps=6)
    wa, wb = _weights(full), _weights(second)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert not torch.equal(wa["conv1.weight"], _weights(first)["conv1.weight"])
    # the momentum buffers too
    sa, sb = full.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)


def test_resume_refuses_other_data_or_arch(tmp_path):
    src = _resident(4, size=24)
    t = pt.Trainer(_cfg(crop_size=24), src, str(tmp_path), "cpu", progress=False)
    t.fit(max_steps=1)
    ckpt = str(tmp_path / "last.safetensors")
    with pytest.raises(ValueError, match="num_classes=4, the data has 6"):
        pt.Trainer(_cfg(crop_size=24), _resident(6, size=24), str(tmp_path), "cpu", progress=False).load(ckpt)
    with pytest.raises(ValueError, match="does not match --arch resnet50"):
        pt.Trainer(_cfg(crop_size=24, arch="resnet50"), src, str(tmp_path), "cpu", progress=False).load(ckpt)


# ----------------------------------------------------------------------------- checkpoints / export
@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    t = pt.Trainer(_cfg(crop_size=24), _resident(4, size=24), str(out), "cpu", progress=False)
    t.fit(max_steps=2)
    return str(out / "last.safetensors"), t


def test_checkpoint_round_trip(trained_ckpt):
    path, trainer = trained_ckpt
    c = ck.load_checkpoint(path)
    assert c.state["global_step"] == 2 and c.state["config"]["arch"] == "resnet18"
    assert set(c.model) == set(trainer.model.state_dict())
    assert {"torch_cpu", "augment"} <= set(c.rng)
    assert c.optim["param_groups"][0]["momentum"] == 0.9
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(4096)


def test_checkpoint_errors(tmp_path, trained_ckpt):
    with pytest.raises(OSError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ck.load_checkpoint(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="must have format 'ofdb_fast.checkpoint'"):
        ck.load_checkpoint(other)
    with pytest.raises(ValueError, match="must have format 'ofdb_fast.backbone'"):
        ck.load_backbone(trained_ckpt[0])


def test_export_loads_into_torchvision_and_patchcore(tmp_path, trained_ckpt):
    import torchvision

    path, trainer = trained_ckpt
    out = tmp_path / "bb.safetensors"
    meta = ck.export_backbone(path, out)
    assert meta["format"] == "ofdb_fast.backbone" and meta["arch"] == "resnet18" and meta["version"] == "1"
    state, meta2 = ck.load_backbone(out, "resnet18")
    assert meta2["arch"] == "resnet18" and not any(k.startswith("fc.") for k in state)
    net = torchvision.models.resnet18(weights=None)
    res = net.load_state_dict(state, strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and not res.unexpected_keys
    assert torch.equal(net.conv1.weight, trainer.model.conv1.weight.detach().contiguous())
    with pytest.raises(OSError, match="exists; pass --overwrite"):
        ck.export_backbone(path, out)
    with pytest.raises(ValueError, match="does not match the checkpoint's arch"):
        ck.export_backbone(path, tmp_path / "x.safetensors", arch="resnet50")
    with pytest.raises(ValueError, match="exported for 'resnet18', not 'resnet50'"):
        ck.load_backbone(out, "resnet50")
    from ofdb_fast.patchcore.backbones import build_extractor

    ext = build_extractor("resnet18", ["layer2", "layer3"], str(out))
    assert torch.equal(ext.state_dict()["conv1.weight"], state["conv1.weight"])
    with pytest.raises(ValueError, match="do not match backbone"):
        build_extractor("resnet50", ["layer2"], str(out))


def test_export_refuses_wrong_arch_state(tmp_path):
    net = pt.build_model("resnet18", 3)
    ck.save_checkpoint(tmp_path / "c.safetensors", model_state=net.state_dict(), optim_state=None,
                       state={"config": {"arch": "resnet50"}})
    with pytest.raises(ValueError, match="does not hold a resnet50 model"):
        ck.export_backbone(tmp_path / "c.safetensors", tmp_path / "o.safetensors")


# ----------------------------------------------------------------------------- CLI
def _cli_train(args):
    return cli.main(["pretrain", "--arch", "resnet18", "--crop-size", "24", "--batch-size", "2", "--no-progress",
                     "--device", "cpu", "--eval-every", "1", "--ckpt-every", "1", "--log-every", "1", *args])


def test_cli_train_resume_export(tmp_path, capsys):
    _write_folder(tmp_path / "d", _textures(4, 24))
    out = str(tmp_path / "run")
    assert _cli_train(["--data", str(tmp_path / "d"), "--epochs", "3", "--max-steps", "2", "--out", out]) == 0
    assert _cli_train(["--data", str(tmp_path / "d"), "--epochs", "3", "--out", out]) == 2
    assert "is not empty" in capsys.readouterr().err
    ckpt = os.path.join(out, "last.safetensors")
    assert _cli_train(["--data", str(tmp_path / "d"), "--epochs", "3", "--out", out, "--resume", ckpt,
                       "--export", str(tmp_path / "bb.safetensors")]) == 0
    assert ck.load_checkpoint(ckpt).state["global_step"] == 6
    records = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))
    assert any("eval_top1" in r for r in records)
    assert json.load(open(os.path.join(out, "config.json")))["config"]["arch"] == "resnet18"
    assert ck.load_backbone(tmp_path / "bb.safetensors")[1]["arch"] == "resnet18"
    assert cli.main(["pretrain", "export", ckpt, str(tmp_path / "e.safetensors")]) == 0
    assert cli.main(["pretrain", "export", ckpt, str(tmp_path / "e.safetensors")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_flag_errors(tmp_path, capsys):
    assert _cli_train(["--out", str(tmp_path / "o")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err
    assert _cli_train(["--data", str(tmp_path), "--on-the-fly", "--out", str(tmp_path / "o")]) == 2
    assert "exclusive" in capsys.readouterr().err
    _write_folder(tmp_path / "d", _textures(3, 24))
    assert _cli_train(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    assert "gives a batch of 1 image" in capsys.readouterr().err
    assert _cli_train(["--data", str(tmp_path), "--mix-prob", "1.5", "--out", str(tmp_path / "o")]) == 2
    assert "--mix-prob must be in [0, 1]" in capsys.readouterr().err


def test_cli_on_the_fly(tmp_path):
    out = str(tmp_path / "run")
    assert _cli_train(["--on-the-fly", "--num_systems", "10", "--num_class", "4", "--size", "24", "--n_points",
                       "500", "--epochs", "1", "--out", out]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["source"]["on_the_fly"] is True and cfg["source"]["num_classes"] == 4


# ----------------------------------------------------------------------------- DDP (gloo, CPU)
@contextlib.contextmanager
def _gloo_rank(rank, world, port):
    """Inside a spawned worker: torchrun's environment for ``rank`` and a gloo process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, result_dir):
    with _gloo_rank(rank, world, port):
        t = pt.Trainer(_cfg(crop_size=24, batch_size=4, mix_prob=0.8), _resident(8, size=24), out, "cpu",
                       progress=False)
        t.fit(max_steps=3)
        torch.save({k: v for k, v in t.model.state_dict().items()}, os.path.join(result_dir, f"w{rank}.pt"))


@pytest.mark.slow  # ~20 s on the 2-core CI machine: two spawned interpreters import torch
def test_ddp_two_ranks_gloo(tmp_path):
    """torchrun-style env, 2 CPU ranks: identical weights on both, rank 0 alone writes."""
    import torch.multiprocessing as mp

    port = _free_port()
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, port, str(out), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "w0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "w1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0 if "running" not in k and "num_batches" not in k)
    assert not torch.equal(w0["bn1.running_mean"], w1["bn1.running_mean"])  # per-rank BN stats (no SyncBN)
    ckpt = ck.load_checkpoint(out / "last.safetensors")
    assert ckpt.state["world_size"] == 2 and ckpt.state["global_step"] == 3
    assert len(open(out / "metrics.jsonl").read().splitlines()) == 3  # one writer


def _ddp_resume_worker(rank, world, port, out, result_dir):
    with _gloo_rank(rank, world, port) as dist:
        # 8 images, batch 4 (2 per rank), accum 2: 3 steps stop inside an accumulation window.
        cfg = dict(crop_size=24, batch_size=4, mix_prob=0.8, accum_steps=2, epochs=5)
        src = _resident(8, size=24)
        full = pt.Trainer(_cfg(**cfg), src, os.path.join(out, "full"), "cpu", progress=False)
        full.fit(max_steps=4)
        first = pt.Trainer(_cfg(**cfg), src, os.path.join(out, "part"), "cpu", progress=False)
        first.fit(max_steps=3)
        dist.barrier()  # rank 0 has written the checkpoint
        second = pt.Trainer(_cfg(**cfg), src, os.path.join(out, "part"), "cpu", progress=False)
        second.load(os.path.join(out, "part", "last.safetensors"))  # every rank resumes
        second.fit(max_steps=4)
        torch.save({"full": full.model.state_dict(), "resumed": second.model.state_dict()},
                   os.path.join(result_dir, f"resume{rank}.pt"))


@pytest.mark.slow  # ~25 s on the 2-core CI machine: two spawned interpreters, three short runs each
def test_ddp_resume_inside_accumulation_window(tmp_path):
    """Both ranks resume rank 0's checkpoint (augmentation seeding check per rank) and the
    per-rank gradients pending in the accumulation window survive the checkpoint."""
    import torch.multiprocessing as mp

    port = _free_port()
    out = tmp_path / "run"
    for sub in ("full", "part"):
        (out / sub).mkdir(parents=True)
    mp.spawn(_ddp_resume_worker, args=(2, port, str(out), str(tmp_path)), nprocs=2, join=True)
    assert ck.load_checkpoint(out / "part" / "last.safetensors").state["pending"] == 0
    for rank in (0, 1):
        r = torch.load(tmp_path / f"resume{rank}.pt", weights_only=True)
        for k, v in r["full"].items():
            if rank > 0 and "running" in k:
                continue  # BatchNorm statistics are per rank; the checkpoint keeps rank 0's
            if v.is_floating_point():
                # Not bit-equal: the pending gradients are averaged before the window's all-reduce.
                torch.testing.assert_close(r["resumed"][k], v, rtol=1e-5, atol=1e-6, msg=k)
            else:
                assert torch.equal(r["resumed"][k], v), k


@pytest.mark.cuda
def test_cuda_training_steps(tmp_path):
    src = ResidentSource(torch.from_numpy(_textures(8, 40)).cuda(), torch.arange(8).cuda(),
                         [str(k) for k in range(8)])
    t = pt.Trainer(_cfg(crop_size=32, mix_prob=0.8), src, str(tmp_path), "cuda", progress=False)
    assert t.autocast_dtype == torch.bfloat16
    t.fit(max_steps=4)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    t2 = pt.Trainer(_cfg(crop_size=32, mix_prob=0.8), src, str(tmp_path), "cuda", progress=False)
    t2.load(str(tmp_path / "last.safetensors"))
    assert t2.global_step == 4
