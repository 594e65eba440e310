"""``ofdb-fast demo --quick``: the run directory a newcomer gets, and the --out safety rules.

The quick preset is far too small for any fractal-vs-random property (the full demo's measured
numbers are in ``ofdb_fast.demo``'s docstring); these tests check what the run produces, that
the two evaluations differ only in the weights, determinism by seed, and the --out rules.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from ofdb_fast import cli
from ofdb_fast.patchcore.cli import METRICS

pytest.importorskip("torch")


def _run(capsys, *argv):
    code = cli.main(["demo", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # capsys is function-scoped
        code = cli.main(["demo", "--quick", "--out", str(out), "--no-progress", "--seed", "3"])
    return out, code, buf.getvalue()


def test_quick_run_writes_everything(quick_run):
    out, code, printed = quick_run
    assert code == 0
    assert (out / "report.html").is_file()
    assert (out / "pretrain" / "backbone.safetensors").is_file()
    assert (out / "pretrain" / "metrics.jsonl").is_file()
    cats = sorted(p.name for p in (out / "synth").iterdir() if p.is_dir())
    assert len(cats) >= 2
    for run in ("fractal", "random"):
        doc = json.loads((out / f"eval_{run}" / "results.json").read_text())
        assert sorted(doc["categories"]) == cats
        for cat, res in doc["categories"].items():
            for m in METRICS:
                assert isinstance(res[m], float) and 0.0 <= res[m] <= 1.0, (run, cat, m)
        assert all(isinstance(doc["mean"][m], float) for m in METRICS)
    fractal = json.loads((out / "eval_fractal" / "results.json").read_text())["config"]
    random = json.loads((out / "eval_random" / "results.json").read_text())["config"]
    assert random["weights"] == "random" and fractal["weights"].endswith("backbone.safetensors")
    # Same everything except the weights: the comparison is honest.
    assert {k: v for k, v in fractal.items() if k != "weights"} == {k: v for k, v in random.items() if k != "weights"}


def test_quick_run_timings(quick_run):
    out, _, _ = quick_run
    t = json.loads((out / "timings.json").read_text())
    assert t["render"]["images"] > 0 and t["render"]["images_per_s"] > 0
    assert t["pretrain"]["steps"] > 0 and t["pretrain"]["seconds"] > 0 and t["pretrain"]["images_per_s"] > 0
    for run in ("fractal", "random"):
        assert t["evaluate"][run]["fit_seconds_mean"] > 0 and t["evaluate"][run]["ms_per_image_mean"] > 0
    html = (out / "report.html").read_text()
    assert 'id="run-timings"' in html and "render.images_per_s" in html
    assert 'data-run="eval_fractal"' in html and 'data-run="eval_random"' in html


def test_quick_run_prints_table(quick_run):
    out, _, printed = quick_run
    assert re.search(r"images/s", printed)
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("category") and "(fractal)" in line)
    header = lines[start]
    assert "image AUROC (fractal)" in header and "image AUROC (random)" in header
    cats = sorted(p.name for p in (out / "synth").iterdir() if p.is_dir())
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("mean, fractal vs random"):
            break
        if not line.startswith("-"):
            rows[line.split()[0]] = line.split()[1:]
    assert sorted(rows) == sorted(cats + ["mean"])
    assert all(len(v) == 6 for v in rows.values())
    mean = json.loads((out / "eval_random" / "results.json").read_text())["mean"]["instance_auroc"]
    assert rows["mean"][1] == f"{mean:.4f}"
    assert printed.rstrip().endswith(f"report: {out / 'report.html'}")


def test_rerun_needs_overwrite_and_is_deterministic(quick_run, capsys):
    out, _, _ = quick_run
    before = {run: json.loads((out / f"eval_{run}" / "results.json").read_text()) for run in ("fractal", "random")}
    code, _, err = _run(capsys, "--quick", "--out", str(out), "--no-progress", "--seed", "3")
    assert code == 2 and "previous demo run; pass --overwrite" in err
    code, _, err = _run(capsys, "--quick", "--out", str(out), "--no-progress", "--seed", "3", "--overwrite")
    assert code == 0, err
    for run in ("fractal", "random"):
        after = json.loads((out / f"eval_{run}" / "results.json").read_text())
        for cat in before[run]["categories"]:
            for m in METRICS:
                assert after["categories"][cat][m] == before[run]["categories"][cat][m], (run, cat, m)


def test_refuses_foreign_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "--quick", "--out", str(tmp_path), "--overwrite")
    assert code == 2 and "holds no previous demo run" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_refuses_foreign_files_in_a_demo_run(tmp_path, capsys):
    (tmp_path / "demo.json").write_text("{}")
    (tmp_path / "mine.csv").write_text("keep")
    code, _, err = _run(capsys, "--quick", "--out", str(tmp_path), "--overwrite")
    assert code == 2 and "mine.csv" in err
    assert (tmp_path / "mine.csv").read_text() == "keep"


def test_refuses_a_file_as_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = _run(capsys, "--quick", "--out", str(target))
    assert code == 2 and "not a directory" in err


def test_rejects_negative_seed(tmp_path, capsys):
    code, _, err = _run(capsys, "--quick", "--out", str(tmp_path / "x"), "--seed", "-1")
    assert code == 2 and "--seed must be >= 0" in err
