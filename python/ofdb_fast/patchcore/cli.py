"""``ofdb-fast patchcore fit | predict | evaluate``.

- ``fit --data ROOT [--category C ...] --out DIR``: one model per category in ``DIR/<category>``.
- ``predict --model DIR IMAGES... --out DIR``: ``scores.csv`` (path, score) and per image the
  map as ``maps/<i>_<stem>.npy`` and an overlay ``maps/<i>_<stem>.png``.
- ``serve-bench --model DIR [--batch-sizes 1 8 32] [--iters N] [--dtype D] [--baseline]``:
  p50/p99 latency and throughput of ``FastScorer`` per batch size on random images already on
  the device (``--baseline``: also the unfused float32 PyTorch path); ``--json FILE`` saves them.
- ``evaluate --data ROOT [--category C ...] [--model DIR] --out DIR``: fits on the fly unless
  ``--model`` (a model dir, or a dir of ``<category>/`` model dirs) is given; prints the
  per-category table and mean; writes ``results.json``, ``results.csv`` (per category + mean),
  ``scores.csv`` (per image: category, path, label, defect_type, score) and overlays
  ``overlays/<category>/{high,low}_<rank>_<type>_<stem>.png`` of the highest- and lowest-scored
  test images, plus the hardest cases ``overlays/<category>/hard/{hard_defect,hard_good}_...png``
  (lowest-scored defects, highest-scored good images; each overlay is described in
  ``results.json`` under ``overlay_cases``), and ``curves.json`` (per category: image ROC, pixel
  ROC, PRO curve up to the AUPRO FPR limit; thinned points for plots). Timings: fit seconds,
  scoring ms per image (model compute and image decoding). ``--report`` then writes
  ``report.html`` (see :mod:`ofdb_fast.report`).

Outputs are never overwritten without ``--overwrite``; files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._io import atomic_open, atomic_write_json, atomic_write_text, csv_text, prepare_output_dir, refuse_nonempty_dir

METRICS = ("instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro")
CATEGORIES_DIR = "categories"  # evaluate: one finished-category record each (what --resume reuses)
F1_COLUMNS = ("image_f1_max", "pixel_f1_max")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--backbone", default="wide_resnet50_2",
      help="wide_resnet50_2 | resnet18 | resnet50 | resnet101 | timm:<vit model> | open_clip:<arch> | "
           "dino_vitb8 | dino_vitb16 | dino_vits8 | dino_vits16 | vit_base | clip_rn50 | clip_rn101")
    a("--layers", default=None,
      help="comma-separated backbone layers (default layer2,layer3; ViTs: blocks.-2,blocks.-1)")
    a("--weights", "--backbone-weights", dest="weights", default="IMAGENET1K_V1",
      help="torchvision weights name (IMAGENET1K_V1; needs the file in the torch hub cache or network), "
           "a checkpoint (.safetensors/.pt/.pth), or 'random' (tests only)")
    a("--resize", type=int, default=256, help="shorter side before the centre crop (default 256)")
    a("--imagesize", type=int, default=224, help="centre crop size (default 224)")
    a("--pretrain-embed-dimension", type=int, default=1024)
    a("--target-embed-dimension", type=int, default=1024)
    a("--patch-size", type=int, default=3)
    a("--num-nn", type=int, default=1, dest="anomaly_scorer_num_nn", help="k of the kNN patch score (default 1)")
    a("--coreset-percentage", type=float, default=0.1, help="memory bank fraction (default 0.1)")
    a("--coreset-method", default="approx", help="approx | exact | all (default approx)")
    a("--reweight", action="store_true", help="the paper's image-score re-weighting (b=3); off by default")
    a("--sigma", type=float, default=None,
      help="Gaussian smoothing of the maps in pixels (default 4; 0 with --scorer fewshot)")
    a("--seed", type=int, default=0, help="seed of the coreset, random weights and the --shots choice")
    a("--shots", type=int, default=0,
      help="few-shot: fit on K training images chosen with --seed, no coreset when small (default 0: all)")
    a("--scorer", default="knn", choices=["knn", "fewshot"],
      help="knn: PatchCore's L2 kNN (default); fewshot: per-layer max cosine to the reference patches "
           "(AnomalyGPT), 1 - mean over layers")
    a("--bn-adapt", action="store_true",
      help="re-estimate the backbone's BatchNorm statistics on the fit images (AdaBN) before embedding "
           "them; saved with the model and used unchanged at predict time (default off)")
    a("--coreset-backend", default="auto")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--device", default="auto", help="cpu | cuda | auto (default auto)")
    a("--batch-size", type=int, default=8)
    a("--workers", type=int, default=2, help="image decoding threads (default 2)")
    a("--knn-backend", default="auto")
    a("--aggregate-backend", default="auto")
    a("--overwrite", action="store_true", help="replace existing outputs")
    a("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    p = subparsers.add_parser("patchcore", help="PatchCore anomaly detection: fit, predict, evaluate",
                              description="PatchCore (Roth et al. 2022) with the reference's MVTec defaults.")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="patchcore_command", metavar="{fit,predict,evaluate,serve-bench}")

    fit = sub.add_parser("fit", help="fit one model per category on train/good")
    fit.add_argument("--data", required=True, help="MVTec-layout root or one category directory")
    fit.add_argument("--category", nargs="*", default=None, help="categories to fit (default all)")
    fit.add_argument("--out", required=True, help="models are written to OUT/<category>/")
    fit.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: keep the categories OUT already holds a model of "
                          "(same settings), fit the others")
    _add_model_args(fit)
    _add_runtime_args(fit)
    fit.set_defaults(func=run_fit)

    pred = sub.add_parser("predict", help="score images with a saved model")
    pred.add_argument("--model", required=True, help="a model directory written by fit")
    pred.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    pred.add_argument("--out", required=True, help="output directory")
    pred.add_argument("--no-png", action="store_true", help="write the maps as .npy only")
    pred.add_argument("--threshold", type=float, default=None,
                      help="flag an image as anomalous where its score >= THRESHOLD (column 'anomalous'); "
                           "evaluate reports each category's F1-optimal image_threshold")
    pred.add_argument("--pixel-threshold", type=float, default=None,
                      help="also write a binary defect mask per image (255 where map >= PIXEL_THRESHOLD, "
                           "as MVTec's ground truth; maps/<name>_mask.png); evaluate reports pixel_threshold")
    _add_runtime_args(pred)
    pred.set_defaults(func=run_predict)

    ev = sub.add_parser("evaluate", help="fit (or load) and evaluate on the test split")
    ev.add_argument("--data", required=True, help="MVTec-layout root or one category directory")
    ev.add_argument("--category", nargs="*", default=None, help="categories to evaluate (default all)")
    ev.add_argument("--model", default=None,
                    help="saved model dir, or a dir of <category>/ models (default: fit on the fly)")
    ev.add_argument("--out", required=True, help="output directory for results and overlays")
    ev.add_argument("--no-masks", action="store_true", help="no ground truth masks: image metrics only")
    ev.add_argument("--n-overlays", type=int, default=3, help="overlays of the N highest and N lowest scores")
    ev.add_argument("--save-models", action="store_true", help="also save fitted models to OUT/models/<category>")
    ev.add_argument("--report", action="store_true", help="also write the HTML report OUT/report.html")
    ev.add_argument("--resume", action="store_true",
                    help="continue an interrupted run: reuse the categories finished in OUT/categories/ "
                         "(same settings), evaluate the others")
    _add_model_args(ev)
    _add_runtime_args(ev)
    ev.set_defaults(func=run_evaluate)

    sb = sub.add_parser("serve-bench", help="latency (p50/p99) and throughput of the fast scoring path")
    sb.add_argument("--model", required=True, help="a model directory written by fit")
    sb.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="default 1 8 32")
    sb.add_argument("--iters", type=int, default=100, help="timed calls per batch size (default 100)")
    sb.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    sb.add_argument("--dtype", default="auto", help="auto | float16 | bfloat16 | float32 (auto: fp16 on CUDA)")
    sb.add_argument("--device", default="auto", help="cpu | cuda | auto (default auto)")
    sb.add_argument("--no-graph", action="store_true", help="no CUDA graphs (eager launches)")
    sb.add_argument("--baseline", action="store_true", help="also time the unfused float32 PyTorch path")
    sb.add_argument("--json", default=None, help="write the results to this JSON file")
    sb.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    sb.set_defaults(func=run_serve_bench)


# ------------------------------------------------------------------------- helpers
def _prepare_out(out: str | os.PathLike, overwrite: bool, resume: bool = False) -> Path:
    if resume and overwrite:
        raise ValueError("--resume and --overwrite cannot be used together")
    return prepare_output_dir(out, overwrite or resume, "--out",
                              hint="pass --resume to continue an interrupted run or --overwrite to replace its results")


def _finished_category(out: Path, name: str, config: dict, options: dict) -> dict | None:
    """--resume: the record ``evaluate`` kept for category ``name``, or None; a record made with
    other settings is an error (its numbers would not belong to this run)."""
    path = out / CATEGORIES_DIR / f"{name}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"--resume: {path} is not valid JSON ({exc}); remove it to redo the category") from None
    keys = ("config", "options", "result", "scores", "curves")
    if not isinstance(record, dict) or any(k not in record for k in keys) \
            or not isinstance(record["config"], dict) or not isinstance(record["options"], dict):
        raise ValueError(f"--resume: {path} is not a finished-category record (needs {', '.join(keys)}); "
                         f"remove it to redo the category")
    diff = _config_diff(record["config"], config) + _config_diff(record["options"], options)
    if diff:
        raise ValueError(f"--resume: {path} was made with other settings ({', '.join(diff)}); pass the same "
                         f"flags, or --overwrite to start again")
    return record


def _config_diff(saved: dict, wanted: dict) -> list[str]:
    """Keys whose values differ (compared as JSON, as both are stored)."""
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(wanted))
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))


def _fitted_model_config(target: Path) -> dict | None:
    """The config of the complete model saved in ``target``, or None when there is none. A save
    writes its tensors, then ``config.json``: tensors (or temp files) without it are an interrupted
    save, which the refit's save replaces; anything else in the directory is refused."""
    from .._io import is_temp_name
    from .model import CONFIG_FILE, TENSORS_FILE

    if (target / CONFIG_FILE).is_file():
        meta = json.loads((target / CONFIG_FILE).read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError(f"--resume: {target / CONFIG_FILE} is not a PatchCore model config")
        return meta["config"]
    if target.is_dir():
        for entry in target.iterdir():
            if entry.name != TENSORS_FILE and not is_temp_name(entry.name):
                raise ValueError(f"--resume: {target} holds {entry.name}, which a PatchCore save does not write; "
                                 f"move it away or pass --overwrite")
    return None


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, makedirs=True)


