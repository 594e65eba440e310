"""MVTec-format listing and loading on tiny datasets built in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from ofdb_fast.patchcore import data as D


def _img(path, h=40, w=50, mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def _mask(path, h=40, w=50, box=(5, 15, 10, 30), scale=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((h, w), np.uint8)
    arr[box[0]:box[1], box[2]:box[3]] = scale
    Image.fromarray(arr).save(path)
    return path


def _category(root, name="bottle", n_train=3, ext=".png"):
    cat = root / name
    for i in range(n_train):
        _img(cat / "train" / "good" / f"{i:03d}{ext}", seed=i)
    _img(cat / "test" / "good" / f"000{ext}", seed=10)
    for t in ("crack", "broken"):
        for i in range(2):
            _img(cat / "test" / t / f"{i:03d}{ext}", seed=20 + i)
            _mask(cat / "ground_truth" / t / f"{i:03d}_mask.png")
    return cat


PRE = D.Preprocess(resize=32, imagesize=28)


def test_list_categories_root_and_single(tmp_path):
    _category(tmp_path, "b")
    _category(tmp_path, "a")
    (tmp_path / "notes").mkdir()
    cats = D.list_categories(tmp_path)
    assert [p.split("/")[-1] for p in cats] == ["a", "b"]
    assert D.list_categories(tmp_path / "a") == [str(tmp_path / "a")]


def test_list_samples_train_and_test(tmp_path):
    cat = _category(tmp_path)
    (cat / "train" / "good" / ".hidden.png").write_bytes(b"x")
    (cat / "train" / "good" / "notes.txt").write_text("x")
    train = D.list_samples(cat, "train")
    assert [s.label for s in train] == [0, 0, 0] and all(s.mask_path is None for s in train)
    test = D.list_samples(cat, "test")
    assert [(s.defect_type, s.label) for s in test] == [("broken", 1)] * 2 + [("crack", 1)] * 2 + [("good", 0)]
    assert all(s.mask_path.endswith("_mask.png") for s in test if s.label)
    assert {s.category for s in test} == {"bottle"}


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".tif"])
def test_other_image_extensions(tmp_path, ext):
    cat = _category(tmp_path, ext=ext)
    assert len(D.list_samples(cat, "test")) == 5
    assert D.load_image(D.list_samples(cat, "train")[0].path, PRE).shape == (3, 28, 28)


def test_btad_style_mask_names(tmp_path):
    cat = _category(tmp_path)
    for p in (cat / "ground_truth" / "crack").iterdir():
        p.rename(p.with_name(p.name.replace("_mask", "")).with_suffix(".bmp"))
    masks = [s.mask_path for s in D.list_samples(cat, "test") if s.defect_type == "crack"]
    assert all(m.endswith(".bmp") for m in masks)


def test_preprocessing_matches_torchvision(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    T = pytest.importorskip("torchvision.transforms")
    pre = D.Preprocess(resize=36, imagesize=32)
    tf = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    for h, w, mode in [(40, 53, "RGB"), (61, 37, "L"), (36, 36, "RGBA")]:
        p = _img(tmp_path / f"{h}x{w}{mode}.png", h, w, mode="RGB", seed=h)
        Image.open(p).convert(mode).save(p)
        ref = tf(Image.open(p).convert("RGB")).numpy()
        np.testing.assert_allclose(D.load_image(p, pre), ref, rtol=1e-6, atol=1e-6)
        m = _mask(tmp_path / f"{h}x{w}_mask.png", h, w, box=(3, 20, 7, 30))
        ref_mask = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor()])(Image.open(m)).numpy()[0] > 0.5
        np.testing.assert_array_equal(D.load_mask(m, pre, (h, w)), ref_mask)


def test_mask_values_and_none(tmp_path):
    m255 = _mask(tmp_path / "a.png", 32, 32, box=(0, 16, 0, 32))
    m01 = _mask(tmp_path / "b.png", 32, 32, box=(0, 16, 0, 32), scale=1)
    pre = D.Preprocess(resize=32, imagesize=32)
    expected = np.zeros((32, 32), bool)
    expected[:16] = True
    np.testing.assert_array_equal(D.load_mask(m255, pre, (32, 32)), expected)
    np.testing.assert_array_equal(D.load_mask(m01, pre, (32, 32)), expected)
    assert not D.load_mask(None, pre).any() and D.load_mask(None, pre).shape == (32, 32)


def test_dataset_items_and_batches(tmp_path):
    cat = _category(tmp_path)
    ds = D.MVTecDataset(cat, "test", PRE)
    assert len(ds) == 5
    item = ds[0]
    assert item["image"].dtype == np.float32 and item["image"].shape == (3, 28, 28)
    assert item["mask"].dtype == bool and item["mask"].any() and item["label"] == 1
    assert not ds[4]["mask"].any() and ds[4]["defect_type"] == "good"
    batches = list(ds.batches(2))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    threaded = list(ds.batches(2, num_workers=2))
    for a, b in zip(batches, threaded):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        assert a["path"] == b["path"]
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), ds.labels)

def _btad_category(root, name="01"):
    """BTAD's own layout: train/ok, test/ok, test/ko, masks ground_truth/ko/<stem>.png, .bmp images."""
    cat = root / name
    for i in range(3):
        _img(cat / "train" / "ok" / f"{i:04d}.bmp", seed=i)
    _img(cat / "test" / "ok" / "0000.bmp", seed=10)
    for i in range(2):
        _img(cat / "test" / "ko" / f"{i:04d}.bmp", seed=20 + i)
        _mask(cat / "ground_truth" / "ko" / f"{i:04d}.png")
    return cat


