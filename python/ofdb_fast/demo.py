"""``ofdb-fast demo``: the whole story on a CPU in a few minutes, no downloads, no data of your own.

Steps (each with the project's real machinery; all outputs under ``--out``, default ``runs/demo``):

1. ``fractals/``: a small OFDB fractal set written by ``generate`` (one image per class).
2. ``pretrain/``: a ResNet-18 pretrained on it with the OFDB-4AD recipe (SGD, momentum 0.9,
   weight decay 1e-4, cosine schedule with warm-up, cross-entropy over the fractal classes)
   scaled to a CPU budget: 64 px crops of 96 px renders, 256 classes, a fixed number of epochs,
   batch 32 with the LR scaled down, warm-up started at a usable LR (the reference's 1e-6 would
   waste the first epochs of a budget this small). The augmentation keeps RandomResizedCrop and
   the flip and drops AutoAugment, RandomErasing and CutMix/MixUp: measured on the CI machine,
   with them the loss hardly moves in a few hundred steps (64 classes, 300 steps: 4.25 -> 3.73,
   train top-1 0.11) and the features score lower in PatchCore than without them (mean image
   AUROC 0.64 vs 0.73). ``metrics.jsonl`` holds the losses; the backbone is exported to
   ``pretrain/backbone.safetensors``.
3. ``synth/``: the synthetic MVTec-format dataset (``ofdb_fast.synth.make_dataset``).
4. ``eval_fractal/`` and ``eval_random/``: ``patchcore evaluate`` with the fractal-pretrained
   backbone and with the same architecture randomly initialised (torchvision's default init);
   every other setting is the same, including ``--bn-adapt``: before each category is fitted,
   both backbones' BatchNorm running statistics are re-estimated on that category's train/good
   images (AdaBN; ``ofdb_fast.patchcore.backbones.adapt_batchnorm``). Without it the two
   backbones are compared through statistics that fit neither: the fractal backbone's come from
   fractal renders, random init's are the identity (mean 0, variance 1).
5. ``timings.json`` (render images/s, pretraining seconds/steps/images/s, per-evaluation fit
   seconds and ms per image) and ``report.html`` (:func:`ofdb_fast.report.write_report`).
6. Prints the metrics table of both backbones and the report path.

Measured outcome (2-core CI-class machine, the other core busy, everything single-threaded:
``OMP_NUM_THREADS=1``; full preset). Wall time: ``ofdb-fast demo --seed 4`` took 346 s (render
0.1 s, pretraining 156 s at 74 images/s, evaluations 94 s and 92 s; over seeds 0-4 pretraining
took 140-162 s and an evaluation 89-118 s). ``make demo`` from a fresh clone on the idle 2-core
CI machine (2 threads, seed 0, at commit d5f63f0): 176 s after the build (pretraining 92 s),
mean image AUROC 0.9141 vs 0.8802, pixel AUROC 0.9870 vs 0.9823, AUPRO 0.9606 vs 0.9536, fractal
higher on all three (pretraining results depend on the thread count, hence not the seed-0 row
below).
Mean over the 4 categories, fractal vs random init, PatchCore layer1+2 at 224 px (seeds 0-2
chose the setting, 3-4 are held out):

====  ==============  =================  =================  =================  ======================
seed  BN adapted      image AUROC        pixel AUROC        AUPRO              loss (first -> last),
                                                                               train top-1
====  ==============  =================  =================  =================  ======================
0     yes (default)   0.8932 vs 0.8802   0.9870 vs 0.9823   0.9605 vs 0.9536   5.70 -> 1.66, 0.93
1     yes (default)   0.8411 vs 0.8411   0.9875 vs 0.9840   0.9495 vs 0.9480   5.70 -> 1.19, 0.98
2     yes (default)   0.9245 vs 0.8958   0.9861 vs 0.9809   0.9535 vs 0.9416   5.70 -> 1.24, 0.98
3     yes (default)   0.8880 vs 0.8906   0.9830 vs 0.9855   0.9480 vs 0.9598   5.79 -> 1.06, 0.96
4     yes (default)   0.9297 vs 0.9115   0.9878 vs 0.9840   0.9592 vs 0.9554   5.71 -> 0.96, 0.98
mean  yes (default)   0.8953 vs 0.8839   0.9863 vs 0.9833   0.9541 vs 0.9517
0     no              0.8359 vs 0.9167   0.9858 vs 0.9861   0.9476 vs 0.9490
1     no              0.7812 vs 0.8438   0.9866 vs 0.9847   0.9361 vs 0.9432
2     no              0.8672 vs 0.8776   0.9828 vs 0.9801   0.9275 vs 0.9373
3     no              0.8490 vs 0.8672   0.9836 vs 0.9848   0.9443 vs 0.9496
4     no              0.7760 vs 0.8646   0.9826 vs 0.9843   0.9293 vs 0.9469
mean  no              0.8219 vs 0.8740   0.9843 vs 0.9840   0.9369 vs 0.9452
====  ==============  =================  =================  =================  ======================

So with the BatchNorm statistics adapted, the fractal backbone has the higher mean image AUROC
on 3 of 5 seeds, ties on one and is lower on one (seed 3, by 0.003); pixel AUROC and AUPRO are
higher on 4 of 5 (lower on seed 3). The adaptation helps both backbones on average (image
AUROC fractal 0.822 -> 0.895, random 0.874 -> 0.884), the fractal one far more: mostly on the
textures (weave, grain), where its fractal-domain statistics were the furthest off. Without it,
random init is higher on every seed. This is NOT a robust per-seed win: each category has only
6 good and 4 defect test images (24 pairs), so one mis-ordered pair moves a category's AUROC by
0.04 and the mean by 0.01, the size of most gaps above. Also measured, not shipped: imagesize
128 (the synthetic images' own size; seeds 0-2) scores lower than 224 for both backbones
(adapted: 0.858 vs 0.846; not adapted: 0.755 vs 0.810); PatchCore's reference layers layer2+3
with adaptation favour fractal more (seeds 0-4: 0.846 vs 0.803, fractal higher on 4 of 5, lower
on seed 3) but score lower for both than layer1+2 (pixel AUROC 0.961 and 0.947 against 0.986
and 0.983). Doubling the pretraining (90 epochs) did not change the unadapted result (seed 0,
2 threads: 0.8307 vs 0.9167). The demo prints which side is higher instead of assuming it.

Determinism: every step is keyed by ``--seed`` (fractal systems and renders, pretraining
init/order/augmentation, synthetic data, coreset and random init), and the amount of
pretraining is a number of epochs, not a time budget, so a run does not depend on the
machine's speed (only on float arithmetic: other CPUs may differ in the last bits).

Directory safety: ``--out`` must be absent or empty, or hold a previous demo run (recognised
by ``demo.json``), which is replaced only with ``--overwrite``; a directory holding anything
the demo does not write is refused either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ._io import atomic_write_json

MARKER = "demo.json"
# Everything a demo run writes directly under --out (what --overwrite may remove).
OWN_ENTRIES = ("fractals", "pretrain", "synth", "eval_fractal", "eval_random", "timings.json", "report.html", MARKER)
RUNS = ("fractal", "random")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of every step (``full``: the ``make demo`` preset; ``quick``: the test's).

    The full preset was chosen by measurement on the 2-core CI machine (see the module
    docstring): about 1 to 1.5 minutes of pretraining, about a minute per PatchCore evaluation.
    """

    # 1. fractals (generate): OFDB layout, one image per class, one system per class
    num_class: int = 256
    render_size: int = 96
    n_points: int = 20_000
    background: bool = False
    # 2. pretraining (TrainConfig fields scaled to a CPU)
    arch: str = "resnet18"
    crop_size: int = 64
    epochs: int = 45
    batch_size: int = 32
    lr: float = 0.05
    warmup_epochs: int = 3
    warmup_lr_init: float = 0.005
    mix_prob: float = 0.0
    auto_augment: bool = False
    erase_p: float = 0.0
    # 3. synthetic dataset (make_dataset's defaults)
    synth_size: int = 128
    categories: tuple[str, ...] = ("weave", "grain", "washer", "plate")
    n_train: int = 20
    n_test_good: int = 6
    n_test_defect: int = 4
    # 4. PatchCore (identical for both backbones); resize = imagesize: the whole image, upsampled
    layers: tuple[str, ...] = ("layer1", "layer2")
    imagesize: int = 224
    coreset_percentage: float = 0.1
    bn_adapt: bool = True  # BatchNorm statistics re-estimated on each category's train/good images