def _categories(root: str, wanted: list[str] | None) -> list[str]:
    from .data import list_categories

    dirs = list_categories(root)
    if not wanted:
        return dirs
    by_name = {Path(d).name: d for d in dirs}
    unknown = [c for c in wanted if c not in by_name]
    if unknown:
        raise ValueError(f"--category {unknown} not found under {root}; available: {sorted(by_name)}")
    return [by_name[c] for c in wanted]


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    sigma = args.sigma if args.sigma is not None else (0.0 if args.scorer == "fewshot" else 4.0)
    return dict(
        backbone=args.backbone, layers=args.layers.replace(",", " ").split() if args.layers else None,
        weights=args.weights, shots=args.shots, scorer=args.scorer,
        pretrain_embed_dimension=args.pretrain_embed_dimension, target_embed_dimension=args.target_embed_dimension,
        patch_size=args.patch_size, anomaly_scorer_num_nn=args.anomaly_scorer_num_nn,
        coreset_percentage=args.coreset_percentage, coreset_method=args.coreset_method, seed=args.seed,
        reweight=args.reweight, bn_adapt=args.bn_adapt, sigma=sigma, resize=args.resize, imagesize=args.imagesize,
        coreset_backend=args.coreset_backend, **_runtime_kwargs(args))


def _runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(device=args.device, batch_size=args.batch_size, knn_backend=args.knn_backend,
                aggregate_backend=args.aggregate_backend, progress=not args.quiet, num_workers=args.workers)


