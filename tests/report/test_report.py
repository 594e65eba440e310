"""``ofdb-fast report``: the HTML report of tiny evaluate runs (synthetic data, random resnet18)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ofdb_fast.cli import main
from ofdb_fast.patchcore.metrics import curves, image_auroc, image_roc_curve
from ofdb_fast.report import load_runs, write_report
from ofdb_fast.report.plots import PALETTE, Plot, nice_ticks, tick_label
from ofdb_fast.synth import make_dataset

SMALL = ["--backbone", "resnet18", "--weights", "random", "--resize", "64", "--imagesize", "64",
         "--layers", "layer1,layer2", "--pretrain-embed-dimension", "64", "--target-embed-dimension", "64",
         "--device", "cpu", "--quiet", "--batch-size", "4"]
METRICS = ("instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base", "embed", "track"}


class Page(HTMLParser):
    """Collects the tags a test needs and checks that non-void elements nest and close."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[dict] = []
        self.cells: list[dict] = []
        self.figures: list[dict] = []
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self._cell: dict | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a)
        elif tag == "figure" and "data-plot" in a:
            self.figures.append(a)
        elif tag == "td" and "data-metric" in a:
            self._cell = dict(a, text="")
            self.cells.append(self._cell)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """runs/eval_a (two categories, ``--report``) and runs/eval_b (one category, another seed)."""
    base = tmp_path_factory.mktemp("report")
    data = base / "data"
    make_dataset(data, categories=["weave", "washer"], size=64, n_train=3, n_test_good=2, n_test_defect=1)
    runs = base / "runs"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert main(["patchcore", "evaluate", "--data", str(data), "--out", str(runs / "eval_a"),
                     "--n-overlays", "1", "--report"] + SMALL) == 0
        assert main(["patchcore", "evaluate", "--data", str(data), "--category", "weave", "--seed", "1",
                     "--out", str(runs / "eval_b"), "--n-overlays", "1"] + SMALL) == 0
    (runs / "timings.json").write_text(json.dumps({"render_images_per_s": 812.5, "pretrain": {"seconds": 180.25}}))
    return runs


