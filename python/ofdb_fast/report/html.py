"""The HTML report of one or several ``ofdb-fast patchcore evaluate`` outputs.

Inputs (what ``evaluate --out DIR`` writes): ``results.json`` (required: metrics, timings,
config, overlay list), ``scores.csv`` (per-image scores, for the histograms and a fallback
image ROC), ``curves.json`` (ROC/PRO points; older outputs without it get an image ROC from
``scores.csv`` and no pixel curves), ``overlays/`` PNGs, and an optional ``timings.json``
(a JSON object of extra run facts, e.g. ``{"render_images_per_s": 812.5}`` written by a demo
script; nested objects are flattened as ``a.b``), read in the evaluate directory and in the
report's run directory.

A run directory is either one evaluate output (it holds ``results.json``) or a directory whose
immediate subdirectories are evaluate outputs (e.g. ``runs/demo/eval_fractal`` and
``runs/demo/eval_random``); several runs are shown side by side, in name order.

The report is ONE self-contained HTML5 file: every image (charts drawn by
:mod:`.plots`, overlays read from disk) is embedded as a ``data:image/png;base64`` URI; no
JavaScript, no external resources. Table cells holding metrics carry ``data-run``,
``data-category``, ``data-metric`` and ``data-value`` (the exact ``repr`` of the float) so tests
and scripts can read them back.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text, refuse_overwrite
from . import plots

METRICS = ("instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
METRIC_NAMES = {"instance_auroc": "Image AUROC", "full_pixel_auroc": "Pixel AUROC",
                "anomaly_pixel_auroc": "Pixel AUROC (defect images)", "aupro": "AUPRO",
                "image_f1_max": "Image F1-max", "pixel_f1_max": "Pixel F1-max"}
RESULTS_FILE = "results.json"
DEFAULT_NAME = "report.html"
# Per-category timing rows: (results.json key, label, format).
TIMING_ROWS = (("fit_seconds", "fit (s)", "{:.2f}"), ("ms_per_image", "scoring (ms / image)", "{:.1f}"),
               ("ms_per_image_with_loading", "scoring incl. decoding (ms / image)", "{:.1f}"),
               ("n_train", "train images", "{}"), ("n_test", "test images", "{}"),
               ("n_defect", "defect test images", "{}"), ("n_bank", "memory bank (patches)", "{}"))


@dataclass
class EvalRun:
    """One evaluate output directory, loaded."""

    name: str
    path: Path
    results: dict[str, Any]
    scores: list[dict[str, str]] = field(default_factory=list)
    curves: dict[str, Any] | None = None
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return list(self.results.get("categories", {}))


# ---------------------------------------------------------------------------- loading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _read_timings(directory: Path) -> dict[str, Any]:
    path = directory / "timings.json"
    if not path.is_file():
        return {}
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(doc).__name__}")
    return _flatten(doc)


def load_run(directory: str | os.PathLike, name: str | None = None) -> EvalRun:
    """Load one evaluate output directory (``results.json`` required, the rest optional)."""
    d = Path(directory)
    doc = _read_json(d / RESULTS_FILE)
    if not isinstance(doc, dict) or not isinstance(doc.get("categories"), dict) or not doc["categories"]:
        raise ValueError(f"{d / RESULTS_FILE} must hold an evaluate result with 'categories', got another document")
    run = EvalRun(name=name or d.name, path=d, results=doc, timings=_read_timings(d))
    if (d / "scores.csv").is_file():
        with open(d / "scores.csv", newline="") as f:
            run.scores = list(csv.DictReader(f))
    if (d / "curves.json").is_file():
        run.curves = _read_json(d / "curves.json")
    return run


def load_runs(run_dir: str | os.PathLike) -> list[EvalRun]:
    """The evaluate outputs of a run directory: itself, or its subdirectories (name order)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise OSError(f"run directory {root} does not exist or is not a directory")
    if (root / RESULTS_FILE).is_file():
        return [load_run(root)]
    subs = sorted(p for p in root.iterdir() if p.is_dir() and (p / RESULTS_FILE).is_file())
    if not subs:
        raise ValueError(f"run directory {root} holds no {RESULTS_FILE} (nor does any subdirectory): "
                         f"run `ofdb-fast patchcore evaluate --out {root}` first")
    return [load_run(p) for p in subs]


