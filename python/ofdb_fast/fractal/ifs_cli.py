"""``ofdb-fast ifs``: sample IFS systems into a parameter file (fractal4AD ``ifs.py`` CLI).

Flags follow the reference (``--save_path --num_systems --min_n --max_n --bval --beta_min
--beta_max``) plus ``--seed``, ``--rng`` and ``--overwrite``; the format follows the extension
(``.pkl`` reference layout, ``.npz`` native). Deliberate deviations from the reference CLI:

- ``--beta_min A --beta_max B`` gives ``beta = (A, B)``; the reference overwrote it with
  ``(A, A)``. The two flags must be given together.
- A seed makes the file reproducible (the reference draws every system from OS entropy).
- Invalid values are refused with an error naming the flag, and an existing file is never
  replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import time

from .._io import refuse_overwrite


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ifs", help="sample IFS systems (fractal4AD SVD sampler) into a .pkl/.npz parameter file",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--save_path", "--save-path", default="./debug.pkl",
                   help="output file: .pkl (fractal4AD layout) or .npz (native) [./debug.pkl]")
    p.add_argument("--num_systems", "--num-systems", type=int, default=100, help="systems to sample [100]")
    p.add_argument("--min_n", "--min-n", type=int, default=2, help="fewest maps per system [2]")
    p.add_argument("--max_n", "--max-n", type=int, default=4, help="most maps per system, inclusive [4]")
    p.add_argument("--bval", type=float, default=1.0, help="translations are U(-bval, bval) [1]")
    p.add_argument("--beta_min", "--beta-min", type=float, default=None,
                   help="sigma-factor range low end (with --beta_max); default ((5+n)/2, (6+n)/2)")
    p.add_argument("--beta_max", "--beta-max", type=float, default=None, help="sigma-factor range high end")
    p.add_argument("--seed", type=int, default=0, help="RNG seed [0]")
    p.add_argument("--rng", choices=("counter", "pcg64"), default="counter",
                   help="counter: vectorised, system i depends only on (seed, i); "
                        "pcg64: the reference's NumPy call order from one default_rng(seed) [counter]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> tuple[float, float] | None:
    if args.num_systems < 1:
        raise ValueError(f"--num_systems must be >= 1, got {args.num_systems}")
    if args.min_n < 1:
        raise ValueError(f"--min_n must be >= 1, got {args.min_n}")
    if args.max_n < args.min_n:
        raise ValueError(f"--max_n must be >= --min_n ({args.min_n}), got {args.max_n}")
    if not (args.bval > 0 and args.bval != float("inf")):
        raise ValueError(f"--bval must be a finite number > 0, got {args.bval}")
    if not 0 <= args.seed < 2**64:
        raise ValueError(f"--seed must be in [0, 2**64), got {args.seed}")
    if (args.beta_min is None) != (args.beta_max is None):
        given = "--beta_min" if args.beta_max is None else "--beta_max"
        raise ValueError(f"--beta_min and --beta_max must be given together, got only {given}")
    if args.beta_min is None:
        if args.min_n == 1:
            raise ValueError("--beta_min/--beta_max must be given when --min_n is 1: the default sigma-factor "
                             "range (3, 3.5) for one map exceeds the feasible maximum 3")
        return None
    limit = 3 * args.min_n
    for flag, value in (("--beta_min", args.beta_min), ("--beta_max", args.beta_max)):
        if not 0 <= value <= limit:
            raise ValueError(f"{flag} must be in [0, 3 * --min_n = {limit}] (larger sigma-factors force "
                             f"singular values > 1), got {value}")
    if args.beta_min > args.beta_max:
        raise ValueError(f"--beta_max must be >= --beta_min ({args.beta_min}), got {args.beta_max}")
    return (args.beta_min, args.beta_max)


def run(args: argparse.Namespace) -> int:
    from .ifs import sample_systems
    from .params_io import save_params

    beta = _check(args)
    path = args.save_path
    if not path.endswith((".pkl", ".npz")):
        raise ValueError(f"--save_path must end in .pkl (reference layout) or .npz (native), got {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--save_path directory {directory} does not exist")
    refuse_overwrite(path, args.overwrite, "--save_path", error=FileExistsError)
    t0 = time.perf_counter()
    params = sample_systems(args.num_systems, min_n=args.min_n, max_n=args.max_n, bval=args.bval,
                            beta=beta, seed=args.seed, rng=args.rng)
    elapsed = time.perf_counter() - t0
    save_params(params, path, overwrite=args.overwrite)
    print(f"ifs: {len(params)} systems (n {args.min_n}..{args.max_n}, rng {args.rng}, seed {args.seed}) "
          f"-> {path}; sampled in {elapsed:.2f} s ({len(params) / max(elapsed, 1e-9):,.0f} systems/s)")
    return 0
