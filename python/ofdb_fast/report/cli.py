"""``ofdb-fast report RUN_DIR [--out FILE] [--overwrite] [--title T]``.

RUN_DIR is one ``ofdb-fast patchcore evaluate --out`` directory, or a directory of several
(shown side by side). Writes one self-contained HTML file (images embedded as data URIs),
by default ``RUN_DIR/report.html``; an existing file is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write a self-contained HTML report of evaluate results",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_dir", metavar="RUN_DIR", help="an evaluate output directory, or a directory of several")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--title", default=None, help="page title (default: 'PatchCore report: <RUN_DIR name>')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .html import write_report

    path = write_report(args.run_dir, args.out, overwrite=args.overwrite, title=args.title)
    print(f"report -> {path}")
    return 0
