"""``ofdb-fast pretrain``: OFDB fractal pretraining (recipe b.1 of OFDB-4AD) with GPU-side data.

Defaults reproduce the reference: torchvision ResNet (``weights=None``), SGD lr 0.1, momentum
0.9, weight decay 1e-4 on all parameters, batch 128 (last batch partial), 20,000 epochs,
timm-style cosine schedule with 5 warm-up epochs stepped per epoch with the reference's timing
(:mod:`.schedule`), per-sample augmentation and CutMix/MixUp of :mod:`.gpu_augment`, loss
``lam * CE(y_a) + (1 - lam) * CE(y_b)``, ImageFolder's lexicographic class order.

Deliberate deviations (each fixes a reference defect or is a speed-up):

* ``--mix-prob`` is a float (the reference parses it with a lambda returning bool).
* ``--accum-steps k`` accumulates k batches per optimiser step (loss / k, ``zero_grad`` after
  the step); the reference zeroes the gradients every batch, so its accumulation is a no-op.
* Seeding: every random draw comes from counter-based seeds ``(seed, stream, counter)``:
  the epoch permutation from ``(seed, epoch)``, the augmentation of a step from
  ``(seed, global_step * world_size + rank)``. A run is a function of ``--seed`` alone
  (the reference leaves NumPy unseeded) and resuming from any step is bit-for-bit on CPU.
* The data stays on the device and is augmented in batches; bf16 autocast and channels_last
  on CUDA; optional ``torch.compile``.

Multi-GPU: launch with ``torchrun``; ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` select DDP
(NCCL on CUDA, gloo on CPU). Every rank draws the same epoch permutation and takes its
``tensor_split`` slice of each global batch; rank 0 writes logs and checkpoints (every rank
resumes from them; gradients pending inside an accumulation window are averaged over the ranks
first, so a resumed run equals an uninterrupted one up to summation order).
BatchNorm statistics stay per rank (no SyncBN, like the single-GPU reference).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

from .._io import atomic_write_json, refuse_nonempty_dir

ARCHS = ("resnet18", "resnet50", "wide_resnet50_2")
# Counter-RNG streams private to pretraining (keys of reference/_rng.stream_key).
_STREAM_PERM = 32
_STREAM_AUG = 33


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run (recorded in config.json and in each checkpoint)."""

    arch: str = "resnet50"
    epochs: int = 20000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_min: float = 1e-5
    warmup_epochs: int = 5
    warmup_lr_init: float = 1e-6
    crop_size: int = 224
    mix_prob: float = 0.8
    cutmix_prob: float = 0.5
    mix_alpha: float = 1.0
    auto_augment: bool = True
    erase_p: float = 0.5
    hflip: float = 0.5
    accum_steps: int = 1
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: bool = True
    compile: bool = False
    eval_every: int = 100
    ckpt_every: int = 100
    log_every: int = 10

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name in ("epochs", "batch_size", "accum_steps", "crop_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("mix_prob", "cutmix_prob", "erase_p", "hflip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"--amp must be auto, bf16 or off, got {self.amp!r}")


# Fields a resumed run may change (runtime only; everything else comes from the checkpoint).
_RUNTIME_FIELDS = ("compile", "eval_every", "ckpt_every", "log_every")


def _seed_for(seed: int, stream: int, counter: int) -> int:
    from ..reference._rng import stream_key

    return int(stream_key(seed, stream, counter))


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int):
    """The global batches of ``epoch``: a permutation keyed by ``(seed, epoch)``, split in
    ``batch_size`` chunks (last one partial, as ``drop_last=False``)."""
    import torch

    g = torch.Generator().manual_seed(_seed_for(seed, _STREAM_PERM, epoch))
    return list(torch.randperm(num_samples, generator=g).split(batch_size))


def build_model(arch: str, num_classes: int):
    """torchvision ``arch`` with random init (``weights=None``) and ``num_classes`` outputs."""
    import torchvision

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


