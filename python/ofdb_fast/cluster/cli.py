"""``ofdb-fast cluster``: group the test images of one MVTec-format category by defect type.

``ofdb-fast cluster --data CATEGORY_DIR --out DIR [--mode unsupervised supervised average]
[--tau 2 ...] [--train-ratio R] [--n-clusters N|labels|estimate] [--backbone ...]``

Writes into ``DIR`` (refused when not empty, unless ``--overwrite``; every file written to a
temporary name and moved into place):
- ``assignments.csv``: one row per (mode, tau, image): ``mode, tau, path, defect_type,
  cluster`` (cluster -1: a ``combined`` image, not clustered);
- ``metrics.json``: the configuration, timings and per (mode, tau) ``nmi``, ``ari``, ``f1``,
  ``n_clusters`` (and the silhouette scores when K is estimated); with ground-truth masks also
  ``alpha_on_defect`` / ``defect_cell_share`` (:mod:`ofdb_fast.cluster.localisation`);
- ``sheets/<mode>_tau<tau>/cluster_<k>.png``: a contact sheet per cluster, thumbnails captioned
  with their folder label.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_text, prepare_output_dir

THUMB = 96
SHEET_COLUMNS = 8


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cluster", help="group anomalous images by defect type (Anomaly Clustering, Sohn et al. 2023)",
        description="Anomaly Clustering of one MVTec-format category: test/<type> folders are the labels; "
                    "train/good images are the normals of the supervised mode.")
    a = p.add_argument
    a("--data", required=True, help="category directory (MVTec layout: test/<type>/, train/good/)")
    a("--out", required=True, help="output directory")
    a("--mode", nargs="+", default=["unsupervised"], choices=["unsupervised", "supervised", "average", "mask"],
      help="alpha modes to run (default unsupervised); 'mask' weights patches by the ground-truth masks: a "
           "diagnostic of the backbone's embeddings (it reads the labels), not a clustering method")
    a("--tau", nargs="+", type=float, default=[2.0],
      help="softmax temperatures (default 2.0, the reproduction's); several reuse the distances")
    a("--train-ratio", type=float, default=1.0,
      help="supervised: normal images = int(R * n_test), capped by train/good (default 1.0)")
    a("--n-clusters", default="labels",
      help="an int, 'labels' (default: one per test/ folder, combined excluded) or 'estimate' (silhouette)")
    a("--k-max", type=int, default=10, help="largest K tried by --n-clusters estimate (default 10)")
    a("--defects-only", action="store_true", help="leave test/good out of the clustering")
    a("--no-layer-norm", action="store_true", help="skip the per-image LayerNorm of the layer maps")
    a("--bn-adapt", action="store_true",
      help="re-estimate the backbone's BatchNorm statistics on train/good first (AdaBN; useful for backbones "
           "pretrained on another domain, e.g. fractals)")
    a("--backbone", default="wide_resnet50_2", help="wide_resnet50_2 | resnet18 | resnet50 | resnet101")
    a("--layers", default="layer2,layer3", help="comma-separated backbone layers (default layer2,layer3)")
    a("--weights", default="IMAGENET1K_V1",
      help="torchvision weights name, a checkpoint (.safetensors/.pt/.pth), or 'random' (tests only)")
    a("--pretrain-embed-dimension", type=int, default=2048)
    a("--target-embed-dimension", type=int, default=4096)
    a("--resize", type=int, default=256)
    a("--imagesize", type=int, default=224)
    a("--seed", type=int, default=0, help="normal-image draw and random weights (default 0)")
    a("--device", default="auto", help="cpu | cuda | auto (default auto)")
    a("--batch-size", type=int, default=8)
    a("--knn-backend", default="auto", help="patch-distance backend: auto | numpy | cpu | torch | faiss")
    a("--no-sheets", action="store_true", help="do not write contact sheets")
    a("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    a("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _n_clusters(value: str) -> int | str:
    if value in ("labels", "estimate"):
        return value
    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"--n-clusters must be an int >= 1, 'labels' or 'estimate', got {value!r}") from None
    if k < 1:
        raise ValueError(f"--n-clusters must be an int >= 1, 'labels' or 'estimate', got {k}")
    return k


def _prepare_out(out: str | os.PathLike, overwrite: bool) -> Path:
    return prepare_output_dir(out, overwrite, "--out", hint="pass --overwrite to replace its results")


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, makedirs=True)


def _tau_name(tau: float) -> str:
    return f"{tau:g}".replace(".", "p")


def contact_sheet(paths: list[str], captions: list[str], thumb: int = THUMB, columns: int = SHEET_COLUMNS):
    """A PIL image: thumbnails (``thumb`` px, aspect kept) on a grid, each with its caption."""
    from PIL import Image, ImageDraw

    cols = max(1, min(columns, len(paths)))
    rows = (len(paths) + cols - 1) // cols
    cell_h = thumb + 14
    sheet = Image.new("RGB", (cols * (thumb + 4) + 4, rows * (cell_h + 4) + 4), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for n, (p, cap) in enumerate(zip(paths, captions)):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((thumb, thumb))
        x, y = 4 + (n % cols) * (thumb + 4), 4 + (n // cols) * (cell_h + 4)
        sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        draw.text((x + 2, y + thumb + 1), cap[:16], fill=(235, 235, 235))
    return sheet


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__
    from .pipeline import cluster_category

    k = _n_clusters(args.n_clusters)
    data = Path(args.data)
    from ..patchcore.data import normal_dir, test_dir

    if not test_dir(data).is_dir():
        raise OSError(f"--data {data} must be a category directory with test/<type>/ folders (MVTec layout)")

    for needs, flag in (("supervised" in args.mode, "--mode supervised"), (args.bn_adapt, "--bn-adapt")):
        if needs and normal_dir(data, "train") is None:
            raise OSError(f"{flag} needs normal images in {data / 'train' / 'good'} (or train/ok, as BTAD), "
                          f"which does not exist")
    out = _prepare_out(args.out, args.overwrite)
    res = cluster_category(
        str(data), modes=args.mode, taus=args.tau, train_ratio=args.train_ratio, n_clusters=k,
        k_max=args.k_max, include_good=not args.defects_only, layer_norm=not args.no_layer_norm,
        seed=args.seed, knn_backend=args.knn_backend, bn_adapt=args.bn_adapt, progress=not args.quiet,
        backbone=args.backbone, layers=args.layers.replace(",", " ").split(), weights=args.weights,
        pretrain_embed_dimension=args.pretrain_embed_dimension,
        target_embed_dimension=args.target_embed_dimension, resize=args.resize, imagesize=args.imagesize,
        device=args.device, batch_size=args.batch_size)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mode", "tau", "path", "defect_type", "cluster"])
    runs: list[dict[str, Any]] = []
    for r in res.runs:
        for p, t, c in zip(res.paths, res.defect_types, r.clusters):
            w.writerow([r.mode, f"{r.tau:g}", p, t, int(c)])
        loc = r.localisation or {}
        runs.append({"mode": r.mode, "tau": r.tau, "n_clusters": r.n_clusters, "estimated_k": r.estimated,
                     **{m: float(v) for m, v in r.metrics.items()},
                     **({"localisation": loc} if loc else {}),
                     "silhouette": {str(kk): v for kk, v in r.silhouette.items()}})
        where = (f"  alpha on defect {loc['alpha_on_defect']:.3f} (uniform {loc['defect_cell_share']:.3f})"
                 if loc.get("n_localised") else "")
        print(f"{r.mode:12s} tau {r.tau:<5g} K {r.n_clusters:<3d} NMI {r.metrics['nmi']:.3f}  "
              f"ARI {r.metrics['ari']:.3f}  F1 {r.metrics['f1']:.3f}{where}")
        if not args.no_sheets:
            for c in range(r.n_clusters):
                members = [i for i in np.flatnonzero(r.clusters == c)]
                sheet = contact_sheet([res.paths[i] for i in members], [res.defect_types[i] for i in members])
                target = out / "sheets" / f"{r.mode}_tau{_tau_name(r.tau)}" / f"cluster_{c:02d}.png"
                atomic_write(target, lambda tmp, s=sheet: s.save(tmp, format="PNG"), makedirs=True)
    _write_text(out / "assignments.csv", buf.getvalue())
    doc = {"ofdb_fast_version": __version__, "data": str(data), **res.info, "runs": runs}
    _write_text(out / "metrics.json", json.dumps(doc, indent=2, default=str) + "\n")
    if not args.quiet:
        print(f"results -> {out / 'assignments.csv'}, {out / 'metrics.json'}"
              + ("" if args.no_sheets else f", {out / 'sheets'}"), file=sys.stderr)
    return 0
