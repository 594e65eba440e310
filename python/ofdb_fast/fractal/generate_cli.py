"""``ofdb-fast generate``: build an OFDB-style fractal dataset (see :mod:`.dataset`).

Flag names follow the reference ``dataset_generator.py`` (underscores), plus ``--seed``,
``--backend``, ``--workers``, ``--shard I/N``, ``--resume``, ``--overwrite``, ``--format``,
``--shard_size``, ``--batch_size``, ``--png_level`` and the ``ifs`` sampling flags
``--min_n --max_n --bval`` (used when no ``--param_file`` is given). Defaults give the
OFDB-4AD set: 1,000 classes x 1 image, 512x512, no background, systems from 50,000.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate an OFDB-style fractal dataset (PNG folders, tar or npz shards)",
        description="Render an OFDB-style fractal dataset: deterministic from --seed, resumable "
                    "(--resume), shardable across machines (--shard I/N).",
    )
    a = p.add_argument
    a("--dataset_type", default="fractals", help="fractals | multi-fractals (default fractals)")
    a("--param_file", default="", help="systems file (.pkl reference layout or .npz); empty: sample them")
    a("--dataset_dir", default="./fractals", help="output directory (default ./fractals)")
    a("--num_systems", type=int, default=50_000, help="systems the classes are drawn from (default 50000)")
    a("--num_class", type=int, default=1000, help="classes (default 1000)")
    a("--per_class", type=int, default=1, help="images per class (default 1)")
    a("--size", type=int, default=512, help="image side in pixels (default 512)")
    a("--remove_jitter", action="store_true", help="do not jitter the systems per image")
    a("--background", action="store_true", help="diamond-square background instead of black")
    a("--n_points", type=int, default=100_000, help="chaos-game points per image (default 100000)")
    a("--seed", type=int, default=0, help="global seed: systems and images are pure functions of it")
    a("--min_n", type=int, default=2, help="fewest maps per sampled system (default 2)")
    a("--max_n", type=int, default=4, help="most maps per sampled system (default 4)")
    a("--bval", type=float, default=1.0, help="translations ~ U(-bval, bval) (default 1)")
    a("--backend", default="auto", help="auto | numpy | cpu | cuda (default auto: cuda if present, else cpu)")
    a("--workers", type=int, default=None, help="PNG encoder threads (default: number of cores)")
    a("--shard", default="0/1", help="I/N: write only part I of N (machines split the work; default 0/1)")
    a("--resume", action="store_true", help="continue an interrupted run in --dataset_dir")
    a("--overwrite", action="store_true",
      help="replace a previous run's output (refused if the directory holds other files)")
    a("--format", default="png", help="png (class folders) | tar (webdataset shards) | npz shards")
    a("--shard_size", type=int, default=1000, help="images per tar/npz file (default 1000)")
    a("--batch_size", type=int, default=None, help="images per render call (default 64; cuda 256)")
    a("--png_level", type=int, default=1, help="zlib level 0-9 for PNGs (default 1)")
    a("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The encoder threads share the cores with OpenMP's: idle OpenMP threads must not spin.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .dataset import GenerateOptions, generate, parse_shard

    opts = GenerateOptions(
        dataset_dir=args.dataset_dir, dataset_type=args.dataset_type, param_file=args.param_file,
        num_systems=args.num_systems, num_class=args.num_class, per_class=args.per_class, size=args.size,
        remove_jitter=args.remove_jitter, background=args.background, n_points=args.n_points, seed=args.seed,
        min_n=args.min_n, max_n=args.max_n, bval=args.bval, backend=args.backend, workers=args.workers,
        shard=parse_shard(args.shard), resume=args.resume, overwrite=args.overwrite, format=args.format,
        shard_size=args.shard_size, batch_size=args.batch_size, png_level=args.png_level,
        progress=not args.no_progress,
    )
    result = generate(opts)
    line = (f"wrote {result.n_written} images in {result.seconds:.2f} s "
            f"({result.images_per_second:.1f} images/s)")
    if result.n_skipped:
        line += f"; {result.n_skipped} already present"
    print(line, file=sys.stdout)
    return 0
