"""``ofdb-fast convert kolektorsdd SRC DST`` and ``ofdb-fast convert kolektorsdd2 SRC DST``.

Both print the conversion report (counts, skipped and unreadable files) and write it with a
manifest into ``DST/<category>``; see :mod:`ofdb_fast.convert.kolektor` for the conventions.
"""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser, default_size: str, category: str) -> None:
    a = p.add_argument
    a("src", metavar="SRC", help="dataset root (read only)")
    a("dst", metavar="DST", help="output root; DST/<category> is written (absent or empty unless --overwrite)")
    a("--size", default=default_size, help=f"output WxH, or 'keep' (default {default_size})")
    a("--pad", action="store_true", help="zero-pad / centre-crop to --size instead of the distorting resize")
    a("--category", default=category, help=f"category directory name (default {category})")
    a("--overwrite", action="store_true", help="replace an existing DST/<category>")
    a("--dry-run", action="store_true", help="report what would be converted; write nothing")


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert datasets to the MVTec AD layout",
                              description="Convert anomaly detection datasets to the MVTec AD layout.")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="convert_command", metavar="{kolektorsdd,kolektorsdd2}")

    k1 = sub.add_parser("kolektorsdd", help="KolektorSDD (kosNN/PartN.jpg + PartN_label.bmp)")
    _common(k1, "500x1240", "metal")
    k1.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    k1.add_argument("--test-good", type=int, default=None,
                    help="good images in test/good (default: as many as the defective images)")
    k1.add_argument("--exclude", nargs="*", default=[], metavar="ID",
                    help="sample ids to skip, e.g. kos21/Part7 (skipped by the official loader)")
    k1.set_defaults(func=run_kolektorsdd)

    k2 = sub.add_parser("kolektorsdd2", help="KolektorSDD2 (train/, test/ with <id>.png + <id>_GT.png)")
    _common(k2, "232x640", "ksdd2")
    k2.add_argument("--train-positives", default="exclude", choices=["exclude", "test"],
                    help="defective training images: exclude them (default) or add them to test/defect")
    k2.set_defaults(func=run_kolektorsdd2)


def _finish(report) -> int:
    print(report.summary())
    if not report.dry_run:
        print(f"wrote {report.destination} (manifest.csv, conversion_report.json)")
    return 0


def run_kolektorsdd(args: argparse.Namespace) -> int:
    from .kolektor import convert_kolektorsdd

    report = convert_kolektorsdd(args.src, args.dst, seed=args.seed, size=args.size,
                                 fit="pad" if args.pad else "resize", n_test_good=args.test_good,
                                 category=args.category, exclude=args.exclude, overwrite=args.overwrite,
                                 dry_run=args.dry_run)
    return _finish(report)


def run_kolektorsdd2(args: argparse.Namespace) -> int:
    from .kolektor import convert_kolektorsdd2

    report = convert_kolektorsdd2(args.src, args.dst, size=args.size, fit="pad" if args.pad else "resize",
                                  train_positives=args.train_positives, category=args.category,
                                  overwrite=args.overwrite, dry_run=args.dry_run)
    return _finish(report)