PRESETS = {
    "full": DemoConfig(),
    "quick": DemoConfig(num_class=16, render_size=48, n_points=5_000, crop_size=32, epochs=4, batch_size=8,
                        warmup_epochs=1, synth_size=64, categories=("weave", "washer"), n_train=4,
                        n_test_good=2, n_test_defect=1, imagesize=64),
}


# ----------------------------------------------------------------------------- output dir
def prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out`` or clear a previous demo run in it (see the module docstring)."""
    if out.exists() and not out.is_dir():
        raise OSError(f"--out {out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        if not (out / MARKER).is_file():
            raise OSError(f"--out {out} is not empty and holds no previous demo run ({MARKER} missing); "
                          f"pick another directory")
        foreign = [e for e in entries if e not in OWN_ENTRIES]
        if foreign:
            raise OSError(f"--out {out} holds files the demo does not write ({', '.join(foreign[:5])}); "
                          f"refusing to delete anything: move them away or pick another directory")
        if not overwrite:
            raise OSError(f"--out {out} holds a previous demo run; pass --overwrite to replace it")
        for name in entries:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, doc: Any) -> None:
    atomic_write_json(path, doc, indent=2)


def _say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- steps
def step_fractals(cfg: DemoConfig, out: Path, seed: int, progress: bool) -> dict:
    from .fractal.dataset import GenerateOptions, generate

    opts = GenerateOptions(dataset_dir=str(out / "fractals"), num_systems=cfg.num_class, num_class=cfg.num_class,
                           per_class=1, size=cfg.render_size, n_points=cfg.n_points, background=cfg.background,
                           seed=seed, progress=progress)
    res = generate(opts)
    _say(f"[1/5] fractals: {res.n_written} images ({cfg.num_class} classes x 1, {cfg.render_size} px, "
         f"{cfg.n_points} points) in {res.seconds:.2f} s = {res.images_per_second:.1f} images/s -> {opts.dataset_dir}")
    return {"images": res.n_written, "seconds": round(res.seconds, 3),
            "images_per_s": round(res.images_per_second, 2), "size": cfg.render_size, "n_points": cfg.n_points}


def train_config(cfg: DemoConfig, seed: int):
    from .fractal.pretrain import TrainConfig

    # Reference recipe (OFDB-4AD, b.1) with the sizes scaled: lr 0.1 at batch 128 -> linear in the
    # batch, warm-up from a usable LR (the reference's 1e-6 would waste the first epochs of a
    # budget this small), eval/checkpoints only at the end.
    return TrainConfig(arch=cfg.arch, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       warmup_epochs=cfg.warmup_epochs, warmup_lr_init=cfg.warmup_lr_init, crop_size=cfg.crop_size,
                       mix_prob=cfg.mix_prob, auto_augment=cfg.auto_augment, erase_p=cfg.erase_p, seed=seed,
                       eval_every=cfg.epochs, ckpt_every=cfg.epochs, log_every=1)


def step_pretrain(cfg: DemoConfig, out: Path, seed: int, progress: bool) -> tuple[dict, Path]:
    import torch

    from .fractal.pretrain import Trainer
    from .fractal.sources import ImageFolderSource

    tcfg = train_config(cfg, seed)
    run_dir = out / "pretrain"
    run_dir.mkdir()
    source = ImageFolderSource.open(out / "fractals", "cpu", num_workers=2)
    trainer = Trainer(tcfg, source, str(run_dir), torch.device("cpu"), progress=progress)
    steps = trainer.total_steps
    _say(f"[2/5] pretraining {cfg.arch} on {source.num_samples} fractals: {cfg.epochs} epochs x "
         f"{trainer.steps_per_epoch} steps = {steps} steps, batch {cfg.batch_size}, crop {cfg.crop_size} px, "
         f"lr {cfg.lr} (cosine, warm-up {cfg.warmup_epochs} epochs from {cfg.warmup_lr_init}), "
         f"augmentation: RandomResizedCrop + flip{' + AutoAugment' if cfg.auto_augment else ''}"
         f"{f' + RandomErasing {cfg.erase_p}' if cfg.erase_p else ''}"
         f"{f' + CutMix/MixUp {cfg.mix_prob}' if cfg.mix_prob else ''}, {torch.get_num_threads()} threads")
    export = run_dir / "backbone.safetensors"
    t0 = time.perf_counter()
    record = trainer.fit(export=str(export))
    seconds = time.perf_counter() - t0
    with open(run_dir / "config.json", "w") as f:
        json.dump({"config": dataclasses.asdict(tcfg), "source": source.describe()}, f, indent=2)
    losses = [r["loss"] for r in _read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    acc = [r["eval_top1"] for r in _read_jsonl(run_dir / "metrics.jsonl") if "eval_top1" in r]
    n_images = cfg.epochs * source.num_samples  # every epoch sees every image once (last batch partial)
    first = sum(losses[:5]) / max(1, len(losses[:5]))
    last = sum(losses[-5:]) / max(1, len(losses[-5:]))
    _say(f"      {steps} steps in {seconds:.1f} s ({n_images / seconds:.1f} images/s); loss {first:.3f} (first 5 "
         f"steps) -> {last:.3f} (last 5){f'; train top-1 {acc[-1]:.3f}' if acc else ''} -> {export}")
    info = {"seconds": round(seconds, 2), "steps": steps, "epochs": cfg.epochs, "images": n_images,
            "images_per_s": round(n_images / seconds, 2), "batch_size": cfg.batch_size, "crop_size": cfg.crop_size,
            "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs, "auto_augment": cfg.auto_augment,
            "mix_prob": cfg.mix_prob, "erase_p": cfg.erase_p, "loss_first5": round(first, 4),
            "loss_last5": round(last, 4),
            "train_top1": acc[-1] if acc else None, "final_step_loss": record.get("loss")}
    return info, export


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_synth(cfg: DemoConfig, out: Path, seed: int) -> dict:
    from .synth import make_dataset

    t0 = time.perf_counter()
    info = make_dataset(out / "synth", categories=cfg.categories, size=cfg.synth_size, n_train=cfg.n_train,
                        n_test_good=cfg.n_test_good, n_test_defect=cfg.n_test_defect, seed=seed)
    seconds = time.perf_counter() - t0
    _say(f"[3/5] synthetic dataset: {len(cfg.categories)} categories ({', '.join(cfg.categories)}), "
         f"{info['n_images']} images of {cfg.synth_size} px in {seconds:.1f} s -> {out / 'synth'}")
    return {"seconds": round(seconds, 2), "images": info["n_images"], "size": cfg.synth_size}


def evaluate_args(cfg: DemoConfig, data: Path, out: Path, weights: str, seed: int, quiet: bool) -> argparse.Namespace:
    """The ``patchcore evaluate`` command line of one backbone (only ``weights`` differs)."""
    from .patchcore import cli as pc_cli

    parser = argparse.ArgumentParser(prog="ofdb-fast")
    pc_cli.register(parser.add_subparsers(dest="command"))
    argv = ["patchcore", "evaluate", "--data", str(data), "--out", str(out), "--backbone", cfg.arch,
            "--layers", ",".join(cfg.layers), "--weights", weights, "--resize", str(cfg.imagesize),
            "--imagesize", str(cfg.imagesize), "--coreset-percentage", str(cfg.coreset_percentage),
            "--seed", str(seed), "--device", "cpu", "--n-overlays", "2"]
    argv += ["--bn-adapt"] if cfg.bn_adapt else []
    return parser.parse_args(argv + (["--quiet"] if quiet else []))


def step_evaluate(cfg: DemoConfig, out: Path, backbone: Path, seed: int, quiet: bool) -> dict:
    import warnings

    from .patchcore.cli import run_evaluate

    info = {}
    for i, (run, weights) in enumerate(zip(RUNS, (str(backbone), "random"))):
        _say(f"[4/5] PatchCore ({i + 1}/2), {run} backbone: {cfg.arch} {'+'.join(cfg.layers)}, "
             f"{cfg.imagesize} px, coreset {cfg.coreset_percentage:g}"
             f"{', BatchNorm statistics adapted to train/good' if cfg.bn_adapt else ''}")
        args = evaluate_args(cfg, out / "synth", out / f"eval_{run}", weights, seed, quiet)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-weights warning: random init is the point here
            run_evaluate(args)
        seconds = time.perf_counter() - t0
        res = json.loads((out / f"eval_{run}" / "results.json").read_text())
        info[run] = {"seconds": round(seconds, 2), "fit_seconds_mean": res["mean"]["fit_seconds"],
                     "ms_per_image_mean": res["mean"]["ms_per_image"]}
    return info


# ----------------------------------------------------------------------------- table
METRIC_COLUMNS = (("instance_auroc", "image AUROC"), ("full_pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))


def metrics_table(out: Path) -> str:
    """Both backbones side by side, per category and mean (from the evaluate results)."""
    docs = {run: json.loads((out / f"eval_{run}" / "results.json").read_text()) for run in RUNS}
    cats = list(docs[RUNS[0]]["categories"])
    header = ["category"] + [f"{label} ({run})" for key, label in METRIC_COLUMNS for run in RUNS]
    rows = []
    for cat in cats + ["mean"]:
        row = [cat]
        for key, _ in METRIC_COLUMNS:
            for run in RUNS:
                src = docs[run]["mean"] if cat == "mean" else docs[run]["categories"][cat]
                v = src.get(key)
                row.append("-" if v is None else f"{v:.4f}")
        rows.append(row)
    widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


def verdict(out: Path) -> str:
    """One line per metric: which backbone has the higher mean (ties named as such)."""
    means = {run: json.loads((out / f"eval_{run}" / "results.json").read_text())["mean"] for run in RUNS}
    parts = []
    for key, label in METRIC_COLUMNS:
        f, r = means["fractal"][key], means["random"][key]
        if f is None or r is None:
            continue
        who = "fractal higher" if f > r else ("random higher" if r > f else "tie")
        parts.append(f"{label} {f:.4f} vs {r:.4f} ({who})")
    return "mean, fractal vs random: " + "; ".join(parts)


# ----------------------------------------------------------------------------- run
def run_demo(out: str | os.PathLike, *, cfg: DemoConfig = PRESETS["full"], seed: int = 0, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Run the demo into ``out``; returns the ``timings.json`` document."""
    out = Path(out)
    prepare_out(out, overwrite)
    _write_json(out / MARKER, {"tool": "ofdb-fast demo", "seed": seed, "config": dataclasses.asdict(cfg),
                               "complete": False})
    t_start = time.perf_counter()
    render = step_fractals(cfg, out, seed, progress)
    pretrain, backbone = step_pretrain(cfg, out, seed, progress)
    synth = step_synth(cfg, out, seed)
    evals = step_evaluate(cfg, out, backbone, seed, quiet=not progress)
    timings = {"render": render, "pretrain": pretrain, "synth": synth, "evaluate": evals,
               "total_seconds": round(time.perf_counter() - t_start, 1), "seed": seed,
               "torch_threads": _torch_threads(), "cpu_count": os.cpu_count()}
    _write_json(out / "timings.json", timings)
    from .report import write_report

    report = write_report(out, overwrite=True, title="ofdb-fast demo: fractal-pretrained vs random ResNet-18")
    _write_json(out / MARKER, {"tool": "ofdb-fast demo", "seed": seed, "config": dataclasses.asdict(cfg),
                               "complete": True})
    _say(f"[5/5] timings -> {out / 'timings.json'}")
    _say("")
    _say(f"PatchCore on the synthetic dataset, {cfg.arch} backbone: fractal-pretrained vs random init")
    _say(metrics_table(out))
    _say(verdict(out))
    _say(f"total {timings['total_seconds']:.0f} s (pretraining {pretrain['seconds']:.0f} s)")
    _say(f"report: {report}")
    return timings


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="fractals -> pretraining -> PatchCore on synthetic data -> report, on a CPU in minutes",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo run in --out")
    p.add_argument("--quick", action="store_true", help="a tiny version (under a minute; for tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    cfg = PRESETS["quick" if args.quick else "full"]
    run_demo(args.out, cfg=cfg, seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(out="runs/demo", overwrite=True, quick=False, seed=0, no_progress=False)))
