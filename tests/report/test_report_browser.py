"""The report renders in a real browser: headless Chromium screenshot (skipped without Chromium)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ofdb_fast.cli import main
from ofdb_fast.synth import make_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SMALL = ["--backbone", "resnet18", "--weights", "random", "--resize", "64", "--imagesize", "64",
         "--layers", "layer1,layer2", "--pretrain-embed-dimension", "64", "--target-embed-dimension", "64",
         "--device", "cpu", "--quiet", "--batch-size", "4"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_screenshot_is_not_blank(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    make_dataset(data, categories=["washer"], size=64, n_train=3, n_test_good=2, n_test_defect=1)
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert main(["patchcore", "evaluate", "--data", str(data), "--out", str(out), "--n-overlays", "1",
                     "--report"] + SMALL) == 0
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.shape == (2000, 1280, 3)
    # Non-blank: ink on many rows (text, tables, charts, overlays), and many distinct colours
    # (the embedded PNGs decoded; an unstyled or image-less page has far fewer).
    ink = (np.abs(img - 255).sum(axis=-1) > 60)
    assert ink.any(axis=1).mean() > 0.3, f"only {ink.any(axis=1).mean():.2f} of rows have content"
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0).shape[0]
    assert colours > 500, f"only {colours} distinct colours"
    # The heat-map overlays are there: saturated reds and blues of the colour ramp.
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((r > 180) & (g < 80) & (b < 80)).sum() > 50 or ((b > 150) & (r < 60)).sum() > 200
