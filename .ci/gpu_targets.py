"""The GPU session's expected outcomes (the open issues' targets) read off one benchmark record.

    python .ci/gpu_targets.py RESULT.json

One line per target: the measured value, the target, and PASS / MISS / ABSENT (the benchmark
did not run or reported no such value); then the speed-ups the issues ask about without a
number. Speed-ups follow ``bench/results_tool.py``: from the rate both rows report
(``*_per_s``), else from median times. Exit status 0 whenever the record could be read: the
record is the outcome, this is its summary (``.ci/gpu-session`` prints it last).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_TOOL = Path(__file__).resolve().parents[1] / "bench" / "results_tool.py"

# (what, group, provider, quantity, comparison, target). quantity: "median" (s), an extra_info
# key, or "x<baseline>" (speed-up over that provider of the same group).
TARGETS = [
    ("ifs_render cuda fractals/s, 256 px", "ifs_render|256", "cuda", "images_per_s", ">=", 50_000),
    ("ifs_render cuda fractals/s, 512 px", "ifs_render|512", "cuda", "images_per_s", ">=", 50_000),
    ("kcenter_greedy cuda seconds, 157k x 1024 10%", "kcenter_greedy|157000x1024@0.1", "cuda", "median", "<=", 0.3),
    ("kcenter_greedy cuda x torch loop, 157k x 1024", "kcenter_greedy|157000x1024@0.1", "cuda", "xtorch", ">=", 20),
    ("kcenter_greedy cuda_fp16 seconds, 157k x 1024 10%", "kcenter_greedy|157000x1024@0.1", "cuda_fp16", "median",
     "<=", 0.3),
    ("patch_aggregate triton x torch, B8", "patch_aggregate|B8@224", "triton", "xtorch", ">=", 2),
    ("patch_aggregate triton x torch, B32", "patch_aggregate|B32@224", "triton", "xtorch", ">=", 2),
    ("serve fast p50 ms, batch 1", "serve|1x224", "fast", "p50_ms", "<=", 1.5),
    ("serve fast images/s, batch 8", "serve|8x224", "fast", "images_per_s", ">=", 2_000),
    ("serve fast images/s, batch 32", "serve|32x224", "fast", "images_per_s", ">=", 2_000),
    ("serve fast x unfused fp32, batch 1", "serve|1x224", "fast", "xtorch", ">=", 5),
    ("serve fast x unfused fp32, batch 8", "serve|8x224", "fast", "xtorch", ">=", 5),
    ("serve fast x unfused fp32, batch 32", "serve|32x224", "fast", "xtorch", ">=", 5),
    *[(what, "pretrain|resnet50-1000x512-crop224-b128", provider, quantity, cmp, target)
      for what, provider, quantity, cmp, target in [
          ("pretrain resident x ImageFolder+DataLoader (16 workers)", "resident", "xreference", ">=", 2),
          ("pretrain resident data-time fraction", "resident", "data_time_fraction", "<=", 0.05),
          ("pretrain on_the_fly data-time fraction", "on_the_fly", "data_time_fraction", "<=", 0.05)]],
]

# (what, group prefix, provider, baseline): reported for every group that starts with the prefix.
SPEEDUPS = [
    ("knn_min triton x torch", "knn_min|", "triton", "torch"),
    ("knn_min triton_fp16 x torch", "knn_min|", "triton_fp16", "torch"),
    ("knn_min triton_bf16 x torch", "knn_min|", "triton_bf16", "torch"),
    ("pretrain resident (on-device) x ImageFolder+DataLoader", "pretrain|", "resident", "reference"),
    ("pretrain on_the_fly (rendered in memory) x ImageFolder+DataLoader", "pretrain|", "on_the_fly", "reference"),
    ("generate cuda x reference", "generate|", "cuda", "reference"),
    ("generate cuda x cpu", "generate|", "cuda", "cpu"),
    ("ifs_render cuda x reference", "ifs_render|", "cuda", "reference"),
    ("kcenter_greedy cuda x torch loop", "kcenter_greedy|", "cuda", "torch"),
    ("kcenter_greedy cuda x reference loop", "kcenter_greedy|", "cuda", "reference"),
]


def _tool():
    spec = importlib.util.spec_from_file_location("results_tool", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _groups(data: dict, tool) -> dict[str, dict[str, dict]]:
    groups: dict[str, dict[str, dict]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench.get("group") or bench["name"], {})[tool._provider(bench)] = bench
    return groups


def _speedup(rows: dict[str, dict], provider: str, baseline: str, tool) -> float | None:
    if provider not in rows or baseline not in rows:
        return None
    pair = [rows[provider], rows[baseline]]
    key = tool._common_rate_key(pair)
    if key:
        return pair[0]["extra_info"][key] / pair[1]["extra_info"][key]
    return pair[1]["stats"]["median"] / pair[0]["stats"]["median"]


def _value(rows: dict[str, dict], provider: str, quantity: str, tool) -> float | None:
    if quantity.startswith("x"):
        return _speedup(rows, provider, quantity[1:], tool)
    bench = rows.get(provider)
    if bench is None:
        return None
    if quantity == "median":
        return bench["stats"]["median"]
    return bench.get("extra_info", {}).get(quantity)


def summary(data: dict) -> list[str]:
    tool = _tool()
    groups = _groups(data, tool)
    lines = ["targets:"]
    for what, group, provider, quantity, cmp, target in TARGETS:
        value = _value(groups.get(group, {}), provider, quantity, tool)
        if value is None:
            verdict, shown = "ABSENT", "-"
        else:
            ok = value >= target if cmp == ">=" else value <= target
            verdict, shown = ("PASS" if ok else "MISS"), f"{value:,.3g}"
        lines.append(f"  {verdict:6s} {what}: {shown} (target {cmp} {target:,})")
    lines.append("speed-ups (no target):")
    for what, prefix, provider, baseline in SPEEDUPS:
        for group in sorted(g for g in groups if g.startswith(prefix)):
            value = _speedup(groups[group], provider, baseline, tool)
            if value is not None:
                lines.append(f"  {what} [{group}]: {value:,.3g}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        data = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"gpu_targets: {args[0]}: cannot read a pytest-benchmark record ({exc!r})", file=sys.stderr)
        return 1
    print("\n".join(summary(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
