"""KolektorSDD / KolektorSDD2 -> MVTec conversion on synthetic trees built here.

The KolektorSDD tree mimics the raw release at a small scale: folders ``kos01..kos05`` with
``PartN.jpg`` (grey, 20 x 52 .. 20 x 55 px, W x H) and ``PartN_label.bmp`` (0/255), some labels
with a rectangle (defective), plus the oddities the converter must report.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ofdb_fast import cli
from ofdb_fast.convert.kolektor import (
    convert_kolektorsdd,
    convert_kolektorsdd2,
    parse_size,
    seeded_permutation,
)
from ofdb_fast.patchcore.data import MVTecDataset, Preprocess

W, H = 20, 52
# (folder, part, defect rectangle (y0, y1, x0, x1) or None)
LAYOUT = [(f"kos{f:02d}", p, ((10 + p, 20 + p, 4, 9) if (f + p) % 4 == 0 else None))
          for f in range(1, 6) for p in range(8)]  # 40 samples, 10 defective, parts 0..7


def _image(rng: np.random.Generator, h: int) -> np.ndarray:
    return rng.integers(40, 200, (h, W), dtype=np.uint8)


def _write(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, a)
    assert ok
    buf.tofile(str(path))


@pytest.fixture(scope="module")
def ksdd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("KolektorSDD")
    rng = np.random.default_rng(0)
    for folder, part, rect in LAYOUT:
        h = H + part % 4  # heights vary, as in the real set (1240..1270)
        _write(root / folder / f"Part{part}.jpg", _image(rng, h))
        label = np.zeros((h, W), np.uint8)
        if rect:
            y0, y1, x0, x1 = rect
            label[y0:y1, x0:x1] = 255
        _write(root / folder / f"Part{part}_label.bmp", label)
    _write(root / "kos06" / "Part0.jpg", _image(rng, H))  # image without label
    (root / "kos06" / "Part1.jpg").write_bytes(b"not a jpeg")  # unreadable image
    _write(root / "kos06" / "Part1_label.bmp", np.zeros((H, W), np.uint8))
    (root / "readme.txt").write_text("not a folder\n")  # ignored top-level entry
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path, grey: bool) -> np.ndarray:
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_UNCHANGED)


def test_counts_masks_report_and_source_untouched(ksdd, tmp_path):
    before = _tree_digest(ksdd)
    out = tmp_path / "out"
    report = convert_kolektorsdd(ksdd, out, seed=3, size="24x64")
    assert _tree_digest(ksdd) == before
    n_defect = sum(r is not None for _, _, r in LAYOUT)
    assert report.counts == {"samples": 40, "defect": n_defect, "good": 40 - n_defect,
                             "train/good": 40 - 2 * n_defect, "test/good": n_defect, "test/defect": n_defect}
    assert report.images_without_label == [str(ksdd / "kos06" / "Part0.jpg")]
    assert report.unreadable == [str(ksdd / "kos06" / "Part1.jpg")]
    assert report.ignored == ["readme.txt"]
    cat = out / "metal"
    for sub, n in (("train/good", 40 - 2 * n_defect), ("test/good", n_defect), ("test/defect", n_defect),
                   ("ground_truth/defect", n_defect)):
        assert len(list((cat / sub).glob("*.png"))) == n, sub
    img = _read(cat / "test" / "defect" / "000.png", grey=False)
    assert img.shape == (64, 24, 3) and (img[..., 0] == img[..., 2]).all()  # grey -> 3 equal channels
    with open(cat / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    by_out = {r["output"]: r for r in rows}
    # Defects in sorted order: the first defective sample is kos01/Part3 ((1 + 3) % 4 == 0).
    src = by_out["test/defect/000.png"]
    assert src["source_label"].endswith("kos01/Part3_label.bmp") and src["label"] == "1"
    for i in range(n_defect):
        row = by_out[f"test/defect/{i:03d}.png"]
        folder, part = Path(row["source_image"]).parent.name, int(Path(row["source_image"]).stem[4:])
        y0, y1, x0, x1 = dict(((f, p), r) for f, p, r in LAYOUT)[(folder, part)]
        mask = _read(cat / "ground_truth" / "defect" / f"{i:03d}_mask.png", grey=True)
        assert mask.shape == (64, 24) and set(np.unique(mask)) == {0, 255}
        # The rectangle's centre stays inside the resized mask; the corners stay outside.
        h_src = H + part % 4
        cy, cx = int((y0 + y1) / 2 * 64 / h_src), int((x0 + x1) / 2 * 24 / W)
        assert mask[cy, cx] == 255 and mask[0, 0] == 0 and mask[-1, -1] == 0
    report_json = json.loads((cat / "conversion_report.json").read_text())
    assert report_json["counts"] == report.counts and report_json["settings"]["seed"] == 3
    # The output loads as an MVTec category with masks for every defect.
    test = MVTecDataset(cat, "test", Preprocess(32, 24))
    assert len(test) == 2 * n_defect and test.labels.sum() == n_defect


def test_split_is_deterministic_and_seed_dependent(ksdd, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        convert_kolektorsdd(ksdd, tmp_path / name, seed=seed, size="keep")
        with open(tmp_path / name / "metal" / "manifest.csv") as f:
            runs[name] = [(r["output"], r["source_image"]) for r in csv.DictReader(f)]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    a, b = (_tree_digest(tmp_path / n / "metal") for n in "ab")
    assert a.pop("conversion_report.json") != b.pop("conversion_report.json")  # names its destination
    assert a == b
    assert sorted(s for _, s in runs["a"]) == sorted(s for _, s in runs["c"])  # same files, other split
    # size="keep": the source pixels unchanged (grey JPG decoded to 3 equal channels).
    out, source = runs["a"][0]
    np.testing.assert_array_equal(_read(tmp_path / "a" / "metal" / out, grey=True), _read(Path(source), grey=True))


def test_pad_mode_pads_and_crops_without_interpolation(ksdd, tmp_path):
    convert_kolektorsdd(ksdd, tmp_path / "o", size="24x53", fit="pad", n_test_good=2, exclude=["kos01/Part3"])
    cat = tmp_path / "o" / "metal"
    with open(cat / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert not any(r["source_image"].endswith("kos01/Part3.jpg") for r in rows)
    for row in rows:
        src = _read(Path(row["source_image"]), grey=True)
        out = _read(cat / row["output"], grey=True)
        h = src.shape[0]
        assert out.shape == (53, 24)
        # Width 20 -> 24: 2 zero columns each side. Heights 52..55 -> 53: pad 1 at the bottom
        # (52) or crop (h - 53) // 2 rows from the top.
        assert (out[:, :2] == 0).all() and (out[:, -2:] == 0).all()
        if h == 52:
            np.testing.assert_array_equal(out[:52, 2:22], src)
            assert (out[52] == 0).all()
        else:
            top = (h - 53) // 2
            np.testing.assert_array_equal(out[:, 2:22], src[top:top + 53])
    assert len(list((cat / "test" / "good").glob("*.png"))) == 2


def test_refuses_non_empty_destination_and_overwrite_replaces_category(ksdd, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OSError, match="not empty; pass --overwrite"):
        convert_kolektorsdd(ksdd, out)
    convert_kolektorsdd(ksdd, out, size="keep", overwrite=True)
    first = _tree_digest(out / "metal")
    convert_kolektorsdd(ksdd, out, size="keep", overwrite=True, seed=9)
    assert (out / "keep.txt").read_text() == "user data"
    assert _tree_digest(out / "metal") != first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_dry_run_writes_nothing(ksdd, tmp_path):
    report = convert_kolektorsdd(ksdd, tmp_path / "o", dry_run=True)
    assert report.counts["samples"] == 40 and "dry run" in report.summary()
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_bad_inputs(ksdd, tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        convert_kolektorsdd(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(ValueError, match="must not be the source"):
        convert_kolektorsdd(ksdd, ksdd / "out", dry_run=True)
    with pytest.raises(ValueError, match="n_test_good must be an int in"):
        convert_kolektorsdd(ksdd, tmp_path / "o", n_test_good=30, dry_run=True)
    with pytest.raises(ValueError, match="fit must be one of"):
        convert_kolektorsdd(ksdd, tmp_path / "o", fit="stretch")
    with pytest.raises(ValueError, match="size must be WxH"):
        parse_size("500by1240")
    with pytest.raises(ValueError, match="seed must be an int"):
        convert_kolektorsdd(ksdd, tmp_path / "o", seed=-1)
    empty = tmp_path / "empty_src"
    (empty / "kos01").mkdir(parents=True)
    with pytest.raises(ValueError, match="PartN.jpg \\+ PartN_label.bmp pairs"):
        convert_kolektorsdd(empty, tmp_path / "o")


def test_seeded_permutation():
    p = seeded_permutation(100, 0)
    assert sorted(p.tolist()) == list(range(100))
    np.testing.assert_array_equal(p, seeded_permutation(100, 0))
    assert not np.array_equal(p, seeded_permutation(100, 1))
    assert seeded_permutation(0, 0).shape == (0,) and seeded_permutation(1, 0).tolist() == [0]
    # A prefix-stable draw: the relative order of the first n items does not depend on N.
    q = seeded_permutation(150, 0)
    assert [i for i in q if i < 100] == p.tolist()


def test_cli_and_known_odd_sample_note(ksdd, tmp_path, capsys):
    src = tmp_path / "src"
    rng = np.random.default_rng(1)
    for part in range(8):
        for folder in ("kos20", "kos21"):
            _write(src / folder / f"Part{part}.jpg", _image(rng, H))
            label = np.zeros((H, W), np.uint8)
            if part == 0:
                label[5:9, 5:9] = 255
            _write(src / folder / f"Part{part}_label.bmp", label)
    assert cli.main(["convert", "kolektorsdd", str(src), str(tmp_path / "o"), "--size", "20x40", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "train/good 12, test/good 2, test/defect 2" in text and "kos21/Part7 is included" in text
    assert cli.main(["convert", "kolektorsdd", str(src), str(tmp_path / "o")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["convert", "kolektorsdd", str(src), str(tmp_path / "p"), "--exclude", "kos21/Part7",
                     "--pad", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "excluded (1): kos21/Part7" in text and "samples 15" in text


# ------------------------------------------------------------------------ KolektorSDD2
@pytest.fixture(scope="module")
def ksdd2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("KSDD2")
    rng = np.random.default_rng(2)
    for split, ids, bad in (("train", range(10000, 10008), {10002, 10005}), ("test", range(20000, 20006), {20001})):
        for i in ids:
            _write(root / split / f"{i}.png", rng.integers(0, 255, (60, 22, 3), dtype=np.uint8))
            gt = np.zeros((60, 22), np.uint8)
            if i in bad:
                gt[20:30, 5:10] = 255
            _write(root / split / f"{i}_GT.png", gt)
    _write(root / "test" / "20099.png", np.zeros((60, 22, 3), np.uint8))  # no _GT
    return root


@pytest.mark.parametrize("train_positives", ["exclude", "test"])
def test_ksdd2_mapping(ksdd2, tmp_path, train_positives):
    before = _tree_digest(ksdd2)
    report = convert_kolektorsdd2(ksdd2, tmp_path / "o", train_positives=train_positives)
    assert _tree_digest(ksdd2) == before
    cat = tmp_path / "o" / "ksdd2"
    n_moved = 2 if train_positives == "test" else 0
    assert report.counts["train/good"] == 6 and report.counts["test/good"] == 5
    assert report.counts["test/defect"] == 1 + n_moved
    assert sorted(p.name for p in (cat / "train" / "good").iterdir()) == \
        [f"{i}.png" for i in range(10000, 10008) if i not in (10002, 10005)]
    assert sorted(p.name for p in (cat / "ground_truth" / "defect").iterdir()) == \
        sorted(["20001_mask.png"] + (["10002_mask.png", "10005_mask.png"] if n_moved else []))
    assert report.images_without_label == [str(ksdd2 / "test" / "20099.png")]
    assert (report.excluded == ["train/10002", "train/10005"]) == (train_positives == "exclude")
    mask = _read(cat / "ground_truth" / "defect" / "20001_mask.png", grey=True)
    img = _read(cat / "test" / "defect" / "20001.png", grey=False)
    assert mask.shape == (640, 232) and img.shape == (640, 232, 3)
    assert mask[int(25 * 640 / 60), int(7.5 * 232 / 22)] == 255 and mask.sum() < 0.1 * 255 * mask.size


def test_ksdd2_missing_split(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="must contain test/"):
        convert_kolektorsdd2(tmp_path / "src", tmp_path / "o")