def _page(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert not page.errors, page.errors[:5]
    return text, page


def _decode_png(src: str):
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    raw = base64.b64decode(src[len(prefix):], validate=True)
    img = Image.open(io.BytesIO(raw))
    img.verify()  # raises on a truncated or corrupt PNG
    img = Image.open(io.BytesIO(raw))
    assert img.format == "PNG"
    return img


def test_evaluate_report_flag_writes_a_report_with_the_computed_metrics(run_dir):
    report = run_dir / "eval_a" / "report.html"
    assert report.is_file()
    _, page = _page(report)
    results = json.loads((run_dir / "eval_a" / "results.json").read_text())
    got = {(c["data-category"], c["data-metric"]): c for c in page.cells if c["data-run"] == "eval_a"}
    expected = {(cat, m): r[m] for cat, r in results["categories"].items() for m in METRICS}
    expected.update({("mean", m): results["mean"][m] for m in METRICS})
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert float(got[key]["data-value"]) == value  # repr round-trips the float exactly
        assert got[key]["text"] == f"{value:.4f}"


def test_every_image_is_an_embedded_valid_png(run_dir):
    text, page = _page(run_dir / "eval_a" / "report.html")
    assert page.imgs
    sizes = []
    for img in page.imgs:
        sizes.append(_decode_png(img["src"]).size)
        assert img.get("alt")
    results = json.loads((run_dir / "eval_a" / "results.json").read_text())
    n_overlays = sum(len(r["overlay_cases"]) for r in results["categories"].values())
    kinds = {(c["kind"], c["label"]) for r in results["categories"].values() for c in r["overlay_cases"]}
    # Gallery: hardest cases always; "high"/"low" only when they are a defect / a good image.
    n_gallery = n_overlays - sum(1 for r in results["categories"].values() for c in r["overlay_cases"]
                                 if (c["kind"], c["label"]) in {("high", 0), ("low", 1)})
    assert ("hard_defect", 1) in kinds and ("hard_good", 0) in kinds
    assert len(page.imgs) == 2 * (3 + 1) + n_gallery  # per category: 3 curves + 1 histogram
    overlay_size = (3 * 64 + 2 * 4, 64)
    assert sizes.count(overlay_size) == n_gallery
    # No other resource is referenced: the file is self-contained and needs no JavaScript.
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert 'src="data:image/png;base64,' in text and "url(" not in text


def test_curves_and_histograms_for_every_category(run_dir):
    _, page = _page(run_dir / "eval_a" / "report.html")
    for cat in ("weave", "washer"):
        plots = {f["data-plot"] for f in page.figures if f["data-category"] == cat}
        assert plots == {"image_roc", "pixel_roc", "pro", "histogram"}


def test_html5_document(run_dir):
    text, page = _page(run_dir / "eval_a" / "report.html")
    assert text.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert '<meta charset="utf-8">' in text and "<title>" in text
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    assert {"header", "main", "table", "thead", "tfoot", "figure", "style"} <= page.tags


def test_side_by_side_runs(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    text, page = _page(run_dir / "report.html")
    assert [r.name for r in load_runs(run_dir)] == ["eval_a", "eval_b"]
    for name in ("eval_a", "eval_b"):
        results = json.loads((run_dir / name / "results.json").read_text())
        for cat, r in results["categories"].items():
            for m in METRICS:
                key = (name, cat, m)
                cell = [c for c in page.cells if (c["data-run"], c["data-category"], c["data-metric"]) == key]
                assert len(cell) == 1 and float(cell[0]["data-value"]) == r[m]
    # washer was not evaluated in eval_b: an empty cell, not a made-up number.
    cell = [c for c in page.cells if (c["data-run"], c["data-category"]) == ("eval_b", "washer")]
    assert len(cell) == len(METRICS) and all(c["data-value"] == "None" and c["text"] == "–" for c in cell)
    # One histogram per run and category; each curve plot shows both runs where both exist.
    hists = {(f["data-category"], f.get("data-run")) for f in page.figures if f["data-plot"] == "histogram"}
    assert hists == {("weave", "eval_a"), ("weave", "eval_b"), ("washer", "eval_a")}
    for img in page.imgs:
        _decode_png(img["src"])
    # Extra run facts from RUN_DIR/timings.json (nested keys flattened).
    assert "render_images_per_s" in text and "812.5" in text and "pretrain.seconds" in text
    # Refuses to replace the report without --overwrite, then replaces it.
    assert main(["report", str(run_dir)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--overwrite", "--title", "Two <runs>"]) == 0
    assert "<title>Two &lt;runs&gt;</title>" in (run_dir / "report.html").read_text()


def test_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no results.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    (tmp_path / "bad" / "results.json").write_text("[]")
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "must hold an evaluate result" in capsys.readouterr().err


def test_older_outputs_without_curves_or_cases(run_dir, tmp_path):
    """An evaluate output from before curves.json/overlay_cases still gets a report."""
    old = tmp_path / "old"
    shutil.copytree(run_dir / "eval_a", old)
    (old / "curves.json").unlink()
    (old / "report.html").unlink()
    doc = json.loads((old / "results.json").read_text())
    for r in doc["categories"].values():
        del r["overlay_cases"]
    (old / "results.json").write_text(json.dumps(doc))
    path = write_report(old, tmp_path / "sub" / "r.html")
    _, page = _page(path)
    assert {f["data-plot"] for f in page.figures} == {"image_roc", "histogram"}
    assert any(i.get("data-kind") == "hard_defect" for i in page.imgs)
    for img in page.imgs:
        _decode_png(img["src"])


def test_curves_json_matches_the_metrics(run_dir):
    results = json.loads((run_dir / "eval_a" / "results.json").read_text())
    saved = json.loads((run_dir / "eval_a" / "curves.json").read_text())
    for cat, r in results["categories"].items():
        c = saved[cat]
        # Image ROC: every distinct threshold (tiny N, nothing thinned): the area is the AUROC.
        assert np.trapezoid(c["image_roc"]["tpr"], c["image_roc"]["fpr"]) == pytest.approx(r["instance_auroc"],
                                                                                          abs=1e-6)
        # Pixel curves are thinned to ~300 of their 2**16 bin-edge points; the area changes by
        # at most 2e-3 here (measured 4e-4 worst over these runs).
        assert np.trapezoid(c["pixel_roc"]["tpr"], c["pixel_roc"]["fpr"]) == pytest.approx(
            r["full_pixel_auroc"], abs=2e-3)
        assert c["pro"]["fpr"][-1] == c["fpr_limit"] == 0.3
        area = np.trapezoid(c["pro"]["pro"], c["pro"]["fpr"]) / c["fpr_limit"]
        assert area == pytest.approx(r["aupro"], abs=2e-3)
        for x, y in ((c["pixel_roc"]["fpr"], c["pixel_roc"]["tpr"]), (c["pro"]["fpr"], c["pro"]["pro"])):
            assert x[0] == 0.0 and y[0] == 0.0 and np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)


def test_image_roc_curve_ties_and_area():
    fpr, tpr = image_roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9])
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.5, 1.0])  # the tie is one diagonal step
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == image_auroc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == 0.875
    with pytest.raises(ValueError, match="labels must contain both classes"):
        image_roc_curve([1, 1], [0.1, 0.2])