class Trainer:
    """One pretraining run over a :mod:`.sources` source.

    Args:
        cfg: hyper-parameters.
        source: a data source (resident, streaming or rendered on the fly).
        out_dir: run directory (metrics.jsonl, config.json, last.safetensors).
        device: torch device; DDP ranks use ``cuda:LOCAL_RANK``.
        progress: show a tqdm bar (rank 0).
    """

    def __init__(self, cfg: TrainConfig, source, out_dir: str, device, *, progress: bool = True):
        import torch

        from .gpu_augment import AugmentConfig, GpuAugment
        from .schedule import CosineWarmupSchedule

        cfg.validate()
        self.cfg, self.source, self.out_dir = cfg, source, out_dir
        self.device = torch.device(device)
        self.world, self.rank, _ = _dist_env()
        if cfg.batch_size < self.world:
            raise ValueError(f"--batch-size must be >= the number of ranks, got {cfg.batch_size} < {self.world}")
        n, b, w = source.num_samples, cfg.batch_size, self.world
        sizes = {len(s) for size in {min(b, n), n % b} - {0} for s in torch.arange(size).tensor_split(w)}
        if 1 in sizes:
            raise ValueError(f"--batch-size {b} with {n} images and {w} rank(s) gives a batch of 1 image on a rank, "
                             f"on which BatchNorm cannot train; pick another --batch-size")
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        torch.manual_seed(_seed_for(cfg.seed, 0, 0))  # model init: same on every rank
        model = build_model(cfg.arch, source.num_classes).to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # unwrapped: state_dict keys as torchvision
        self.train_model = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(model, device_ids=ids)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.warmup_lr_init, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.schedule = CosineWarmupSchedule(cfg.lr, t_initial=cfg.epochs, lr_min=cfg.lr_min,
                                             warmup_t=cfg.warmup_epochs, warmup_lr_init=cfg.warmup_lr_init)
        self.augment = GpuAugment(AugmentConfig(size=cfg.crop_size, hflip=cfg.hflip, auto_augment=cfg.auto_augment,
                                                erase_p=cfg.erase_p))
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        self.steps_per_epoch = math.ceil(source.num_samples / cfg.batch_size)
        self.global_step = 0  # batches done (micro-steps)
        self.pending = 0  # batches accumulated since the last optimiser step
        self.metrics_path = os.path.join(out_dir, "metrics.jsonl")

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {
            "global_step": self.global_step,
            "pending": self.pending,
            "steps_per_epoch": self.steps_per_epoch,
            "num_classes": self.source.num_classes,
            "num_samples": self.source.num_samples,
            "classes_head": self.source.classes[:8],
            "config": asdict(self.cfg),
            "schedule": self.schedule.state_dict(),
            "source": self.source.describe(),
            "world_size": self.world,
            "versions": _versions(),
        }

    def save(self, path: str) -> None:
        import torch

        from .checkpoint import save_checkpoint

        rng = {"torch_cpu": torch.get_rng_state(),
               "augment": self._aug_generator(self.global_step, rank=0).get_state()}
        if self.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        grads = {}
        if self.pending:
            grads = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        save_checkpoint(path, model_state=self.model.state_dict(), optim_state=self.optimizer.state_dict(),
                        state=self._state(), rng=rng, grads=grads)

    def load(self, path: str) -> None:
        """Restore a checkpoint of this run (validated against the model and the data)."""
        import torch

        from .checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        st = ckpt.state
        for key, have in (("num_classes", self.source.num_classes), ("num_samples", self.source.num_samples)):
            if st.get(key) != have:
                raise ValueError(f"--resume {path}: checkpoint has {key}={st.get(key)}, the data has {have}")
        if st.get("world_size", 1) != self.world:
            raise ValueError(f"--resume {path}: checkpoint was written with world_size={st.get('world_size')}, "
                             f"this run has {self.world} (the batch slicing would differ)")
        try:
            self.model.load_state_dict(ckpt.model, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"--resume {path} does not match --arch {self.cfg.arch}: {exc}") from exc
        if ckpt.optim is None:
            raise ValueError(f"--resume {path} has no optimiser state")
        self.optimizer.load_state_dict(ckpt.optim)
        self.global_step, self.pending = int(st["global_step"]), int(st.get("pending", 0))
        params = dict(self.model.named_parameters())
        for n, g in ckpt.grads.items():
            params[n].grad = torch.empty_like(params[n]).copy_(g)  # keeps the parameter's memory format
        if "torch_cpu" in ckpt.rng:
            torch.set_rng_state(ckpt.rng["torch_cpu"])
        if "torch_cuda" in ckpt.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.rng["torch_cuda"], self.device)
        # Rank 0 wrote the checkpoint: compare with rank 0's generator on every rank.
        if "augment" in ckpt.rng and not torch.equal(ckpt.rng["augment"],
                                                     self._aug_generator(self.global_step, rank=0).get_state()):
            raise ValueError(f"--resume {path}: augmentation RNG state does not match this version's seeding scheme")

    # ------------------------------------------------------------------ loop
    def _aug_generator(self, step: int, rank: int | None = None):
        import torch

        rank = self.rank if rank is None else rank
        return torch.Generator().manual_seed(_seed_for(self.cfg.seed, _STREAM_AUG, step * self.world + rank))

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self, images, labels, step: int) -> float:
        """Augment, forward, backward; optimiser step when the accumulation window closes."""
        import torch
        import torch.nn.functional as F

        from .gpu_augment import mix_batch

        cfg = self.cfg
        g = self._aug_generator(step)
        x = self.augment(images, g)
        x, y_a, y_b, lam = mix_batch(x, labels, g, mix_prob=cfg.mix_prob, cutmix_prob=cfg.cutmix_prob,
                                     alpha=cfg.mix_alpha)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._sync()  # so data_time measures the augmentation, not its launch
        self._t_data = time.perf_counter()
        self.pending += 1
        last_of_epoch = (step + 1) % self.steps_per_epoch == 0
        do_step = self.pending == cfg.accum_steps or last_of_epoch
        ctx = (self.train_model.no_sync() if (self.world > 1 and not do_step and hasattr(self.train_model, "no_sync"))
               else contextlib.nullcontext())
        with ctx:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                out = self.train_model(x)
                loss = lam * F.cross_entropy(out, y_a) + (1.0 - lam) * F.cross_entropy(out, y_b)
            (loss / cfg.accum_steps).backward()
        if do_step:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.pending = 0
        return float(loss.detach())

    def _average_pending_grads(self) -> None:
        """DDP, stopped inside an accumulation window: the accumulated gradients are still
        per rank (``no_sync``), but only rank 0 writes the checkpoint. Replace them by their
        average over the ranks on every rank: the window's final all-reduce averages
        ``pending + rest`` over the ranks, which is linear, so a run resumed from the averaged
        gradients takes the same step (up to summation order) as an uninterrupted one."""
        import torch.distributed as dist

        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    def evaluate(self, batch: int = 128) -> float:
        """Top-1 accuracy on the source images resized to ``crop_size`` (the reference's
        eval: Resize(224) on the training images)."""
        import torch
        import torch.nn.functional as F

        from .gpu_augment import IMAGENET_MEAN, IMAGENET_STD

        self.model.eval()
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[None, :, None, None]
        correct = 0
        idx = list(torch.arange(self.source.num_samples).split(batch))
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                             enabled=self.autocast_dtype is not None):
            for images, labels in self.source.batches(idx, self.device):
                x = images.permute(0, 3, 1, 2).float()
                x = F.interpolate(x, size=(self.cfg.crop_size,) * 2, mode="bilinear", antialias=True,
                                  align_corners=False).round().clamp(0, 255)
                x = ((x / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
                correct += int((self.model(x).argmax(1) == labels).sum())
        self.model.train()
        return correct / self.source.num_samples

    def fit(self, *, max_steps: int | None = None, export: str | None = None) -> dict:
        """Train until ``epochs`` (or ``max_steps`` batches in total); returns the last record."""
        cfg = self.cfg
        end = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.global_step, unit="step", dynamic_ncols=True, file=sys.stderr)
        record: dict = {}
        last_ckpt = os.path.join(self.out_dir, "last.safetensors")
        t_prev, win_images, win_data, win_step, win_n = time.perf_counter(), 0, 0.0, 0.0, 0
        self.model.train()
        while self.global_step < end:
            epoch, first = divmod(self.global_step, self.steps_per_epoch)
            lr = self.schedule.lr_for_epoch(epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batches = epoch_batches(self.source.num_samples, cfg.batch_size, cfg.seed, epoch)
            n_run = min(self.steps_per_epoch, first + end - self.global_step)
            mine = [b.tensor_split(self.world)[self.rank] for b in batches[first:n_run]]
            t0 = time.perf_counter()
            for images, labels in self.source.batches(mine, self.device):
                step = self.global_step
                loss = self.train_step(images, labels, step)
                self._sync()
                t1 = time.perf_counter()
                win_data += self._t_data - t0
                win_step += t1 - t0
                win_images += int(images.shape[0]) * self.world
                win_n += 1
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                if self.global_step % cfg.log_every == 0 or self.global_step == end:
                    rate = win_images / max(t1 - t_prev, 1e-9)
                    record = {"step": self.global_step, "epoch": epoch, "loss": loss, "lr": lr,
                              "images_per_s": rate, "data_time": win_data / win_n, "step_time": win_step / win_n}
                    self._log(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", lr=f"{lr:.2e}")
                    t_prev, win_images, win_data, win_step, win_n = t1, 0, 0.0, 0.0, 0
                t0 = time.perf_counter()
            epoch_done = self.global_step % self.steps_per_epoch == 0
            done_epochs = self.global_step // self.steps_per_epoch
            if epoch_done and cfg.eval_every and done_epochs % cfg.eval_every == 0:
                acc = self.evaluate()
                self._log({"step": self.global_step, "epoch": epoch, "eval_top1": acc})
            if self.is_main and epoch_done and cfg.ckpt_every and done_epochs % cfg.ckpt_every == 0:
                self.save(last_ckpt)
        if bar is not None:
            bar.close()
        if self.world > 1 and self.pending:
            self._average_pending_grads()
        if self.is_main:
            self.save(last_ckpt)
            if export:
                from .checkpoint import export_backbone

                export_backbone(last_ckpt, export, overwrite=True)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return record


def _versions() -> dict:
    import torch
    import torchvision

    from .. import __version__

    return {"ofdb_fast": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


# ----------------------------------------------------------------------------- CLI
def _open_source(args, device):
    """The data source the flags name: --data FOLDER, or --on-the-fly with generate's flags."""
    from .sources import ImageFolderSource, IfsSource

    max_bytes = int(args.max_resident_gb * (1 << 30))
    if args.data and args.on_the_fly:
        raise ValueError("--data and --on-the-fly are exclusive: pick one source")
    if args.data:
        return ImageFolderSource.open(args.data, device, max_resident_bytes=max_bytes, num_workers=args.workers)
    if not args.on_the_fly:
        raise ValueError("pass --data DIR (a folder from `ofdb-fast generate`) or --on-the-fly")
    from .dataset import GenerateOptions, validate_options

    opts = GenerateOptions(param_file=args.param_file, num_systems=args.num_systems, num_class=args.num_class,
                           per_class=args.per_class, size=args.size, remove_jitter=args.remove_jitter,
                           n_points=args.n_points, seed=args.gen_seed, min_n=args.min_n, max_n=args.max_n,
                           bval=args.bval)
    validate_options(opts)
    src = IfsSource.from_generate_options(opts, device)
    n_bytes = src.num_samples * opts.size * opts.size * 3
    return src.to_resident() if n_bytes <= max_bytes else src


def _prepare_out(out: str, overwrite: bool, resume: str | None) -> None:
    refuse_nonempty_dir(out, bool(overwrite or resume), "--out",
                        hint="pass --overwrite (or --resume CKPT to continue a run)")
    if overwrite and not resume and os.path.isfile(os.path.join(out, "metrics.jsonl")):
        os.remove(os.path.join(out, "metrics.jsonl"))
    os.makedirs(out, exist_ok=True)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "pretrain_command", None) == "export":
        from .checkpoint import export_backbone

        meta = export_backbone(args.checkpoint, args.output, arch=args.arch, overwrite=args.overwrite)
        print(f"wrote {args.output} ({meta['arch']} backbone)")
        return 0
    import torch

    world, rank, local = _dist_env()
    if args.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device(f"cuda:{local}")
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    if args.resume:
        from .checkpoint import load_checkpoint

        saved = load_checkpoint(args.resume).state.get("config", {})
        merged = {**saved, **{k: getattr(cfg, k) for k in _RUNTIME_FIELDS}}
        unknown = set(merged) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise ValueError(f"--resume {args.resume} has unknown config keys {sorted(unknown)}")
        ignored = sorted(k for k, v in asdict(cfg).items() if k in saved and saved[k] != v and k not in _RUNTIME_FIELDS)
        if ignored and rank == 0:
            print(f"ofdb-fast pretrain: --resume keeps the checkpoint's {', '.join(ignored)} "
                  f"(flags given differ)", file=sys.stderr)
        cfg = TrainConfig(**merged)
    cfg.validate()
    if rank == 0:
        _prepare_out(args.out, args.overwrite, args.resume)
    source = _open_source(args, device)
    trainer = Trainer(cfg, source, args.out, device, progress=not args.no_progress)
    if args.resume:
        trainer.load(args.resume)
    if rank == 0:
        atomic_write_json(os.path.join(args.out, "config.json"),
                          {"config": asdict(cfg), "source": source.describe(), "versions": _versions(),
                           "world_size": world, "device": str(device)})
    trainer.fit(max_steps=args.max_steps, export=args.export)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--data", help="ImageFolder written by `ofdb-fast generate` (class order: lexicographic)")
    data.add_argument("--on-the-fly", action="store_true",
                      help="render the dataset in memory with ifs_render (same mapping/seed as generate)")
    g = data.add_argument  # generate's flags (both spellings), so its command line carries over
    g("--param-file", "--param_file", dest="param_file", default="", help="systems file (.pkl/.npz), as generate")
    g("--num-systems", "--num_systems", dest="num_systems", type=int, default=50_000)
    g("--num-class", "--num_class", dest="num_class", type=int, default=1000)
    g("--per-class", "--per_class", dest="per_class", type=int, default=1)
    g("--size", type=int, default=512, help="rendered image side")
    g("--remove-jitter", "--remove_jitter", dest="remove_jitter", action="store_true")
    g("--n-points", "--n_points", dest="n_points", type=int, default=100_000)
    g("--gen-seed", dest="gen_seed", type=int, default=0, help="generate's --seed (systems and images)")
    g("--min-n", "--min_n", dest="min_n", type=int, default=2)
    g("--max-n", "--max_n", dest="max_n", type=int, default=4)
    g("--bval", type=float, default=1.0)
    data.add_argument("--max-resident-gb", type=float, default=4.0,
                      help="keep the decoded/rendered set on the device up to this size, else stream it")
    data.add_argument("--workers", type=int, default=4, help="decode threads / DataLoader workers")
    m = p.add_argument_group("model and optimisation")
    m.add_argument("--arch", choices=ARCHS, default=d.arch)
    m.add_argument("--epochs", type=int, default=d.epochs)
    m.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (split over ranks)")
    m.add_argument("--lr", type=float, default=d.lr)
    m.add_argument("--momentum", type=float, default=d.momentum)
    m.add_argument("--weight-decay", type=float, default=d.weight_decay)
    m.add_argument("--lr-min", type=float, default=d.lr_min)
    m.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    m.add_argument("--warmup-lr-init", type=float, default=d.warmup_lr_init)
    m.add_argument("--accum-steps", type=int, default=d.accum_steps)
    m.add_argument("--seed", type=int, default=d.seed)
    a = p.add_argument_group("augmentation")
    a.add_argument("--crop-size", type=int, default=d.crop_size)
    a.add_argument("--mix-prob", type=float, default=d.mix_prob, help="probability to CutMix/MixUp a batch")
    a.add_argument("--cutmix-prob", type=float, default=d.cutmix_prob, help="CutMix share of mixed batches")
    a.add_argument("--mix-alpha", type=float, default=d.mix_alpha, help="lambda ~ Beta(alpha, alpha)")
    a.add_argument("--hflip", type=float, default=d.hflip)
    a.add_argument("--erase-p", type=float, default=d.erase_p)
    a.add_argument("--no-auto-augment", dest="auto_augment", action="store_false")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--amp", choices=("auto", "bf16", "off"), default=d.amp)
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--out", default="runs/pretrain", help="run directory")
    r.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    r.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint of this run")
    r.add_argument("--max-steps", type=int, default=None, help="stop after this many batches in total")
    r.add_argument("--eval-every", type=int, default=d.eval_every, help="epochs between evals (0: never)")
    r.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="epochs between checkpoints")
    r.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics lines")
    r.add_argument("--export", metavar="OUT.safetensors", help="export the backbone at the end")
    r.add_argument("--no-progress", action="store_true")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="OFDB fractal pretraining (OFDB-4AD recipe) with GPU-side data; `pretrain export` writes a backbone",
        description=__doc__.split("\n\n")[0],
    )
    _add_train_flags(p)
    sub = p.add_subparsers(dest="pretrain_command", metavar="{export}")
    e = sub.add_parser("export", help="write the torchvision backbone (no fc) of a checkpoint as safetensors")
    e.add_argument("checkpoint", help="checkpoint written by ofdb-fast pretrain")
    e.add_argument("output", help="OUT.safetensors")
    e.add_argument("--arch", choices=ARCHS, default=None, help="expected architecture (default: the checkpoint's)")
    e.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
