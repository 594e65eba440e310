"""``ofdb-fast convert kolektorsdd|kolektorsdd2|visa SRC DST``.

Each prints the conversion report (counts, skipped and unreadable files) and writes it with a
manifest into every ``DST/<category>`` it converts; see :mod:`ofdb_fast.convert.kolektor` and
:mod:`ofdb_fast.convert.visa` for the conventions.
"""

from __future__ import annotations

import argparse

from .visa import DEFAULT_SPLIT_FILE, DEFECT_TYPES


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
    sub = p.add_subparsers(dest="convert_command", metavar="{kolektorsdd,kolektorsdd2,visa}")

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

    v = sub.add_parser("visa", help="VisA (split_csv/1cls.csv + <object>/Data/{Images,Masks}), every category")
    a = v.add_argument
    a("src", metavar="SRC", help="VisA root holding split_csv/ and one folder per object (read only)")
    a("dst", metavar="DST", help="output root; DST/<category> per category (absent or empty unless --overwrite)")
    a("--category", action="extend", nargs="+", default=None, metavar="C",
      help="objects to convert (default: every object of the split file)")
    a("--defect-types", default="bad", choices=DEFECT_TYPES,
      help="test/bad for every anomaly (default, as anomalib) or one folder per image_anno.csv label "
           "(several labels -> combined; what ofdb-fast cluster needs)")
    a("--split-file", default=DEFAULT_SPLIT_FILE,
      help=f"split csv, relative to SRC or absolute (default {DEFAULT_SPLIT_FILE}, the standard protocol)")
    a("--link", action="store_true",
      help="hard-link the images instead of copying them (copied where SRC and DST cannot share files)")
    a("--overwrite", action="store_true", help="replace the converted DST/<category> directories")
    a("--dry-run", action="store_true", help="read and check everything, report; write nothing")
    a("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run_visa)


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


def run_visa(args: argparse.Namespace) -> int:
    from .visa import convert_visa

    report = convert_visa(args.src, args.dst, categories=args.category, split_file=args.split_file,
                          defect_types=args.defect_types, link=args.link, overwrite=args.overwrite,
                          dry_run=args.dry_run, progress=not args.quiet)
    print(report.summary())
    if not report.dry_run:
        print(f"wrote {', '.join(report.categories)} under {report.destination} "
              f"(each with manifest.csv, conversion_report.json)")
    return 0