# ---------------------------------------------------------------------------- small helpers
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, width: int | None = None, **data: str) -> str:
    attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in data.items())
    w = f' width="{width}"' if width else ""
    return f'<img src="{_data_uri(png)}" alt="{_e(alt)}"{w}{attrs}>'


def _fmt_metric(v: Any) -> str:
    return "–" if v is None else f"{float(v):.4f}"


def _fmt_value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _all_categories(runs: list[EvalRun]) -> list[str]:
    seen: dict[str, None] = {}
    for r in runs:
        for c in r.categories:
            seen.setdefault(c, None)
    return list(seen)


def _run_color(i: int) -> str:
    return plots.PALETTE[i % len(plots.PALETTE)]


# ---------------------------------------------------------------------------- sections
def _metrics_table(runs: list[EvalRun]) -> str:
    multi = len(runs) > 1
    cats = _all_categories(runs)
    head1 = ['<th rowspan="2" scope="col">category</th>' if multi else '<th scope="col">category</th>']
    head2 = []
    for m in METRICS:
        if multi:
            head1.append(f'<th colspan="{len(runs)}" scope="colgroup">{_e(METRIC_NAMES[m])}</th>')
            head2 += [f'<th scope="col" class="run"><span class="swatch" style="background:{_run_color(i)}">'
                      f'</span>{_e(r.name)}</th>' for i, r in enumerate(runs)]
        else:
            head1.append(f'<th scope="col">{_e(METRIC_NAMES[m])}</th>')
    thead = "<tr>" + "".join(head1) + "</tr>" + ("<tr>" + "".join(head2) + "</tr>" if multi else "")

    def row(label: str, get, cls: str = "") -> str:
        cells = [f'<th scope="row">{_e(label)}</th>']
        for m in METRICS:
            vals = [get(r, m) for r in runs]
            finite = [v for v in vals if v is not None]
            best = max(finite) if multi and finite else None
            for r, v in zip(runs, vals):
                mark = " best" if best is not None and v == best and len(finite) > 1 else ""
                cells.append(f'<td class="num{mark}" data-run="{_e(r.name)}" data-category="{_e(label)}" '
                             f'data-metric="{m}" data-value="{_e(repr(v))}">{_fmt_metric(v)}</td>')
        return f'<tr class="{cls}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>"

    body = [row(c, lambda r, m, c=c: r.results["categories"].get(c, {}).get(m)) for c in cats]
    foot = row("mean", lambda r, m: r.results.get("mean", {}).get(m), "mean")
    note = ('<p class="note">Best value per row in bold. Means are over each run\'s own categories.</p>'
            if multi else "")
    return (f'<table class="metrics" id="metrics-table"><thead>{thead}</thead><tbody>{"".join(body)}</tbody>'
            f"<tfoot>{foot}</tfoot></table>{note}")


