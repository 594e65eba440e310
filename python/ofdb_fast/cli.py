"""The ``ofdb-fast`` command: one entry point, one subcommand per job.

Each area module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Modules listed here must import quickly (torch and other
heavy imports happen inside ``func``), so ``ofdb-fast --help`` stays instant.

Errors a user can fix (bad flags, missing or malformed files, refused overwrites) are raised
as ``ValueError``/``TypeError``/``OSError``/``RuntimeError`` and printed as one line,
``ofdb-fast <cmd>: error: ...``, with exit status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in help order. A module that fails to import is reported, not fatal.
COMMAND_MODULES = (
    "ofdb_fast.fractal.ifs_cli",
    "ofdb_fast.fractal.generate_cli",
    "ofdb_fast.fractal.pretrain",
    "ofdb_fast.patchcore.cli",
    "ofdb_fast.cluster.cli",
    "ofdb_fast.synth",
    "ofdb_fast.report.cli",
    "ofdb_fast.convert.cli",
    "ofdb_fast.demo",
)


def _info(args: argparse.Namespace) -> int:
    from . import __version__, _ext
    from ._dispatch import KNOWN_BACKENDS, unavailable_reason

    print(f"ofdb_fast {__version__}")
    if _ext.available():
        ext = _ext.load()
        print(f"_C: {ext.__file__}")
        print(f"  built with CUDA: {bool(ext.built_with_cuda)}, OpenMP: {bool(ext.built_with_openmp)} "
              f"({ext.max_threads()} threads)")
    for name in KNOWN_BACKENDS:
        reason = unavailable_reason(name)
        print(f"  {name:7s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofdb-fast",
        description="Fast OFDB fractal generation/pretraining and PatchCore anomaly detection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show the build, the backends and why any is unavailable")
    info.set_defaults(func=_info)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not present in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"ofdb-fast {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"ofdb-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