def _preprocess(model):
    from .data import Preprocess

    c = model.config
    return Preprocess(resize=c["resize"], imagesize=c["imagesize"], mean=tuple(c["mean"]), std=tuple(c["std"]))


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- fit
def run_fit(args: argparse.Namespace) -> int:
    from .data import MVTecDataset
    from .model import PatchCore

    cats = _categories(args.data, args.category)
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite cannot be used together")
    done: set[str] = set()
    if args.resume:  # settings checked against every saved model before any work
        wanted = PatchCore(**_model_kwargs(args)).config
        for cat_dir in cats:
            name = Path(cat_dir).name
            saved = _fitted_model_config(out / name)
            if saved is None:
                continue
            diff = _config_diff(saved, wanted)
            if diff:
                raise ValueError(f"--resume: {out / name} was fitted with other settings ({', '.join(diff)}); "
                                 f"pass the same flags, or --overwrite to refit")
            done.add(name)
    else:
        for cat_dir in cats:  # refuse before any work
            refuse_nonempty_dir(out / Path(cat_dir).name, args.overwrite, "model directory")
    for cat_dir in cats:
        name = Path(cat_dir).name
        if name in done:
            print(f"{name}: already fitted -> {out / name} (--resume)")
            continue
        model = PatchCore(**_model_kwargs(args))
        train = MVTecDataset(cat_dir, "train", _preprocess(model), require_masks=False)
        _log(args, f"[{name}] fitting on {len(train)} images ({model.device})")
        model.fit(train)
        model.fit_info["category"] = name
        # --resume: what the directory may hold is an interrupted save of this run (checked above).
        model.save(out / name, overwrite=args.overwrite or args.resume)
        info = model.fit_info
        print(f"{name}: memory bank {info['n_bank']} x {model.config['target_embed_dimension']} from "
              f"{info['n_patches']} patches in {info['fit_seconds']:.2f} s -> {out / name}")
        if info.get("shots"):
            print(f"{name}: {len(info['shots'])} shots (seed {model.config['seed']}): " + ", ".join(info["shots"]))
    return 0


