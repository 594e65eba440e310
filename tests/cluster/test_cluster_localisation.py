"""Ground-truth diagnostics of the weighting: mask coverage of the patch grid, the ``mask``
weighting, ``alpha_on_defect``, and their place in the pipeline and the CLI."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from ofdb_fast.cli import main
from ofdb_fast.cluster.localisation import alpha_localisation, defect_coverage, mask_alpha
from ofdb_fast.patchcore.data import Preprocess
from ofdb_fast.synth import make_dataset

from test_cluster_cli import CLI_SMALL, SMALL  # the same small random-weight feature path


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        yield


def _mask_file(path, mask):
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)
    return str(path)


def test_coverage_is_the_area_fraction_of_each_cell(tmp_path):
    # 16 x 16 image, no resize / crop, a 4 x 4 grid of 4 x 4 px cells.
    m = np.zeros((16, 16), bool)
    m[0:4, 0:4] = True  # cell (0, 0) full
    m[4:6, 8:12] = True  # cell (1, 2) half
    m[15, 15] = True  # cell (3, 3): one pixel of 16
    pre = Preprocess(resize=16, imagesize=16)
    cov = defect_coverage([_mask_file(tmp_path / "a.png", m), None], pre, 16)
    expect = np.zeros(16)
    expect[0], expect[1 * 4 + 2], expect[15] = 1.0, 0.5, 1 / 16
    np.testing.assert_allclose(cov[0], expect, atol=1e-6)
    np.testing.assert_array_equal(cov[1], np.zeros(16))


def test_coverage_follows_the_images_resize_and_crop(tmp_path):
    # 40 x 20 (H x W) mask, defect in the top quarter: Resize(20) keeps it 40 x 20 and
    # CenterCrop(20) keeps rows 10..29, so the defect (rows 0..9) is cropped away entirely,
    # while a defect in rows 10..14 covers the top quarter of the crop.
    top = np.zeros((40, 20), bool)
    top[0:10] = True
    mid = np.zeros((40, 20), bool)
    mid[10:15] = True
    pre = Preprocess(resize=20, imagesize=20)
    cov = defect_coverage([_mask_file(tmp_path / "t.png", top), _mask_file(tmp_path / "m.png", mid)], pre, 4)
    np.testing.assert_array_equal(cov[0], np.zeros(4))
    np.testing.assert_allclose(cov[1], [0.5, 0.5, 0.0, 0.0], atol=1e-6)  # 5 of a cell's 10 rows


def test_coverage_grid_not_dividing_the_crop(tmp_path):
    # 10 px crop on a 3 x 3 grid: cells are 10/3 px wide; a full mask covers every cell fully,
    # and the left 5 columns cover the left column fully, the middle one by (5 - 10/3) / (10/3).
    full = np.ones((10, 10), bool)
    left = np.zeros((10, 10), bool)
    left[:, :5] = True
    pre = Preprocess(resize=10, imagesize=10)
    cov = defect_coverage([_mask_file(tmp_path / "f.png", full), _mask_file(tmp_path / "l.png", left)], pre, 9)
    np.testing.assert_allclose(cov[0], np.ones(9), atol=1e-6)
    np.testing.assert_allclose(cov[1].reshape(3, 3), [[1.0, 0.5, 0.0]] * 3, atol=1e-6)


def test_coverage_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n_patches must be h \\* w of a square patch grid, got 12"):
        defect_coverage([None], Preprocess(resize=16, imagesize=16), 12)
    with pytest.raises(FileNotFoundError):
        defect_coverage([str(tmp_path / "nope.png")], Preprocess(resize=16, imagesize=16), 16)


def test_mask_alpha_and_localisation():
    cov = np.array([[0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.0, 0.0, 0.0]])
    a = mask_alpha(cov)
    np.testing.assert_allclose(a, [[0, 1 / 3, 2 / 3, 0], [0.25] * 4, [1, 0, 0, 0]])
    rows = np.array([True, True, True])
    # Row 1 has no defect and is skipped; rows 0 and 2 put all their mass on defect cells.
    assert alpha_localisation(a, cov, rows) == {"alpha_on_defect": 1.0, "defect_cell_share": 0.375,
                                                 "n_localised": 2}
    uniform = np.full((3, 4), 0.25)
    loc = alpha_localisation(uniform, cov, rows)
    assert loc["alpha_on_defect"] == pytest.approx(loc["defect_cell_share"]) == pytest.approx(0.375)
    one_hot = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]])  # both misses
    assert alpha_localisation(one_hot, cov, rows)["alpha_on_defect"] == 0.0
    assert alpha_localisation(one_hot, cov, np.array([False, True, False])) == {
        "alpha_on_defect": None, "defect_cell_share": None, "n_localised": 0}


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_loc")
    make_dataset(root, categories=["plate"], size=64, n_train=2, n_test_good=3, n_test_defect=4, seed=1)
    return root / "plate"


def test_pipeline_reports_localisation_and_mask_mode(plate):
    from ofdb_fast.cluster import cluster_category
    from ofdb_fast.patchcore.data import list_samples, load_mask

    res = cluster_category(str(plate), modes=["unsupervised", "average", "mask"], taus=[0.1], seed=0,
                           **{**SMALL, "layers": ["layer1"]})
    by = {r.mode: r for r in res.runs}
    # Independent check of the uniform share: masks cropped like the images (64 -> 64), cells of
    # 4 x 4 px on the 16 x 16 layer1 grid, a cell counts when any of its pixels is defective.
    pre = Preprocess(resize=64, imagesize=64)
    shares = [load_mask(s.mask_path, pre).reshape(16, 4, 16, 4).any(axis=(1, 3)).mean()
              for s in list_samples(plate, "test", require_masks=False) if s.defect_type != "good"]
    for r in res.runs:
        assert r.localisation["n_localised"] == 16
        assert r.localisation["defect_cell_share"] == pytest.approx(np.mean(shares), abs=1e-12)
    assert by["mask"].localisation["alpha_on_defect"] == pytest.approx(1.0)
    assert by["average"].localisation["alpha_on_defect"] == pytest.approx(np.mean(shares))
    # The unsupervised weights land on the planted defects far more often than uniform weights
    # do, even with random features (measured 0.211 vs 0.022 here; 0.076 at tau 0.5, 0.16 at
    # tau 0.1 with layer1 + layer2).
    assert by["unsupervised"].localisation["alpha_on_defect"] > 4 * np.mean(shares)
    assert by["mask"].n_clusters == 5 and 0.0 <= by["mask"].metrics["nmi"] <= 1.0


def test_mask_mode_needs_every_defect_mask(plate, tmp_path):
    from ofdb_fast.cluster import cluster_category

    cat = tmp_path / "plate"
    shutil.copytree(plate, cat)
    gone = cat / "ground_truth" / "hole" / "001_mask.png"
    gone.unlink()
    with pytest.raises(ValueError, match="mode 'mask' needs a ground-truth mask for every defective image; 1 have"):
        cluster_category(str(cat), modes=["mask"], taus=[1.0], **SMALL)
    # Without the mask mode the missing mask only shrinks the localisation set.
    res = cluster_category(str(cat), modes=["average"], taus=[1.0], **SMALL)
    assert res.runs[0].localisation["n_localised"] == 15


def test_no_masks_no_localisation(plate, tmp_path):
    from ofdb_fast.cluster import cluster_category

    cat = tmp_path / "plate"
    shutil.copytree(plate, cat)
    shutil.rmtree(cat / "ground_truth")
    res = cluster_category(str(cat), modes=["average"], taus=[1.0], **SMALL)
    assert res.runs[0].localisation is None


def test_cli_mask_mode_and_json(plate, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["cluster", "--data", str(plate), "--out", str(out), "--mode", "unsupervised", "mask",
                 "--tau", "1", "--no-sheets", *CLI_SMALL]) == 0
    printed = capsys.readouterr().out
    assert "alpha on defect 1.000 (uniform 0.0" in printed and printed.count("alpha on defect") == 2
    doc = json.loads((out / "metrics.json").read_text())
    locs = {r["mode"]: r["localisation"] for r in doc["runs"]}
    assert locs["mask"]["alpha_on_defect"] == pytest.approx(1.0) and locs["unsupervised"]["n_localised"] == 16


def test_mask_mode_without_defect_images(plate, tmp_path):
    from ofdb_fast.cluster import cluster_category

    cat = tmp_path / "plate"
    shutil.copytree(plate, cat)
    for d in (cat / "test").iterdir():
        if d.name != "good":
            shutil.rmtree(d)
    shutil.rmtree(cat / "ground_truth")
    res = cluster_category(str(cat), modes=["mask", "average"], taus=[1.0], n_clusters=2, **SMALL)
    mask, average = res.runs
    assert mask.localisation is None and mask.n_clusters == 2
    np.testing.assert_array_equal(mask.clusters, average.clusters)  # no defect anywhere: uniform weights
