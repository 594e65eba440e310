"""``ofdb-fast patchcore fit | predict | evaluate`` on a tiny synthetic dataset (random resnet18)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ofdb_fast.cli import main
from ofdb_fast.synth import make_dataset

SMALL = ["--backbone", "resnet18", "--weights", "random", "--resize", "64", "--imagesize", "64",
         "--layers", "layer1,layer2", "--pretrain-embed-dimension", "64", "--target-embed-dimension", "64",
         "--device", "cpu", "--quiet", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    make_dataset(root, categories=["weave", "washer"], size=64, n_train=3, n_test_good=2, n_test_defect=1)
    return root


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert main(["patchcore", "fit", "--data", str(data), "--out", str(out)] + SMALL) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_one_model_per_category(models, capsys):
    assert sorted(p.name for p in models.iterdir()) == ["washer", "weave"]
    meta = json.loads((models / "weave" / "config.json").read_text())
    assert meta["config"]["backbone"] == "resnet18" and meta["fit_info"]["category"] == "weave"
    assert meta["fit_info"]["n_train_images"] == 3


def test_fit_refuses_existing_models(data, models, capsys):
    code = main(["patchcore", "fit", "--data", str(data), "--category", "weave", "--out", str(models)] + SMALL)
    assert code == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err


def test_evaluate_with_saved_models(data, models, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["patchcore", "evaluate", "--data", str(data), "--model", str(models), "--out", str(out),
                 "--n-overlays", "2"] + SMALL)
    assert code == 0
    printed = capsys.readouterr().out
    assert "instance_auroc" in printed and "mean" in printed
    doc = json.loads((out / "results.json").read_text())
    assert sorted(doc["categories"]) == ["washer", "weave"]
    weave = doc["categories"]["weave"]
    for key in ("instance_auroc", "full_pixel_auroc", "anomaly_pixel_auroc", "aupro"):
        assert 0.0 <= weave[key] <= 1.0
        assert doc["mean"][key] == pytest.approx((weave[key] + doc["categories"]["washer"][key]) / 2)
    assert weave["n_test"] == 2 + 4 and weave["n_defect"] == 4 and weave["ms_per_image"] > 0
    assert weave["fit_seconds"] > 0
    table = _rows(out / "results.csv")
    assert [r["category"] for r in table] == ["weave", "washer", "mean"] or \
        [r["category"] for r in table] == ["washer", "weave", "mean"]
    scores = _rows(out / "scores.csv")
    assert len(scores) == 12 and {r["label"] for r in scores} == {"0", "1"}
    assert all(Path(r["path"]).is_file() for r in scores)
    # F1-max operating points: the image threshold is the category's F1-optimal score.
    from ofdb_fast.patchcore.metrics import f1_max

    cat = [r for r in scores if r["category"] == "weave"]
    best = f1_max([int(r["label"]) for r in cat], [float(r["score"]) for r in cat])
    assert weave["image_f1_max"] == pytest.approx(best["f1"]) and 0 < weave["pixel_f1_max"] <= 1
    assert weave["image_threshold"] == pytest.approx(best["threshold"], rel=1e-7)  # CSV scores have 8 digits
    by_cat = {r["category"]: r for r in table}
    assert float(by_cat["weave"]["image_threshold"]) == weave["image_threshold"]  # full precision
    assert by_cat["mean"]["image_threshold"] == "-" and "image_f1_max" in printed
    pngs = sorted((out / "overlays" / "weave").glob("*.png"))
    assert len(pngs) == 4 and {p.name.split("_")[0] for p in pngs} == {"high", "low"}
    from PIL import Image

    assert Image.open(pngs[0]).size == (3 * 64 + 2 * 4, 64)
    # Refuses to overwrite results.
    assert main(["patchcore", "evaluate", "--data", str(data), "--model", str(models), "--out", str(out)]
                + SMALL) == 2


def test_evaluate_fit_on_the_fly_without_masks(data, tmp_path):
    out = tmp_path / "eval"
    with pytest.warns(UserWarning):
        code = main(["patchcore", "evaluate", "--data", str(data), "--category", "weave", "--no-masks",
                     "--out", str(out), "--n-overlays", "0", "--save-models"] + SMALL)
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["categories"]["weave"]["full_pixel_auroc"] is None
    assert doc["categories"]["weave"]["instance_auroc"] is not None
    assert doc["categories"]["weave"]["pixel_f1_max"] is None and doc["mean"]["pixel_f1_max"] is None
    assert 0 < doc["categories"]["weave"]["image_f1_max"] <= 1
    assert (out / "models" / "weave" / "model.safetensors").is_file()


def test_predict(data, models, tmp_path):
    out = tmp_path / "pred"
    images = sorted((data / "weave" / "test").rglob("*.png"))
    code = main(["patchcore", "predict", "--model", str(models / "weave"), str(images[0]),
                 str(data / "weave" / "test" / "good"), "--out", str(out)] + SMALL[-5:])
    assert code == 0
    rows = _rows(out / "scores.csv")
    assert len(rows) == 1 + 2
    m = np.load(out / rows[0]["map"])
    assert m.shape == (64, 64) and m.dtype == np.float32 and float(rows[0]["score"]) > 0
    assert (out / rows[0]["map"]).with_suffix(".png").is_file()
    assert set(rows[0]) == {"path", "score", "map"}


def test_predict_with_thresholds(data, models, tmp_path, capsys):
    from PIL import Image

    images = sorted((data / "weave" / "test").rglob("*.png"))
    first = _rows(_predict(models, images, tmp_path / "p0"))
    scores = sorted(float(r["score"]) for r in first)
    cut = scores[len(scores) // 2]  # a score of the set: ">=" must flag it
    m0 = np.load(tmp_path / "p0" / first[0]["map"])
    pixel_cut = float(np.median(m0))
    rows = _rows(_predict(models, images, tmp_path / "p1", "--threshold", str(cut),
                          "--pixel-threshold", repr(pixel_cut)))
    assert [r["score"] for r in rows] == [r["score"] for r in first]
    assert [r["anomalous"] for r in rows] == [str(int(float(r["score"]) >= cut)) for r in rows]
    assert f"{sum(float(r['score']) >= cut for r in rows)} of {len(rows)} images scored >= " in capsys.readouterr().out
    mask = np.asarray(Image.open(tmp_path / "p1" / rows[0]["mask"]))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, np.load(tmp_path / "p1" / rows[0]["map"]) >= pixel_cut)
    for bad in ("nan", "inf"):
        assert main(["patchcore", "predict", "--model", str(models / "weave"), str(images[0]), "--out",
                     str(tmp_path / "p2"), "--threshold", bad]) == 2
        assert "--threshold must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists()


def _predict(models, images, out, *extra):
    assert main(["patchcore", "predict", "--model", str(models / "weave"), *map(str, images), "--out", str(out),
                 *extra] + SMALL[-5:]) == 0
    return out / "scores.csv"


def test_user_errors(data, models, tmp_path, capsys):
    assert main(["patchcore", "fit", "--data", str(data), "--category", "nope", "--out", str(tmp_path / "m")]
                + SMALL) == 2
    assert "--category ['nope'] not found" in capsys.readouterr().err
    assert main(["patchcore", "predict", "--model", str(models), str(data), "--out", str(tmp_path / "p")]) == 2
    assert "pick one" in capsys.readouterr().err
    assert main(["patchcore", "predict", "--model", str(models / "weave"), str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "p2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["patchcore", "fit", "--data", str(data), "--out", str(tmp_path / "m2"), "--backbone", "vgg"]) == 2
    assert "backbone must be one of" in capsys.readouterr().err
    assert main(["patchcore"]) == 2


def test_overlay_panel_layout():
    from ofdb_fast.patchcore.overlays import GAP, colorize, overlay_panel

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    image = np.zeros((3, 6, 5), np.float32)  # de-normalises to grey 0.5 -> 128
    mask = np.zeros((6, 5), bool)
    mask[2:5, 1:4] = True
    amap = np.linspace(0, 1, 30, dtype=np.float32).reshape(6, 5)
    panel = overlay_panel(image, mask, amap, mean=mean, std=std, vmin=0.0, vmax=1.0)
    assert panel.shape == (6, 3 * 5 + 2 * GAP, 3) and panel.dtype == np.uint8
    assert np.all(panel[:, :5] == 128)
    assert np.array_equal(panel[:, 5 + GAP: 10 + GAP, 0] == 255, mask)
    assert np.array_equal(panel[3, 2 * (5 + GAP) + 2], np.round(0.5 * 128 + 0.5 * colorize(amap, 0, 1)[3, 2]))
    ends = colorize(np.array([[-1.0, 0.0, 1.0, 2.0]]), 0.0, 1.0)[0]
    assert np.array_equal(ends[0], ends[1]) and np.array_equal(ends[2], ends[3])  # clipped
    assert not np.array_equal(ends[1], ends[2])
    assert np.all(colorize(np.ones((2, 2)), 1.0, 1.0) == colorize(np.zeros((1, 1)), 0.0, 1.0)[0, 0])
    with pytest.raises(ValueError, match="amap must have the image's size"):
        overlay_panel(image, None, amap[:5], mean=mean, std=std, vmin=0.0, vmax=1.0)


def test_backbone_weights_is_an_alias_of_weights():
    from ofdb_fast.cli import build_parser

    args = build_parser().parse_args(
        ["patchcore", "fit", "--data", "d", "--out", "o", "--backbone-weights", "backbone.safetensors"])
    assert args.weights == "backbone.safetensors"


# ---------------------------------------------------------------------------- --resume
def test_fit_resume_keeps_finished_categories(data, tmp_path, capsys):
    out = tmp_path / "models"
    with pytest.warns(UserWarning):
        assert main(["patchcore", "fit", "--data", str(data), "--category", "weave", "--out", str(out)] + SMALL) == 0
    weave_bytes = (out / "weave" / "model.safetensors").read_bytes()
    (out / "washer").mkdir()
    (out / "washer" / "model.safetensors").write_bytes(b"half a save")  # interrupted before config.json
    capsys.readouterr()
    with pytest.warns(UserWarning):
        assert main(["patchcore", "fit", "--data", str(data), "--out", str(out), "--resume"] + SMALL) == 0
    printed = capsys.readouterr().out
    assert "weave: already fitted" in printed and "washer: memory bank" in printed
    assert (out / "weave" / "model.safetensors").read_bytes() == weave_bytes
    assert (out / "washer" / "config.json").is_file()
    # Other settings than the saved models': refused before any work, naming the setting.
    with pytest.warns(UserWarning):
        assert main(["patchcore", "fit", "--data", str(data), "--out", str(out), "--resume",
                     "--coreset-percentage", "0.2"] + SMALL) == 2
    assert "fitted with other settings (coreset_percentage)" in capsys.readouterr().err
    assert main(["patchcore", "fit", "--data", str(data), "--out", str(out), "--resume", "--overwrite"] + SMALL) == 2
    assert "--resume and --overwrite cannot be used together" in capsys.readouterr().err


def test_fit_resume_refuses_foreign_files(data, tmp_path, capsys):
    out = tmp_path / "models"
    (out / "weave").mkdir(parents=True)
    (out / "weave" / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning):
        assert main(["patchcore", "fit", "--data", str(data), "--out", str(out), "--resume"] + SMALL) == 2
    assert "holds notes.txt, which a PatchCore save does not write" in capsys.readouterr().err
    assert (out / "weave" / "notes.txt").read_text() == "mine"


def test_evaluate_resume_after_an_interruption(data, models, tmp_path, capsys, monkeypatch):
    from ofdb_fast.patchcore.model import PatchCore

    out = tmp_path / "eval"
    args = ["patchcore", "evaluate", "--data", str(data), "--model", str(models), "--out", str(out),
            "--n-overlays", "1"] + SMALL
    assert main(args) == 0
    complete = json.loads((out / "results.json").read_text())
    second = sorted(complete["categories"])[1]

    # The same run, interrupted while scoring the second category.
    out2 = tmp_path / "eval2"
    args2 = [a if a != str(out) else str(out2) for a in args]
    calls = []
    real = PatchCore.predict_dataset

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(PatchCore, "predict_dataset", interrupted)
    assert main(args2) == 130  # Ctrl-C
    monkeypatch.setattr(PatchCore, "predict_dataset", real)
    assert not (out2 / "results.json").exists() and not (out2 / "categories" / f"{second}.json").exists()
    capsys.readouterr()
    assert main(args2) == 2  # not empty: needs --resume (or --overwrite)
    assert "pass --resume to continue" in capsys.readouterr().err
    assert main(args2 + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "finished earlier (--resume)" in printed and printed.count("finished earlier") == 1
    resumed = json.loads((out2 / "results.json").read_text())
    for cat in complete["categories"]:
        for key in ("instance_auroc", "full_pixel_auroc", "aupro", "image_f1_max", "image_threshold"):
            assert resumed["categories"][cat][key] == complete["categories"][cat][key]
    assert len(_rows(out2 / "scores.csv")) == len(_rows(out / "scores.csv"))
    # Other settings than the finished categories': refused, naming the setting.
    assert main(args2 + ["--resume", "--no-masks"]) == 2
    assert "made with other settings (no_masks)" in capsys.readouterr().err
    first = sorted(complete["categories"])[0]
    (out2 / "categories" / f"{first}.json").write_text("{")
    assert main(args2 + ["--resume"]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    # A non-empty --out that evaluate did not write is not resumed into.
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text("mine")
    assert main([a if a != str(out) else str(other) for a in args] + ["--resume"]) == 2
    assert "was not written by patchcore evaluate" in capsys.readouterr().err
    assert (other / "results.json").read_text() == "mine"
