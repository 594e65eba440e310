"""Turn pytest-benchmark JSON into the committed performance record, and compare two records.

    python bench/results_tool.py markdown RESULT.json [--out RESULT.md]
    python bench/results_tool.py compare OLD.json NEW.json [--threshold 0.10]
    python bench/results_tool.py merge OUT.json PART.json [PART.json ...] [--commit ID] [--device NAME]

``markdown`` writes one table per benchmark group (``<op>|<size>``): every provider's median
time, its throughput from ``extra_info``, and its speed-up over each baseline provider present
in the group (``reference``, ``reference_lean``, ``torch``, ``numpy``). ``compare`` matches benchmarks by full name
and flags every one whose median grew by more than ``threshold`` (exit status 1 if any did).
``merge`` joins the results of several pytest runs of one commit (e.g. one per stage of
``.ci/gpu-session``, each with its own size preset) into one record: machine and commit from
the first part, a benchmark that appears twice is an error; ``--commit`` sets the commit id
where the runs could not read it (no git checkout), ``--device`` the record's device line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

BASELINES = ("reference", "reference_lean", "torch", "numpy")


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read a pytest-benchmark JSON file ({exc})")
    if "benchmarks" not in data:
        raise SystemExit(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return data


def _provider(bench: dict) -> str:
    params = bench.get("params") or {}
    for key in ("provider", "backend"):
        if key in params:
            return str(params[key])
    return bench["name"]


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _throughput(extra: dict) -> str:
    for key, value in extra.items():
        if key.endswith("_per_s") or key.endswith("/s"):
            return f"{value:,.0f} {key.replace('_per_s', '/s')}"
    return ""


def _common_rate_key(rows: list[dict]) -> str | None:
    """A throughput key every row of a group reports (providers may time different amounts
    of work, e.g. 8 images for a slow baseline and 64 for a kernel: then rates, not medians,
    are comparable)."""
    keys = None
    for bench in rows:
        rates = {k for k in bench.get("extra_info", {}) if k.endswith("_per_s")}
        keys = rates if keys is None else keys & rates
    return sorted(keys)[0] if keys else None


def markdown(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(bench)
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    device = machine.get("device") or next((b.get("extra_info", {}).get("device") for b in data["benchmarks"]
                                            if b.get("extra_info", {}).get("device")),
                                           machine.get("cpu", {}).get("brand_raw", "?"))
    lines = [
        f"# Benchmarks {data.get('datetime', '')[:10]}",
        "",
        f"- device: {device}",
        f"- host: {machine.get('node', '?')}, {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"python {machine.get('python_version', '?')}",
        f"- commit: {commit.get('id', '?')[:12]}{' (dirty)' if commit.get('dirty') else ''}",
        "",
    ]
    for group in sorted(groups):
        rows = groups[group]
        rate_key = _common_rate_key(rows)
        # cost[p]: seconds per unit of work (1 / rate) when rates exist, else the median time.
        cost = {_provider(b): (1.0 / b["extra_info"][rate_key] if rate_key else b["stats"]["median"]) for b in rows}
        present = [p for p in BASELINES if p in cost]
        lines.append(f"## {group}")
        lines.append("")
        basis = rate_key.replace("_per_s", "/s") if rate_key else "median times"
        lines.append(f"Speed-ups computed from {basis}.")
        lines.append("")
        header = "| provider | median | throughput |" + "".join(f" x vs {p} |" for p in present)
        lines.append(header)
        lines.append("|" + "---|" * (3 + len(present)))
        for bench in sorted(rows, key=lambda b: cost[_provider(b)], reverse=True):
            name = _provider(bench)
            median = bench["stats"]["median"]
            ratios = "".join(f" {cost[p] / cost[name]:.1f} |" for p in present)
            lines.append(f"| {name} | {_fmt_time(median)} | {_throughput(bench.get('extra_info', {}))} |{ratios}")
        lines.append("")
    return "\n".join(lines)


def compare(old: dict, new: dict, threshold: float) -> tuple[list[str], int]:
    old_by_name = {b["fullname"]: b for b in old["benchmarks"]}
    report, regressions = [], 0
    for bench in new["benchmarks"]:
        prev = old_by_name.get(bench["fullname"])
        if prev is None:
            report.append(f"new       {bench['fullname']}")
            continue
        ratio = bench["stats"]["median"] / prev["stats"]["median"]
        flag = "REGRESSED" if ratio > 1 + threshold else ("faster" if ratio < 1 - threshold else "same")
        regressions += flag == "REGRESSED"
        report.append(f"{flag:9s} {ratio:6.2f}x  {bench['fullname']}")
    return report, regressions


def merge(parts: list[dict], commit: str | None = None, device: str | None = None) -> dict:
    if not parts:
        raise SystemExit("merge: no result files given")
    merged = {key: value for key, value in parts[0].items() if key != "benchmarks"}
    merged["machine_info"] = dict(merged.get("machine_info", {}))
    merged["commit_info"] = dict(merged.get("commit_info", {}))
    if commit:
        merged["commit_info"]["id"] = commit
    if device:
        merged["machine_info"]["device"] = device
    ids = {p.get("commit_info", {}).get("id") for p in parts}
    if len(ids) > 1:
        raise SystemExit(f"merge: the parts come from different commits {sorted(map(str, ids))}")
    seen: set[str] = set()
    merged["benchmarks"] = []
    for part in parts:
        for bench in part["benchmarks"]:
            if bench["fullname"] in seen:
                raise SystemExit(f"merge: {bench['fullname']} appears in more than one part")
            seen.add(bench["fullname"])
            merged["benchmarks"].append(bench)
    return merged


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    md = sub.add_parser("markdown", help="write a markdown table for one result file")
    md.add_argument("result")
    md.add_argument("--out", help="output .md (default: next to the JSON)")
    cmp_ = sub.add_parser("compare", help="flag regressions between two result files")
    cmp_.add_argument("old")
    cmp_.add_argument("new")
    cmp_.add_argument("--threshold", type=float, default=0.10, help="relative slowdown flagged (default 0.10)")
    mrg = sub.add_parser("merge", help="join result files of one commit into one record")
    mrg.add_argument("out")
    mrg.add_argument("parts", nargs="+")
    mrg.add_argument("--commit", help="commit id for the record (when the runs had no git checkout)")
    mrg.add_argument("--device", help="the record's device line (e.g. the GPU's name)")
    args = parser.parse_args(argv)
    if args.cmd == "markdown":
        out = Path(args.out) if args.out else Path(args.result).with_suffix(".md")
        _write(out, markdown(_load(args.result)) + "\n")
        print(f"wrote {out}")
        return 0
    if args.cmd == "merge":
        merged = merge([_load(p) for p in args.parts], args.commit, args.device)
        _write(Path(args.out), json.dumps(merged, indent=4) + "\n")
        print(f"wrote {args.out}: {len(merged['benchmarks'])} benchmarks from {len(args.parts)} file(s)")
        return 0
    report, regressions = compare(_load(args.old), _load(args.new), args.threshold)
    print("\n".join(report))
    print(f"{regressions} regression(s) over {args.threshold:.0%}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