# ------------------------------------------------------------------------ predict
def _image_paths(items: list[str]) -> list[Path]:
    from .data import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                           and not q.name.startswith("."))
            if not found:
                raise ValueError(f"image directory {p} contains no images ({'/'.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise OSError(f"image {p} does not exist")
    return paths


def _load_model(directory: str | os.PathLike, args: argparse.Namespace):
    from .model import CONFIG_FILE, PatchCore

    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        subs = sorted(s.name for s in d.glob(f"*/{CONFIG_FILE}")) if d.is_dir() else []
        hint = f"; it holds category models {[Path(s).parent.name for s in subs]}: pick one" if subs else ""
        raise OSError(f"--model {d} is not a saved PatchCore model (no {CONFIG_FILE}){hint}")
    return PatchCore.load(d, **_runtime_kwargs(args))


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_image
    from .overlays import save_overlay, save_png

    for flag, value in (("--threshold", args.threshold), ("--pixel-threshold", args.pixel_threshold)):
        if value is not None and not np.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    model = _load_model(args.model, args)
    paths = _image_paths(args.images)
    out = _prepare_out(args.out, args.overwrite)
    pre = _preprocess(model)
    rows = []
    maps_dir = out / "maps"
    maps_dir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    bs = model.batch_size
    model.progress = False  # one bar over all batches below, not one per predict() call
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(paths), bs), desc="predict", unit="batch", disable=args.quiet, leave=False):
        chunk = paths[start:start + bs]
        images = np.stack([load_image(p, pre) for p in chunk])
        scores, maps = model.predict(images)
        for j, (p, s, m) in enumerate(zip(chunk, scores, maps)):
            stem = f"{start + j:05d}_{p.stem}"
            with atomic_open(maps_dir / f"{stem}.npy") as f:
                np.save(f, m)
            if not args.no_png:
                save_overlay(maps_dir / f"{stem}.png", images[j], None, m, mean=pre.mean, std=pre.std,
                             vmin=float(m.min()), vmax=float(m.max()))
            row = [str(p), f"{float(s):.8g}", f"maps/{stem}.npy"]
            if args.threshold is not None:
                row.append(int(float(s) >= args.threshold))
            if args.pixel_threshold is not None:
                save_png(maps_dir / f"{stem}_mask.png", np.where(m >= args.pixel_threshold, 255, 0).astype(np.uint8))
                row.append(f"maps/{stem}_mask.png")
            rows.append(row)
    seconds = time.perf_counter() - t0
    header = ["path", "score", "map"] + (["anomalous"] if args.threshold is not None else []) \
        + (["mask"] if args.pixel_threshold is not None else [])
    _write_text(out / "scores.csv", csv_text(header, rows))
    print(f"scored {len(paths)} images in {seconds:.2f} s ({1000 * seconds / max(1, len(paths)):.1f} ms/image) "
          f"-> {out / 'scores.csv'}")
    if args.threshold is not None:
        print(f"{sum(r[3] for r in rows)} of {len(rows)} images scored >= {args.threshold:g} (anomalous)")
    return 0