def _image_roc_from_scores(run: EvalRun, cat: str) -> dict[str, list[float]] | None:
    from ..patchcore.metrics import image_roc_curve

    rows = [r for r in run.scores if r.get("category") == cat]
    labels = [int(r["label"]) for r in rows]
    if not rows or len(set(labels)) < 2:
        return None
    fpr, tpr = image_roc_curve(labels, [float(r["score"]) for r in rows])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _curve_figures(runs: list[EvalRun], cat: str) -> list[str]:
    figs = []
    specs = (("image_roc", "Image ROC", "false positive rate", "true positive rate", "tpr", "instance_auroc"),
             ("pixel_roc", "Pixel ROC", "false positive rate (pixels)", "true positive rate (pixels)", "tpr",
              "full_pixel_auroc"),
             ("pro", "PRO curve", "false positive rate (pixels)", "per-region overlap", "pro", "aupro"))
    for key, title, xl, yl, ykey, metric in specs:
        limit = 1.0
        plot = plots.Plot(title=f"{title}: {cat}", xlabel=xl, ylabel=yl, legend_loc="lower right")
        n_series = 0
        for i, r in enumerate(runs):
            curve = (r.curves or {}).get(cat, {}).get(key)
            if curve is None and key == "image_roc":
                curve = _image_roc_from_scores(r, cat)
            if curve is None:
                continue
            if key == "pro":
                limit = float((r.curves or {}).get(cat, {}).get("fpr_limit", 0.3))
            value = r.results["categories"].get(cat, {}).get(metric)
            label = f"{r.name}  {value:.3f}" if len(runs) > 1 and value is not None else (
                f"{METRIC_NAMES[metric]} {value:.3f}" if value is not None else r.name)
            plot.line(curve["fpr"], curve[ykey], color=_run_color(i), label=label)
            n_series += 1
        if not n_series:
            continue
        if key == "pro":
            plot.xlim = (0.0, limit)
            plot.title = f"PRO up to FPR {limit:g}: {cat}"
        else:
            plot.line([0, 1], [0, 1], color="#adb5bd", width=1.5, dashed=True)
            plot._items.insert(0, plot._items.pop())  # chance line under the data
        figs.append(f'<figure data-plot="{key}" data-category="{_e(cat)}">'
                    f'{_img(plot.png(), plot.title, plot.width)}</figure>')
    return figs


