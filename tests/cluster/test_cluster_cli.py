"""End to end: embeddings from the PatchCore feature path, the pipeline on the synthetic
multi-defect dataset, and the ``ofdb-fast cluster`` command."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from ofdb_fast._io import is_temp_name
from ofdb_fast.cli import main
from ofdb_fast.synth import make_dataset

SMALL = dict(backbone="resnet18", layers=["layer1", "layer2"], weights="random", pretrain_embed_dimension=64,
             target_embed_dimension=64, resize=64, imagesize=64, device="cpu", batch_size=32)
CLI_SMALL = ["--backbone", "resnet18", "--layers", "layer1,layer2", "--weights", "random",
             "--pretrain-embed-dimension", "64", "--target-embed-dimension", "64", "--resize", "64",
             "--imagesize", "64", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_dataset(root, categories=["plate"], size=64, n_train=6, n_test_good=3, n_test_defect=4, seed=0)
    return root / "plate"


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        yield


def test_embed_layer_norm_per_image():
    torch = pytest.importorskip("torch")
    from ofdb_fast.cluster.embed import build_model, embed_batch

    model = build_model(**SMALL)
    x = torch.randn(3, 3, 64, 64)
    z = embed_batch(model, x)
    assert tuple(z.shape) == (3, 16 * 16, 64) and z.dtype == torch.float32
    # Per-image normalisation: an image's embedding does not depend on its batch mates.
    torch.testing.assert_close(embed_batch(model, x[[0, 2]])[0], z[0])
    assert not torch.allclose(embed_batch(model, x, layer_norm=False), z)
    # One layer, 1x1 patches, no pooling (C -> C): the embedding is the LayerNorm'd map itself,
    # mean 0 and (biased) variance 1 over (C, H, W) per image.
    one = build_model(**{**SMALL, "layers": ["layer2"], "pretrain_embed_dimension": 128,
                         "target_embed_dimension": 128}, patch_size=1)
    z1 = embed_batch(one, x * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1, 1))
    assert tuple(z1.shape) == (3, 8 * 8, 128)
    torch.testing.assert_close(z1.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z1.var(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_pipeline_modes_and_counts(plate):
    from ofdb_fast.cluster import cluster_category

    res = cluster_category(str(plate), modes=["unsupervised", "supervised", "average"], taus=[0.5, 2.0],
                           train_ratio=0.5, seed=0, **SMALL)
    assert len(res.runs) == 6 and res.info["n_normal_images"] == 6  # min(int(0.5 * 19), 6)
    assert res.info["labels"] == ["contamination", "good", "hole", "missing", "scratch"]
    for run in res.runs:
        assert run.n_clusters == 5 and set(run.clusters.tolist()) == set(range(5))
        assert 0.0 <= run.metrics["f1"] <= 1.0
    by = {(r.mode, r.tau): r.metrics for r in res.runs}
    assert by[("average", 0.5)] == by[("average", 2.0)]  # average mode ignores tau


def test_pipeline_recovers_defect_types_above_chance(tmp_path):
    """Random-init features cannot reach the issue's NMI >= 0.5 (see the report); this checks
    the weaker property that the unsupervised weighting recovers the defect types clearly
    above chance and above uniform averaging. Measured (seed 0, weave, 96 px, resnet18 random,
    layer1, 4 types x 5 images): unsupervised tau 0.25 NMI 0.42 / ARI 0.17; average NMI 0.18 /
    ARI -0.04; chance (300 label permutations of the same clustering) NMI 95th percentile 0.34,
    99th 0.40 -- so the margin over chance is real but modest."""
    from ofdb_fast.cluster import cluster_category
    from ofdb_fast.cluster.metrics import nmi

    make_dataset(tmp_path, categories=["weave"], size=96, n_train=2, n_test_good=1, n_test_defect=5, seed=0)
    cfg = {**SMALL, "layers": ["layer1"], "resize": 96, "imagesize": 96}
    res = cluster_category(str(tmp_path / "weave"), modes=["unsupervised", "average"], taus=[0.25],
                           include_good=False, seed=0, **cfg)
    uns, avg = res.runs
    assert uns.n_clusters == 4 and res.info["n_scored"] == 20
    rng = np.random.default_rng(0)
    chance = [nmi(res.defect_types, rng.permutation(uns.clusters)) for _ in range(300)]
    assert uns.metrics["nmi"] > np.quantile(chance, 0.95), (uns.metrics, np.quantile(chance, 0.95))
    assert uns.metrics["nmi"] > avg.metrics["nmi"] + 0.1 and uns.metrics["ari"] > 0.1, (uns.metrics, avg.metrics)


def test_cli_outputs(plate, tmp_path):
    out = tmp_path / "out"
    rc = main(["cluster", "--data", str(plate), "--out", str(out), "--mode", "unsupervised", "supervised",
               "--tau", "1", "2", "--train-ratio", "0.3", "--n-clusters", "estimate", "--k-max", "6", *CLI_SMALL])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "assignments.csv")))
    assert len(rows) == 4 * 19 and set(rows[0]) == {"mode", "tau", "path", "defect_type", "cluster"}
    doc = json.loads((out / "metrics.json").read_text())
    assert len(doc["runs"]) == 4 and all(r["estimated_k"] for r in doc["runs"])
    assert doc["n_normal_images"] == 5 and doc["labels"][1] == "good"
    for r in doc["runs"]:
        assert 2 <= r["n_clusters"] <= 6 and set(r) >= {"nmi", "ari", "f1", "silhouette"}
        sheets = sorted((out / "sheets" / f"{r['mode']}_tau{r['tau']:g}").glob("cluster_*.png"))
        assert len(sheets) == r["n_clusters"]
    from PIL import Image

    assert Image.open(sheets[0]).size[0] > 64
    assert not [p for p in out.rglob(".*") if is_temp_name(p.name)]
    # A non-empty --out is refused without --overwrite.
    assert main(["cluster", "--data", str(plate), "--out", str(out), *CLI_SMALL]) == 2
    assert main(["cluster", "--data", str(plate), "--out", str(out), "--overwrite", "--no-sheets",
                 "--mode", "average", "--n-clusters", "3", *CLI_SMALL]) == 0


def test_cli_errors(plate, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["cluster", "--data", str(tmp_path / "missing"), "--out", out, *CLI_SMALL]) == 2
    assert "must be a category directory with test/<type>/" in capsys.readouterr().err
    assert main(["cluster", "--data", str(plate), "--out", out, "--n-clusters", "many", *CLI_SMALL]) == 2
    assert "--n-clusters must be an int >= 1, 'labels' or 'estimate'" in capsys.readouterr().err
    assert main(["cluster", "--data", str(plate), "--out", out, "--n-clusters", "99", *CLI_SMALL]) == 2
    assert "n_clusters must be between 1 and the 19 images" in capsys.readouterr().err
    assert main(["cluster", "--data", str(plate), "--out", out, "--mode", "supervised", "--train-ratio", "0.01",
                 *CLI_SMALL]) == 2
    assert "train_ratio must select at least one normal image" in capsys.readouterr().err


def test_combined_is_pooled_but_not_scored(plate, tmp_path):
    import shutil

    from ofdb_fast.cluster import cluster_category

    cat = tmp_path / "plate"
    shutil.copytree(plate, cat)
    (cat / "test" / "combined").mkdir()
    for i, p in enumerate(sorted((cat / "test" / "hole").glob("*.png"))[:2]):
        shutil.copy(p, cat / "test" / "combined" / f"c{i}.png")
    res = cluster_category(str(cat), modes=["unsupervised"], taus=[1.0], include_good=False, **SMALL)
    run = res.runs[0]
    combined = np.array([t == "combined" for t in res.defect_types])
    assert combined.sum() == 2 and np.all(run.clusters[combined] == -1)
    assert run.n_clusters == 4 and res.info["n_scored"] == 16


def test_bn_adapt_uses_train_good_only(plate, tmp_path):
    import shutil

    import torch

    from ofdb_fast.cluster import cluster_category
    from ofdb_fast.cluster.embed import build_model

    plain = cluster_category(str(plate), modes=["unsupervised"], taus=[1.0], seed=0, **SMALL)
    assert plain.info["bn_adapt"] is None
    model = build_model(seed=0, **SMALL)
    before = model.extractor.bn1.running_mean.clone()
    res = cluster_category(str(plate), modes=["unsupervised"], taus=[1.0], seed=0, bn_adapt=True, model=model)
    n_train = len(list((plate / "train" / "good").glob("*.png")))
    assert res.info["bn_adapt"]["n_images"] == n_train
    assert not torch.equal(model.extractor.bn1.running_mean, before)  # adapted in place
    # Deterministic, and the test images play no part: adding a test image leaves the statistics alone.
    again = build_model(seed=0, **SMALL)
    cat = tmp_path / "plate"
    shutil.copytree(plate, cat)
    extra = sorted((cat / "test" / "hole").glob("*.png"))[0]
    shutil.copy(extra, extra.with_name("extra.png"))
    cluster_category(str(cat), modes=["unsupervised"], taus=[1.0], seed=0, bn_adapt=True, model=again)
    for (name, a), (_, b) in zip(model.extractor.named_buffers(), again.extractor.named_buffers()):
        assert torch.equal(a, b), name


def test_cli_bn_adapt(plate, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["cluster", "--data", str(plate), "--out", str(out), "--bn-adapt", "--no-sheets", *CLI_SMALL]) == 0
    assert json.loads((out / "metrics.json").read_text())["bn_adapt"]["n_images"] > 0
    import shutil

    cat = tmp_path / "no_train"
    shutil.copytree(plate / "test", cat / "test")
    assert main(["cluster", "--data", str(cat), "--out", str(tmp_path / "o2"), "--bn-adapt", *CLI_SMALL]) == 2
    assert "--bn-adapt needs normal images in" in capsys.readouterr().err
    # BTAD's layout: normal images in train/ok and test/ok (read as "good"), defects in test/ko.
    btad = tmp_path / "btad"
    shutil.copytree(plate / "train" / "good", btad / "train" / "ok")
    shutil.copytree(plate / "test" / "good", btad / "test" / "ok")
    shutil.copytree(plate / "test" / "hole", btad / "test" / "ko")
    out3 = tmp_path / "o3"
    assert main(["cluster", "--data", str(btad), "--out", str(out3), "--bn-adapt", "--mode", "supervised",
                 "--no-sheets", *CLI_SMALL]) == 0
    doc = json.loads((out3 / "metrics.json").read_text())
    assert doc["labels"] == ["good", "ko"] and doc["bn_adapt"]["n_images"] == 6 and doc["n_normal_images"] == 6


def test_cli_reads_mvtec_ad2_test_public(plate, tmp_path):
    """MVTec AD 2 keeps the labelled test set in test_public/ (masks in test_public/ground_truth)."""
    import shutil

    ad2 = tmp_path / "ad2"
    shutil.copytree(plate / "train", ad2 / "train")
    shutil.copytree(plate / "test", ad2 / "test_public")
    shutil.copytree(plate / "ground_truth", ad2 / "test_public" / "ground_truth")
    out = tmp_path / "o"
    assert main(["cluster", "--data", str(ad2), "--out", str(out), "--mode", "mask", "--no-sheets", *CLI_SMALL]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["labels"] == ["contamination", "good", "hole", "missing", "scratch"]  # no "ground_truth" class
    assert doc["runs"][0]["localisation"]["n_localised"] == 16  # every defect image found its mask