def test_curves_thinning_keeps_points_on_the_curve():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = rng.random(2000) + labels
    full = image_roc_curve(labels, scores)
    thin = curves(labels, scores, n_points=50)["image_roc"]
    assert 40 <= len(thin["fpr"]) <= 52
    pairs = set(zip(np.round(full[0], 7).tolist(), np.round(full[1], 7).tolist()))
    assert set(zip(thin["fpr"], thin["tpr"])) <= pairs
    assert (thin["fpr"][0], thin["tpr"][0], thin["fpr"][-1], thin["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_nice_ticks_and_labels():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 0.3) == [0.0, 0.1, 0.2, 0.3]
    assert nice_ticks(1.234, 5.1) == [2.0, 3.0, 4.0, 5.0]
    assert nice_ticks(0.0, 2.3, 4, min_step=1.0) == [0.0, 1.0, 2.0]
    assert nice_ticks(3.0, 3.0) == [3.0]
    assert [tick_label(v, 0.25) for v in (0.0, 0.25)] == ["0.00", "0.25"]
    assert tick_label(10.0, 5.0) == "10" and tick_label(0.1, 0.1) == "0.1"


def test_plot_png_is_drawn_at_the_requested_size():
    from PIL import Image

    p = Plot(title="t", xlabel="x", ylabel="y", width=200, height=150, scale=2)
    p.line([0, 0.5, 1], [0, 0.8, 1], color=PALETTE[0], label="a")
    p.bars([0.0, 0.5, 1.0], [0.2, 0.6], color=PALETTE[1], label="b")
    img = np.asarray(Image.open(io.BytesIO(p.png())).convert("RGB"))
    assert img.shape == (300, 400, 3)
    blue = np.array([int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(img.astype(int) - blue).sum(axis=-1) < 40).sum() > 100  # the line is there
    with pytest.raises(ValueError, match="edges must have len"):
        p.bars([0, 1], [1, 2], color=PALETTE[0])
    with pytest.raises(ValueError, match="x and y must be 1-D"):
        p.line([0, 1], [0], color=PALETTE[0])
    with pytest.raises(ValueError, match="xlim and ylim must be increasing"):
        Plot(xlim=(1, 1)).png()