def _histogram_figures(runs: list[EvalRun], cat: str) -> list[str]:
    figs = []
    for r in runs:
        rows = [x for x in r.scores if x.get("category") == cat]
        if not rows:
            continue
        scores = np.array([float(x["score"]) for x in rows])
        labels = np.array([int(x["label"]) for x in rows])
        lo, hi = float(scores.min()), float(scores.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.04 * (hi - lo)
        n_bins = int(np.clip(2 * np.sqrt(scores.size), 8, 30))
        edges = np.linspace(lo - pad, hi + pad, n_bins + 1)
        good, bad = plots.histogram(scores[labels == 0], edges), plots.histogram(scores[labels == 1], edges)
        top = max(1, int(max(good.max(initial=0), bad.max(initial=0))))
        ticks = plots.nice_ticks(0, 1.15 * top, 4, min_step=1.0)
        step = ticks[1] - ticks[0]
        title = f"Image scores: {cat}" + (f" ({r.name})" if len(runs) > 1 else "")
        plot = plots.Plot(title=title, xlabel="image anomaly score", ylabel="images",
                          xlim=(float(edges[0]), float(edges[-1])), ylim=(0.0, step * np.ceil(1.15 * top / step)),
                          legend_loc="upper right", y_min_step=1.0)
        plot.bars(edges, good, color=plots.GOOD_COLOR, label=f"good ({int((labels == 0).sum())})")
        plot.bars(edges, bad, color=plots.DEFECT_COLOR, label=f"defect ({int((labels == 1).sum())})")
        figs.append(f'<figure data-plot="histogram" data-category="{_e(cat)}" data-run="{_e(r.name)}">'
                    f'{_img(plot.png(), title, plot.width)}</figure>')
    return figs


def _overlay_cases(run: EvalRun, cat: str) -> list[dict[str, Any]]:
    res = run.results["categories"].get(cat, {})
    if res.get("overlay_cases"):
        return list(res["overlay_cases"])
    cases = []  # older results: only paths "overlays/<cat>/[hard/]<kind>_<rank>_<type>_<stem>.png"
    for p in res.get("overlays", []):
        m = _OVERLAY_NAME.match(Path(p).stem)
        if m:
            kind, rank, rest = m.groups()
            cases.append({"path": p, "kind": kind, "rank": int(rank), "label": int(not rest.startswith("good_")),
                          "defect_type": rest.rsplit("_", 1)[0], "score": None})
    return cases


_OVERLAY_NAME = re.compile(r"^(high|low|hard_defect|hard_good)_(\d+)_(.+)$")
_GROUPS = (("Hardest defects (lowest-scored defect images)", "worst", lambda c: c["kind"] == "hard_defect"),
           ("Hardest good images (highest-scored good images)", "worst", lambda c: c["kind"] == "hard_good"),
           ("Clearest detections (highest-scored defect images)", "best",
            lambda c: c["kind"] == "high" and c["label"] == 1),
           ("Clearest good images (lowest-scored good images)", "best",
            lambda c: c["kind"] == "low" and c["label"] == 0))


def _gallery(run: EvalRun, cat: str) -> str:
    cases = _overlay_cases(run, cat)
    if not cases:
        return '<p class="note">No overlays were written (evaluate ran with <code>--n-overlays 0</code>).</p>'
    parts = []
    for title, tone, pick in _GROUPS:
        chosen = sorted((c for c in cases if pick(c)), key=lambda c: c["rank"])
        if not chosen:
            continue
        cards = []
        for c in chosen:
            f = run.path / c["path"]
            score = "" if c.get("score") is None else f" · score {c['score']:.4g}"
            caption = f"{c['defect_type']}{score}"
            if f.is_file():
                body = _img(f.read_bytes(), f"{cat} {c['defect_type']} ({c['kind']} {c['rank']})",
                            kind=c["kind"])
            else:
                body = f'<p class="missing">missing file {_e(c["path"])}</p>'
            cards.append(f'<figure class="case {tone}">{body}<figcaption>{_e(caption)}</figcaption></figure>')
        parts.append(f'<div class="group"><h4 class="{tone}">{_e(title)}</h4>'
                     f'<div class="cases">{"".join(cards)}</div></div>')
    if not parts:
        return '<p class="note">No overlays matched a gallery group.</p>'
    return f'<div class="groups">{"".join(parts)}</div>'


def _timings_table(runs: list[EvalRun]) -> str:
    cats = _all_categories(runs)
    head = "<tr><th scope=\"col\">category</th><th scope=\"col\">timing</th>" + "".join(
        f'<th scope="col">{_e(r.name)}</th>' for r in runs) + "</tr>"
    body = []
    for cat in cats + ["mean"]:
        rows = [t for t in TIMING_ROWS if cat != "mean" or t[0] in ("fit_seconds", "ms_per_image")]
        for j, (key, label, fmt) in enumerate(rows):
            first = f'<th scope="rowgroup" rowspan="{len(rows)}">{_e(cat)}</th>' if j == 0 else ""
            cells = []
            for r in runs:
                src = r.results.get("mean", {}) if cat == "mean" else r.results["categories"].get(cat, {})
                v = src.get(key)
                cells.append(f'<td class="num" data-run="{_e(r.name)}" data-category="{_e(cat)}" '
                             f'data-timing="{key}">{"–" if v is None else _e(fmt.format(v))}</td>')
            cls = ' class="group-start"' if j == 0 else ""
            body.append(f"<tr{cls}>{first}<td>{_e(label)}</td>{''.join(cells)}</tr>")
    return f'<table class="timings"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _extra_table(extra: dict[str, Any]) -> str:
    """Run-level facts from ``RUN_DIR/timings.json`` (render images/s, pretraining time, ...)."""
    if not extra:
        return ""
    rows = "".join(f'<tr><th scope="row">{_e(k)}</th><td class="num">{_e(_fmt_value(v))}</td></tr>'
                   for k, v in extra.items())
    return f'<h3>Run</h3><table class="config" id="run-timings"><tbody>{rows}</tbody></table><h3>Evaluate</h3>'


def _facts_table(runs: list[EvalRun]) -> str:
    """Configuration (and each run's own timings.json) as rows, one column per run; differing
    values marked."""
    rows: dict[str, list[Any]] = {}

    def put(key: str, i: int, value: Any) -> None:
        rows.setdefault(key, [None] * len(runs))[i] = value

    for i, r in enumerate(runs):
        doc = r.results
        put("device", i, doc.get("device"))
        put("data", i, doc.get("data"))
        put("saved model", i, doc.get("model"))
        put("ofdb_fast version", i, doc.get("ofdb_fast_version"))
        for k, v in (doc.get("config") or {}).items():
            put(k, i, v)
        for k, v in r.timings.items():
            put(k, i, v)
    head = '<tr><th scope="col">setting</th>' + "".join(f'<th scope="col">{_e(r.name)}</th>' for r in runs) + "</tr>"
    body = []
    for key, vals in rows.items():
        differs = len(runs) > 1 and len({json.dumps(v, sort_keys=True) for v in vals}) > 1
        cls = ' class="differs"' if differs else ""
        body.append(f'<tr{cls}><th scope="row">{_e(key)}</th>' + "".join(
            f"<td>{_e(_fmt_value(v))}</td>" for v in vals) + "</tr>")
    return f'<table class="config"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


# ---------------------------------------------------------------------------- page
_CSS = """
:root { --ink:#212529; --muted:#6c757d; --line:#dee2e6; --soft:#f8f9fa; --accent:#1c7ed6;
        --good:#2f9e44; --bad:#e03131; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header { padding: 28px 40px 18px; background: linear-gradient(135deg, #f1f3f5, #e7f5ff);
         border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 2px 0; color: var(--muted); }
nav { padding: 8px 40px; border-bottom: 1px solid var(--line); background: #fff; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; }
main { padding: 8px 40px 48px; max-width: 1400px; }
h2 { margin: 34px 0 10px; font-size: 21px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 24px 0 8px; font-size: 17px; }
h4 { margin: 16px 0 6px; font-size: 14px; text-transform: uppercase; letter-spacing: .04em; }
h4.worst { color: var(--bad); } h4.best { color: var(--good); }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 14px; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--soft); border-bottom: 2px solid var(--line); white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; }
tfoot tr.mean th, tfoot tr.mean td { border-top: 2px solid var(--ink); font-weight: 600; background: var(--soft); }
tr.group-start th, tr.group-start td { border-top: 2px solid var(--line); }
tr.differs th, tr.differs td { background: #fff9db; }
table.config td { max-width: 520px; overflow-wrap: anywhere; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; }
.figures figure { border: 1px solid var(--line); border-radius: 6px; padding: 6px; background: #fff; }
.figures img { display: block; max-width: 100%; height: auto; }
.groups { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); column-gap: 28px; }
.cases { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px; }
.case { border: 1px solid var(--line); border-radius: 6px; overflow: hidden; background: var(--soft); }
.case.worst { border-top: 3px solid var(--bad); } .case.best { border-top: 3px solid var(--good); }
.case img { display: block; width: 100%; height: auto; image-rendering: auto; background: #fff; }
.case figcaption { padding: 4px 8px; font-size: 13px; color: var(--muted); }
.missing { padding: 12px; color: var(--bad); }
section.category { margin-bottom: 20px; }
details { margin: 6px 0 14px; }
summary { cursor: pointer; font-weight: 600; }
code { background: var(--soft); padding: 0 4px; border-radius: 3px; }
footer { padding: 16px 40px 32px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); }
"""


def render_report(runs: list[EvalRun], *, title: str = "PatchCore report", run_dir: str = "",
                  extra_timings: dict[str, Any] | None = None) -> str:
    """The report page for loaded ``runs`` as one HTML5 string."""
    from .. import __version__

    cats = _all_categories(runs)
    multi = len(runs) > 1
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    runs_line = ", ".join(f'<span class="swatch" style="background:{_run_color(i)}"></span>{_e(r.name)}'
                          for i, r in enumerate(runs))
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<header><h1>{_e(title)}</h1>",
           f"<p>{_e(run_dir)} · {len(cats)} categor{'y' if len(cats) == 1 else 'ies'} · "
           f"{'runs' if multi else 'run'}: {runs_line}</p>",
           f"<p>generated {_e(when)} by ofdb_fast {_e(__version__)}</p></header>",
           '<nav><a href="#metrics">Metrics</a><a href="#curves">Curves and scores</a>'
           '<a href="#cases">Cases</a><a href="#timings">Timings</a><a href="#config">Configuration</a></nav>',
           "<main>",
           '<section id="metrics"><h2>Metrics</h2>', _metrics_table(runs),
           '<p class="note">Image AUROC ranks images by their score; pixel AUROC ranks all test pixels '
           "(defect images only in the third column); AUPRO is the per-region overlap integrated up to a "
           "pixel false positive rate of 0.3, normalised to [0, 1] (MVTec AD definition).</p></section>",
           '<section id="curves"><h2>Curves and scores</h2>']
    for cat in cats:
        figs = _curve_figures(runs, cat) + _histogram_figures(runs, cat)
        out.append(f'<section class="category" id="curves-{_e(cat)}"><h3>{_e(cat)}</h3>'
                   f'<div class="figures">{"".join(figs)}</div></section>')
    out.append("</section>")
    out.append('<section id="cases"><h2>Cases</h2><p class="note">Each overlay shows the test image, its '
               "ground-truth mask and the anomaly map over the image (blue low, red high; one colour scale "
               "per category and run; the mask outline in white).</p>")
    for cat in cats:
        out.append(f'<section class="category" id="cases-{_e(cat)}"><h3>{_e(cat)}</h3>')
        for r in runs:
            if cat not in r.categories:
                continue
            gallery = _gallery(r, cat)
            out.append(f"<details open><summary>{_e(r.name)}</summary>{gallery}</details>" if multi else gallery)
        out.append("</section>")
    out.append("</section>")
    out.append('<section id="timings"><h2>Timings</h2>' + _extra_table(extra_timings or {}) + _timings_table(runs) +
               '<p class="note">Scoring time is model compute per test image; "incl. decoding" adds image '
               "loading and preprocessing.</p></section>")
    out.append('<section id="config"><h2>Configuration</h2>' + _facts_table(runs) +
               "</section>")
    out.append("</main>")
    out.append(f"<footer>Written by <code>ofdb-fast report</code>. Sources: "
               f"{', '.join(_e(str(r.path)) for r in runs)}.</footer>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, overwrite: bool = False,
                 title: str | None = None) -> Path:
    """Write the report of ``run_dir`` (default ``run_dir/report.html``) atomically.

    Args:
        run_dir: one evaluate output, or a directory of several (side by side).
        out: the HTML file to write.
        overwrite: replace an existing ``out``.
        title: page title (default ``"PatchCore report: <run_dir name>"``).

    Returns:
        The path written.

    Raises:
        OSError: ``out`` exists and ``overwrite`` is false, or ``run_dir`` is missing.
        ValueError: ``run_dir`` holds no evaluate result, or a file in it is malformed.

    Example:
        >>> write_report("runs/demo")  # doctest: +SKIP
        PosixPath('runs/demo/report.html')
    """
    root = Path(run_dir)
    runs = load_runs(root)
    target = Path(out) if out is not None else root / DEFAULT_NAME
    refuse_overwrite(target, overwrite, "report")
    if target.is_dir():
        raise OSError(f"report {target} is a directory; give a file name with --out")
    extra = _read_timings(root) if len(runs) > 1 else {}
    page = render_report(runs, title=title or f"PatchCore report: {root.resolve().name}", run_dir=str(root),
                         extra_timings=extra)
    atomic_write_text(target, page, makedirs=True)  # 0o644-style permissions: a report is meant to be shared
    return target