# -------------------------------------------------------------------- serve-bench
def run_serve_bench(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from .fast_scorer import FastScorer, measure_latency, unfused_scorer

    if args.json and Path(args.json).exists() and not args.overwrite:
        raise OSError(f"--json {args.json} exists; pass --overwrite to replace it")
    if any(b < 1 for b in args.batch_sizes):
        raise ValueError(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    model = _load_model(args.model, argparse.Namespace(device=args.device, batch_size=max(args.batch_sizes),
                                                       knn_backend="auto", aggregate_backend="auto",
                                                       quiet=True, workers=0))
    on_cuda = str(model.device).startswith("cuda")  # "cuda" or "cuda:N"
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick during warm-up
    scorer = FastScorer(model, batch_sizes=args.batch_sizes, dtype=args.dtype, cuda_graph=not args.no_graph)
    size = model.config["imagesize"]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in scorer.batch_sizes:
        images = torch.randn((batch, 3, size, size), generator=gen).to(model.device)
        row = {"provider": "fast", **measure_latency(scorer.score, images, iters=args.iters, warmup=args.warmup)}
        rows.append(row)
        if args.baseline:
            base = measure_latency(unfused_scorer(model), images, iters=args.iters, warmup=args.warmup)
            rows.append({"provider": "torch_fp32", **base})
            row["speedup_vs_torch_fp32"] = base["mean_ms"] / row["mean_ms"]
    device = torch.cuda.get_device_name(torch.device(model.device)) if on_cuda else "cpu"
    header = ["provider", "batch", "p50_ms", "p99_ms", "mean_ms", "images_per_s", "speedup"]
    print(f"serve-bench: {model.config['backbone']} {size}x{size}, bank {tuple(model.memory_bank.shape)}, "
          f"dtype {str(scorer.dtype).replace('torch.', '')}, graphs {scorer.cuda_graph}, {device}")
    table = [header] + [[r["provider"], str(r["batch"])] + [f"{r[k]:.3f}" for k in header[2:5]]
                        + [f"{r['images_per_s']:.1f}", f"{r['speedup_vs_torch_fp32']:.2f}x"
                           if "speedup_vs_torch_fp32" in r else "-"] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)))
    if args.json:
        doc = {"ofdb_fast_version": __version__, "device": device, "model": str(args.model),
               "dtype": str(scorer.dtype).replace("torch.", ""), "cuda_graph": scorer.cuda_graph,
               "imagesize": size, "memory_bank_shape": list(model.memory_bank.shape),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": rows}
        _write_text(Path(args.json), json.dumps(doc, indent=2) + "\n")
        print(f"results -> {args.json}")
    return 0


# ----------------------------------------------------------------------- evaluate
def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _write_overlays(out: Path, name: str, res: dict, n: int, pre) -> list[dict]:
    import numpy as np

    from .overlays import save_overlay

    scores = res["scores"]
    labels = np.asarray(res["label"]).astype(bool)
    order = np.argsort(-scores, kind="stable")
    vmin, vmax = float(res["maps"].min()), float(res["maps"].max())
    picks = [("high", r, i) for r, i in enumerate(order[:n])] + [("low", r, i) for r, i in enumerate(order[::-1][:n])]
    # The hardest cases (for the report's gallery): defects scored lowest, good images scored highest.
    picks += [("hard_defect", r, i) for r, i in enumerate(order[labels[order]][::-1][:n])]
    picks += [("hard_good", r, i) for r, i in enumerate(order[~labels[order]][:n])]
    written = []
    for kind, rank, i in picks:
        stem = Path(res["path"][i]).stem
        sub = "hard" if kind.startswith("hard") else ""
        path = out / "overlays" / name / sub / f"{kind}_{rank + 1:02d}_{res['defect_type'][i]}_{stem}.png"
        mask = res["mask"][i] if "mask" in res else None
        save_overlay(path, res["image"][i], mask, res["maps"][i], mean=pre.mean, std=pre.std, vmin=vmin, vmax=vmax)
        written.append({"path": str(path.relative_to(out)), "kind": kind, "rank": rank + 1,
                        "label": int(labels[i]), "defect_type": str(res["defect_type"][i]),
                        "score": float(scores[i]), "image": str(res["path"][i])})
    return written


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__
    from .data import MVTecDataset
    from .metrics import curves, evaluate, f1_max, pixel_f1_max
    from .model import CONFIG_FILE, PatchCore

    cats = _categories(args.data, args.category)
    if args.n_overlays < 0:
        raise ValueError(f"--n-overlays must be >= 0, got {args.n_overlays}")
    if args.resume and Path(args.out).is_dir() and any(Path(args.out).iterdir()) \
            and not (Path(args.out) / CATEGORIES_DIR).is_dir():
        raise ValueError(f"--resume: --out {args.out} has no {CATEGORIES_DIR}/ directory, so it was not written by "
                         f"patchcore evaluate; nothing there is replaced")
    out = _prepare_out(args.out, args.overwrite, args.resume)
    results: dict[str, dict] = {}
    all_curves: dict[str, dict] = {}
    score_rows = []
    config = None
    for cat_dir in cats:
        name = Path(cat_dir).name
        if args.model:
            mdir = Path(args.model)
            model = _load_model(mdir if (mdir / CONFIG_FILE).is_file() else mdir / name, args)
            fit_seconds = model.fit_info.get("fit_seconds")
        else:
            model = PatchCore(**_model_kwargs(args))
        config = model.config
        # What a finished category depends on besides the model's settings (checked on --resume).
        options = {"data": str(Path(cat_dir).resolve()), "model": args.model, "no_masks": bool(args.no_masks),
                   "n_overlays": args.n_overlays}
        finished = _finished_category(out, name, config, options) if args.resume else None
        if finished is not None:
            results[name], all_curves[name] = finished["result"], finished["curves"]
            score_rows += finished["scores"]
            print(f"{name}: finished earlier (--resume): "
                  + ", ".join(f"{k} {_fmt(results[name][k])}" for k in METRICS if results[name][k] is not None))
            continue
        if not args.model:
            train = MVTecDataset(cat_dir, "train", _preprocess(model), require_masks=False)
            _log(args, f"[{name}] fitting on {len(train)} images ({model.device})")
            model.fit(train)
            fit_seconds = model.fit_info["fit_seconds"]
            if args.save_models:
                model.fit_info["category"] = name
                # --resume: a model saved before the interruption is this run's own output.
                model.save(out / "models" / name, overwrite=args.overwrite or args.resume)
        test = MVTecDataset(cat_dir, "test", _preprocess(model), require_masks=not args.no_masks)
        _log(args, f"[{name}] scoring {len(test)} test images")
        t0 = time.perf_counter()
        res = model.predict_dataset(test, keep_images=args.n_overlays > 0)
        total = time.perf_counter() - t0
        labels = np.asarray(res["label"])
        if args.no_masks:
            metrics = evaluate(labels, res["scores"])
        else:
            metrics = evaluate(labels, res["scores"], res["mask"], res["maps"])
        pixels = (None, None) if args.no_masks else (res["mask"], res["maps"])
        image_op = f1_max(labels, res["scores"])
        pixel_op = None if args.no_masks else pixel_f1_max(*pixels)
        all_curves[name] = curves(labels, res["scores"], *pixels)
        overlays = _write_overlays(out, name, res, args.n_overlays, _preprocess(model)) if args.n_overlays else []
        n = len(labels)
        results[name] = {
            **{k: (float(metrics[k]) if k in metrics else None) for k in METRICS},
            # F1-max operating points, chosen on this test set (optimistic; see metrics.f1_max).
            "image_f1_max": image_op["f1"], "image_threshold": image_op["threshold"],
            "pixel_f1_max": None if pixel_op is None else pixel_op["f1"],
            "pixel_threshold": None if pixel_op is None else pixel_op["threshold"],
            "n_train": model.fit_info.get("n_train_images"), "n_test": n, "n_defect": int(labels.sum()),
            "n_bank": int(model.memory_bank.shape[0]), "fit_seconds": fit_seconds,
            "ms_per_image": 1000.0 * res["seconds"] / max(n, 1),
            "ms_per_image_with_loading": 1000.0 * total / max(n, 1),
            "overlays": [o["path"] for o in overlays], "overlay_cases": overlays,
            "shots": model.fit_info.get("shots"),
        }
        rows = [[name, p, int(lab), dt, f"{float(s):.8g}"]
                for p, lab, dt, s in zip(res["path"], labels, res["defect_type"], res["scores"])]
        score_rows += rows
        # Each finished category is kept at once, so an interrupted run loses at most the one in progress.
        atomic_write_json(out / CATEGORIES_DIR / f"{name}.json",
                          {"config": config, "options": options, "result": results[name], "scores": rows,
                           "curves": all_curves[name]}, indent=None, makedirs=True)
        print(f"{name}: " + ", ".join(f"{k} {_fmt(results[name][k])}" for k in METRICS if results[name][k] is not None))
    mean = {k: (float(np.mean([r[k] for r in results.values()])) if all(r[k] is not None for r in results.values())
                else None) for k in METRICS + F1_COLUMNS}
    for k in ("fit_seconds", "ms_per_image"):
        vals = [r[k] for r in results.values() if r[k] is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    doc = {"ofdb_fast_version": __version__, "data": str(args.data), "model": args.model, "config": config,
           "device": model.device, "categories": results, "mean": mean}
    _write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")
    cols = list(METRICS) + list(F1_COLUMNS) + ["fit_seconds", "ms_per_image"]
    rows = [[name] + [_fmt(r[c]) for c in cols] + [r["n_test"]] for name, r in results.items()]
    rows.append(["mean"] + [_fmt(mean[c]) for c in cols] + [sum(r["n_test"] for r in results.values())])
    # Thresholds are per category: in the CSV, not in the printed table or the mean. Full precision
    # (repr): each is a score of the set, and one rounded up would no longer flag that image.
    thresholds = [[repr(r["image_threshold"]), "-" if r["pixel_threshold"] is None else repr(r["pixel_threshold"])]
                  for r in results.values()]
    _write_text(out / "results.csv", csv_text(["category"] + cols + ["n_test", "image_threshold", "pixel_threshold"],
                                              [r + t for r, t in zip(rows, thresholds + [["-", "-"]])]))
    _write_text(out / "scores.csv", csv_text(["category", "path", "label", "defect_type", "score"], score_rows))
    _write_text(out / "curves.json", json.dumps(all_curves) + "\n")
    widths = [max(len(str(x)) for x in col) for col in zip(["category"] + cols + ["n_test"], *rows)]
    for line in [["category"] + cols + ["n_test"]] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    print(f"results -> {out / 'results.json'}, {out / 'results.csv'}, {out / 'scores.csv'}")
    if args.report:
        from ..report import write_report

        print(f"report -> {write_report(out, overwrite=args.overwrite)}")
    return 0