def test_btad_layout_ok_folders_are_normal(tmp_path):
    cat = _btad_category(tmp_path)
    assert D.list_categories(tmp_path) == [str(cat)]
    train = D.list_samples(cat, "train")
    assert [(s.label, s.defect_type) for s in train] == [(0, "good")] * 3
    assert all("/train/ok/" in s.path for s in train)
    test = D.list_samples(cat, "test")
    assert [(s.defect_type, s.label) for s in test] == [("ko", 1), ("ko", 1), ("good", 0)]
    assert [s.mask_path.split("/")[-1] for s in test if s.label] == ["0000.png", "0001.png"]
    assert test[-1].path.endswith("test/ok/0000.bmp") and test[-1].mask_path is None
    assert D.normal_dir(cat, "train") == cat / "train" / "ok"
    ds = D.MVTecDataset(cat, "test", PRE)
    assert [int(ds[i]["label"]) for i in range(len(ds))] == [1, 1, 0]
    assert ds[0]["mask"].sum() > 0 and ds[2]["mask"].sum() == 0


def _mvtec_ad2_category(root, name="can"):
    """MVTec AD 2: train/good, validation/good, test_public/{good,bad} with the masks inside
    test_public/ground_truth/bad, and unlabelled test_private*."""
    cat = root / name
    for i in range(3):
        _img(cat / "train" / "good" / f"{i:03d}_regular.png", seed=i)
    _img(cat / "validation" / "good" / "000_regular.png", seed=5)
    _img(cat / "test_public" / "good" / "000_overexposed.png", seed=10)
    for i in range(2):
        _img(cat / "test_public" / "bad" / f"{i:03d}_regular.png", seed=20 + i)
        _mask(cat / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png")
    _img(cat / "test_private" / "000_regular.png", seed=30)
    _img(cat / "test_private_mixed" / "000_shift_1.png", seed=31)
    return cat


def test_mvtec_ad2_layout_reads_test_public(tmp_path):
    cat = _mvtec_ad2_category(tmp_path)
    assert D.list_categories(tmp_path) == [str(cat)]
    assert len(D.list_samples(cat, "train")) == 3  # validation/good is not training data
    test = D.list_samples(cat, "test")
    assert [(s.defect_type, s.label) for s in test] == [("bad", 1), ("bad", 1), ("good", 0)]  # no "ground_truth" type
    assert [s.mask_path.split("test_public/")[1] for s in test if s.label] == [
        "ground_truth/bad/000_regular_mask.png", "ground_truth/bad/001_regular_mask.png"]
    assert not any("test_private" in s.path for s in test)
    ds = D.MVTecDataset(cat, "test", PRE)
    assert ds[0]["mask"].sum() > 0 and ds[2]["mask"].sum() == 0
    (cat / "test_public" / "ground_truth" / "bad" / "001_regular_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="test_public/ground_truth/bad/001_regular_mask.png"):
        D.list_samples(cat, "test")
    # an MVTec AD 1 category with its own test/ keeps using it, whatever else is there
    plain = _category(tmp_path / "other")
    (plain / "test_public" / "bad").mkdir(parents=True)
    assert len(D.list_samples(plain, "test")) == 5


@pytest.mark.parametrize("split", ["train", "test"])
def test_good_and_ok_together_is_ambiguous(tmp_path, split):
    cat = _category(tmp_path)
    _img(cat / split / "ok" / "000.png")
    with pytest.raises(ValueError, match=f"ambiguous layout: both .*{split}/good and .*{split}/ok exist"):
        D.list_samples(cat, split)


# ---------------------------------------------------------------------------- errors
def test_missing_train_good(tmp_path):
    cat = _category(tmp_path)
    (cat / "train" / "good").rename(cat / "train" / "normal")
    with pytest.raises(ValueError, match="malformed MVTec layout: .*train/good .*or .*train/ok, as BTAD"):
        D.list_samples(cat, "train")


def test_missing_test(tmp_path):
    cat = _category(tmp_path)
    (cat / "test").rename(cat / "tests")
    with pytest.raises(ValueError, match="malformed MVTec layout: .*test"):
        D.list_samples(cat, "test")
    with pytest.raises(ValueError, match="must contain category directories"):
        D.list_categories(tmp_path)


def test_empty_train_good(tmp_path):
    cat = _category(tmp_path, n_train=0)
    (cat / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="train/good must contain training images"):
        D.list_samples(cat, "train")


def test_missing_mask(tmp_path):
    cat = _category(tmp_path)
    (cat / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="crack/001_mask.png"):
        D.list_samples(cat, "test")
    samples = D.list_samples(cat, "test", require_masks=False)
    missing = [s for s in samples if s.defect_type == "crack" and s.mask_path is None]
    assert len(missing) == 1 and missing[0].label == 1


def test_corrupt_image(tmp_path):
    cat = _category(tmp_path)
    bad = cat / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated PNG
    with pytest.raises(ValueError, match="cannot read image .*001.png"):
        D.load_image(bad, PRE)
    (cat / "train" / "good" / "002.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*002.png"):
        D.MVTecDataset(cat, "train", PRE)[2]


def test_mask_size_mismatch(tmp_path):
    cat = _category(tmp_path)
    _mask(cat / "ground_truth" / "crack" / "000_mask.png", 41, 50)
    ds = D.MVTecDataset(cat, "test", PRE)
    idx = next(i for i, s in enumerate(ds.samples) if s.mask_path and "crack/000_mask" in s.mask_path)
    with pytest.raises(ValueError, match=r"mask .*000_mask.png must have the size of its image \(40, 50\)"):
        ds[idx]


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.list_categories(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.list_samples(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="image .*x.png does not exist"):
        D.load_image(tmp_path / "x.png", PRE)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        D.list_samples(tmp_path, "val")
    with pytest.raises(ValueError, match="imagesize must be <= resize"):
        D.Preprocess(resize=200, imagesize=224)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(D.MVTecDataset(tmp_path, "train", samples=[]).batches(0))
