"""VisA -> MVTec conversion on a small VisA-shaped tree built here.

The tree mimics the release: ``<object>/Data/Images/{Normal,Anomaly}/*.JPG``,
``<object>/Data/Masks/Anomaly/<stem>.png`` with small non-zero defect values (1, 2, 3; one
palette PNG whose index 0 is grey, one 16-bit PNG with a value above 255), an
``image_anno.csv`` per object (candle's paths relative to the root as released, pcb1's relative
to its folder; quoted labels with commas and quotes) and ``split_csv/1cls.csv``.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ofdb_fast import cli
from ofdb_fast.convert import visa
from ofdb_fast.convert.visa import convert_visa, defect_folder
from ofdb_fast.patchcore.data import list_samples

SIZES = {"candle": (40, 30), "pcb1": (36, 28)}  # (W, H)
N_TRAIN, N_TEST_GOOD = 3, 2  # normal images 0000..0004: the first 3 train, the last 2 test
# (stem, image_anno.csv label as written in the file, folder in "annotation" mode)
ANOMALIES = {
    "candle": [("000", "chip around edge", "chip_around_edge"),
               ("001", '"wax melded out,chip around edge"', "combined"),
               ("002", "Chip Around Edge", "chip_around_edge")],
    "pcb1": [("000", "bent", "bent"), ("001", '"scratch ""deep"""', "scratch_deep")],
}


def _jpg(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format="JPEG", quality=90)


def _mask(path: Path, category: str, index: int) -> np.ndarray:
    """Write the source mask of anomaly ``index``; return its defect support (bool [H, W])."""
    w, h = SIZES[category]
    values = np.zeros((h, w), np.uint16)
    values[3 + index:12 + index, 5 + 2 * index:15 + 2 * index] = index + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    if category == "pcb1" and index == 0:  # palette PNG: index 0 is grey, not black
        im = Image.fromarray(values.astype(np.uint8), mode="P")
        im.putpalette([90, 90, 90, 255, 0, 0])
        im.save(path)
    elif category == "pcb1" and index == 1:  # 16-bit PNG, one region above 255
        values[20:24, 2:6] = 300
        Image.fromarray(values).save(path)
    else:
        Image.fromarray(values.astype(np.uint8)).save(path)
    return values != 0


def make_visa(root: Path) -> dict[tuple[str, str], np.ndarray]:
    """Build the fake VisA tree under ``root``; return the mask supports by (category, stem)."""
    rows = ["object,split,label,image,mask"]
    supports = {}
    for c, (category, size) in enumerate(SIZES.items()):
        prefix = f"{category}/" if category == "candle" else ""  # pcb1: paths relative to its folder
        anno = ["image,label,mask"]
        for i in range(N_TRAIN + N_TEST_GOOD):
            rel = f"{category}/Data/Images/Normal/{i:04d}.JPG"
            _jpg(root / rel, size, seed=100 * c + i)
            rows.append(f"{category},{'train' if i < N_TRAIN else 'test'},normal,{rel},")
            anno.append(f"{prefix}Data/Images/Normal/{i:04d}.JPG,normal,")
        for i, (stem, label, _) in enumerate(ANOMALIES[category]):
            rel, mask = f"{category}/Data/Images/Anomaly/{stem}.JPG", f"{category}/Data/Masks/Anomaly/{stem}.png"
            _jpg(root / rel, size, seed=100 * c + 50 + i)
            supports[category, stem] = _mask(root / mask, category, i)
            rows.append(f"{category},test,anomaly,{rel},{mask}")
            anno.append(f"{prefix}Data/Images/Anomaly/{stem}.JPG,{label},{prefix}Data/Masks/Anomaly/{stem}.png")
        (root / category / "image_anno.csv").write_text("\n".join(anno) + "\n")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return supports


@pytest.fixture(scope="module")
def visa_src(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("VisA")
    return root, make_visa(root)


@pytest.fixture()
def fresh_src(tmp_path) -> Path:
    """A tree a test may modify."""
    root = tmp_path / "VisA"
    root.mkdir()
    make_visa(root)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _expected_files(category: str, types: str) -> set[str]:
    files = {"manifest.csv", "conversion_report.json"}
    files |= {f"train/good/{i:04d}.JPG" for i in range(N_TRAIN)}
    files |= {f"test/good/{i:04d}.JPG" for i in range(N_TRAIN, N_TRAIN + N_TEST_GOOD)}
    for stem, _, folder in ANOMALIES[category]:
        folder = "bad" if types == "bad" else folder
        files |= {f"test/{folder}/{stem}.JPG", f"ground_truth/{folder}/{stem}_mask.png"}
    return files


def _manifest(category_dir: Path) -> list[dict[str, str]]:
    with open(category_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _rewrite_split(src: Path, edit) -> None:
    path = src / "split_csv" / "1cls.csv"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


# ------------------------------------------------------------------------------ layout
def test_layout_bytes_masks_report_and_loader(visa_src, tmp_path, capsys):
    src, supports = visa_src
    before = _digest(src)
    out = tmp_path / "out"
    report = convert_visa(src, out)  # progress bar on (stderr)
    assert _digest(src) == before
    assert "img" in capsys.readouterr().err  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == ["candle", "pcb1"]  # no hidden leftovers
    for category in SIZES:
        cat = out / category
        assert _files(cat) == _expected_files(category, "bad")
        for row in _manifest(cat):
            assert (cat / row["output"]).read_bytes() == Path(row["source_image"]).read_bytes()
        for stem, _, _ in ANOMALIES[category]:
            with Image.open(cat / "ground_truth" / "bad" / f"{stem}_mask.png") as im:
                assert im.mode == "L" and im.size == SIZES[category]
                mask = np.asarray(im)
            assert set(np.unique(mask)) == {0, 255}
            np.testing.assert_array_equal(mask == 255, supports[category, stem])
        train, test = list_samples(cat, "train"), list_samples(cat, "test")
        assert len(train) == N_TRAIN and all(s.label == 0 for s in train)
        n_bad = len(ANOMALIES[category])
        assert [s.defect_type for s in test] == ["bad"] * n_bad + ["good"] * N_TEST_GOOD
        assert all(s.mask_path and Path(s.mask_path).is_file() for s in test if s.label == 1)
        saved = json.loads((cat / "conversion_report.json").read_text())
        assert saved["counts"] == report.categories[category]
        assert saved["destination"] == str(cat) and saved["settings"]["categories"] == [category]
    assert report.categories == {
        "candle": {"train/good": 3, "test/good": 2, "test/bad": 3, "skipped": 0, "excluded": 0},
        "pcb1": {"train/good": 3, "test/good": 2, "test/bad": 2, "skipped": 0, "excluded": 0}}
    assert report.counts == {"categories": 2, "train/good": 6, "test/good": 4, "test/anomaly": 5, "skipped": 0,
                             "excluded": 0}
    assert not (report.missing or report.unreadable or report.excluded or report.ignored or report.notes)
    rows = _manifest(out / "candle")
    assert rows[0] == {"output": "test/bad/000.JPG", "split": "test", "label": "1", "defect_type": "bad",
                       "mask": "ground_truth/bad/000_mask.png", "annotation": "",
                       "source_image": str(src / "candle/Data/Images/Anomaly/000.JPG"),
                       "source_mask": str(src / "candle/Data/Masks/Anomaly/000.png")}
    assert "pcb1: train/good 3, test/good 2, test/bad 2" in report.summary()


def test_annotation_defect_types(visa_src, tmp_path):
    src, _ = visa_src
    report = convert_visa(src, tmp_path / "o", defect_types="annotation", progress=False)
    for category in SIZES:
        cat = tmp_path / "o" / category
        assert _files(cat) == _expected_files(category, "annotation")
        types = sorted({s.defect_type for s in list_samples(cat, "test")})
        assert types == sorted({"good"} | {f for _, _, f in ANOMALIES[category]})
    assert report.categories["candle"] == {"train/good": 3, "test/good": 2, "test/chip_around_edge": 2,
                                           "test/combined": 1, "skipped": 0, "excluded": 0}
    assert report.counts["test/anomaly"] == 5
    rows = {r["output"]: r for r in _manifest(tmp_path / "o" / "pcb1")}
    assert rows["test/scratch_deep/001.JPG"]["annotation"] == 'scratch "deep"'
    rows = {r["output"]: r for r in _manifest(tmp_path / "o" / "candle")}
    assert rows["test/combined/001.JPG"]["annotation"] == "wax melded out,chip around edge"
    assert rows["test/good/0004.JPG"]["annotation"] == ""


def test_defect_folder():
    assert defect_folder("chip around edge") == "chip_around_edge"
    assert defect_folder("  Chip-Around  Edge! ") == "chip_around_edge"
    assert defect_folder("burnt, chip around edge") == "combined"
    assert defect_folder("bent,Bent, ") == "bent"  # one distinct defect
    assert defect_folder("scratch \"deep\"") == "scratch_deep"
    assert defect_folder("?? , --") is None


# ------------------------------------------------------------------------------ link mode
def test_link_mode_shares_inodes_masks_are_written(visa_src, tmp_path):
    src, _ = visa_src
    report = convert_visa(src, tmp_path / "o", categories="pcb1", link=True, progress=False)
    assert report.categories["pcb1"]["linked"] == 7 and report.categories["pcb1"]["copied"] == 0
    cat = tmp_path / "o" / "pcb1"
    for row in _manifest(cat):
        assert os.stat(cat / row["output"]).st_ino == os.stat(row["source_image"]).st_ino
        if row["mask"]:
            assert os.stat(cat / row["mask"]).st_ino != os.stat(row["source_mask"]).st_ino
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["pcb1"]


def test_link_falls_back_to_copy_across_file_systems(visa_src, tmp_path, monkeypatch):
    src, _ = visa_src

    def cross_device(a, b):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(visa.os, "link", cross_device)
    report = convert_visa(src, tmp_path / "o", categories=["candle"], link=True, progress=False)
    assert report.categories["candle"]["linked"] == 0 and report.categories["candle"]["copied"] == 8
    assert any("8 images copied instead of hard-linked" in n and "cross-device" in n for n in report.notes)
    cat = tmp_path / "o" / "candle"
    row = _manifest(cat)[0]
    assert (cat / row["output"]).read_bytes() == Path(row["source_image"]).read_bytes()
    assert os.stat(cat / row["output"]).st_ino != os.stat(row["source_image"]).st_ino


# ------------------------------------------------------------------------------ output rules
def test_dry_run_writes_nothing(visa_src, tmp_path):
    src, _ = visa_src
    report = convert_visa(src, tmp_path / "o", dry_run=True, link=True, progress=False)
    assert not (tmp_path / "o").exists()
    assert report.counts == {"categories": 2, "train/good": 6, "test/good": 4, "test/anomaly": 5, "skipped": 0,
                             "excluded": 0}
    assert "dry run, nothing written" in report.summary()


def test_refuses_non_empty_destination_and_overwrite_replaces_only_converted(visa_src, tmp_path):
    src, _ = visa_src
    out = tmp_path / "o"
    (out / "pcb1").mkdir(parents=True)
    (out / "pcb1" / "mine.txt").write_text("user data")
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OSError, match="is not empty; pass --overwrite"):
        convert_visa(src, out, categories=["candle"], progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "pcb1"]
    convert_visa(src, out, categories=["candle"], overwrite=True, progress=False)
    (out / "candle" / "stale.txt").write_text("from an earlier run")
    convert_visa(src, out, categories=["candle"], overwrite=True, defect_types="annotation", progress=False)
    assert _files(out / "candle") == _expected_files("candle", "annotation")  # replaced as a whole
    assert (out / "pcb1" / "mine.txt").read_text() == "user data" and (out / "keep.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["candle", "keep.txt", "pcb1"]


def test_interrupted_run_leaves_no_partial_category(visa_src, tmp_path, monkeypatch):
    src, _ = visa_src
    real = visa._write_mask
    calls = []

    def interrupt(path, support):
        calls.append(path)
        if len(calls) == 5:  # pcb1's second mask (candle has 3)
            raise KeyboardInterrupt
        real(path, support)

    monkeypatch.setattr(visa, "_write_mask", interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert_visa(src, tmp_path / "o", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["candle"]  # no pcb1, no hidden staging dir
    assert _files(tmp_path / "o" / "candle") == _expected_files("candle", "bad")


# ------------------------------------------------------------------------------ bad input
def test_reported_skips_excluded_ignored_and_empty_masks(fresh_src, tmp_path):
    src = fresh_src
    (src / "candle/Data/Images/Normal/0001.JPG").unlink()  # missing image
    (src / "candle/Data/Masks/Anomaly/000.png").unlink()  # missing mask
    data = (src / "candle/Data/Images/Normal/0003.JPG").read_bytes()
    (src / "candle/Data/Images/Normal/0003.JPG").write_bytes(data[:len(data) // 2])  # truncated JPEG
    (src / "pcb1/Data/Masks/Anomaly/000.png").write_bytes(b"not a png")  # unreadable mask
    Image.fromarray(np.ones((10, 10), np.uint8)).save(src / "candle/Data/Masks/Anomaly/001.png")  # wrong size
    Image.fromarray(np.zeros((28, 36), np.uint8)).save(src / "pcb1/Data/Masks/Anomaly/001.png")  # empty mask
    _jpg(src / "pcb1/Data/Images/Normal/0099.JPG", SIZES["pcb1"], 7)  # not in the split file
    split = src / "split_csv" / "2cls_custom.csv"  # a train anomaly, as the 2cls files have
    split.write_text((src / "split_csv/1cls.csv").read_text()
                     .replace("pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG",
                              "pcb1,train,anomaly,pcb1/Data/Images/Anomaly/000.JPG"))
    before = _digest(src)
    report = convert_visa(src, tmp_path / "o", split_file=split, progress=False)  # absolute split path
    assert _digest(src) == before
    assert report.missing == [str(src / "candle/Data/Images/Normal/0001.JPG"),
                              str(src / "candle/Data/Masks/Anomaly/000.png")]
    assert [u.split(" (")[0] for u in report.unreadable] == [str(src / "candle/Data/Images/Normal/0003.JPG"),
                                                              str(src / "candle/Data/Masks/Anomaly/001.png")]
    assert "truncated" in report.unreadable[0] and "size 10x10 differs from its image's 40x30" in report.unreadable[1]
    assert report.excluded == [str(src / "pcb1/Data/Images/Anomaly/000.JPG")]  # its broken mask is not read
    assert report.ignored == ["pcb1/Data/Images/Normal/0099.JPG"]
    assert report.categories["candle"] == {"train/good": 2, "test/good": 1, "test/bad": 1, "skipped": 4,
                                           "excluded": 0}
    assert report.categories["pcb1"] == {"train/good": 3, "test/good": 2, "test/bad": 1, "skipped": 0,
                                         "excluded": 1}
    assert any(n.startswith("pcb1: 1 anomaly masks have no non-zero pixel") for n in report.notes)
    assert any(n.startswith("pcb1: 1 train anomalies excluded") for n in report.notes)
    saved = json.loads((tmp_path / "o" / "candle" / "conversion_report.json").read_text())
    assert saved["missing"] == report.missing and saved["counts"]["skipped"] == 4
    assert len(list_samples(tmp_path / "o" / "candle", "test")) == 2
    summary = report.summary()
    assert "missing (2):" in summary and "unreadable (2):" in summary and "ignored (1):" in summary


def test_category_without_readable_training_image_is_an_error(fresh_src, tmp_path):
    for i in range(N_TRAIN):
        (fresh_src / f"pcb1/Data/Images/Normal/{i:04d}.JPG").write_bytes(b"broken")
    with pytest.raises(ValueError, match="category pcb1 must keep at least one readable train/good image.*"
                                         "3 samples skipped: 0 files missing, 3 unreadable"):
        convert_visa(fresh_src, tmp_path / "o", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["candle"]  # written before pcb1; pcb1 absent


CANDLE_ANOMALY = "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png"


def _replace(old: str, new: str):
    return lambda lines: [new if line == old else line for line in lines]


@pytest.mark.parametrize("edit, error, message", [
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.replace(",test,", ",val,")), ValueError,
     r"1cls.csv:\d+: split must be one of train, test, got 'val'"),
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.replace(",anomaly,", ",defect,")), ValueError,
     r"1cls.csv:\d+: label must be one of normal, anomaly, got 'defect'"),
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.replace(",candle/Data/Images", ",/data/candle/Data/Images")),
     ValueError, r"image must be a path relative to the dataset root without '..', got '/data/candle"),
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.replace(",candle/Data/Masks", ",candle/../../etc/Masks")),
     ValueError, r"mask must be a path relative to the dataset root without '..'"),
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.replace(",candle/Data/Images", ",C:/VisA/candle/Data/Images")),
     ValueError, r"image must be a path relative to the dataset root"),
    (lambda lines: lines + [CANDLE_ANOMALY], ValueError, r"1cls.csv:17: image .* must be listed once, got it "
                                                         r"also at .*1cls.csv:7"),
    (lambda lines: lines + ["candle,train,normal,candle/Data/Images/Normal/0004.JPG,"], ValueError,
     "must be listed once"),  # train and test: a leak
    (lambda lines: lines + ["candle,test,normal,candle/Data/Extra/0004.JPG,"], ValueError,
     r"would be written as test/good/0004\.\* like candle/Data/Images/Normal/0004.JPG"),
    (lambda lines: ["object,split,image,mask"] + lines[1:], ValueError,
     "must start with a header naming the columns object,split,label,image,mask, got object,split,image,mask"),
    (lambda lines: lines + ["candle,test,anomaly,candle/Data/Images/Anomaly/009.JPG,scratch,x.png"], ValueError,
     r"1cls.csv:17: a row must have 5 fields as the header, got 6"),
    (_replace(CANDLE_ANOMALY, CANDLE_ANOMALY.split(",candle/Data/Masks")[0] + ","), ValueError,
     "mask must name the defect mask of a test anomaly"),
    (lambda lines: lines[:1] + [lines[1] + "candle/Data/Masks/Anomaly/000.png"] + lines[2:], ValueError,
     "mask must be empty for a normal image"),
    (lambda lines: lines + ["../x,test,normal,x/0.JPG,"], ValueError, "object must be a plain directory name"),
    (lambda lines: lines + ["candle,test,normal,candle/readme.txt,"], ValueError, "image must be an image file"),
    (lambda lines: [line for line in lines if not line.startswith("pcb1,train")], ValueError,
     "must list train normal images of pcb1, got none"),
    (lambda lines: [], ValueError, "must start with a header naming the columns .*got an empty file"),
])
def test_split_file_errors(fresh_src, tmp_path, edit, error, message):
    _rewrite_split(fresh_src, edit)
    with pytest.raises(error, match=message):
        convert_visa(fresh_src, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # raised before anything was written


def _replace_anno(src: Path, category: str, old: str, new: str) -> None:
    path = src / category / "image_anno.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("edit, error, message", [
    (lambda s: (s / "pcb1" / "image_anno.csv").unlink(), FileNotFoundError,
     r"annotation file .*pcb1/image_anno.csv does not exist; defect_types='annotation'"),
    (lambda s: _replace_anno(s, "candle", "candle/Data/Images/Anomaly/002.JPG", "candle/Data/Images/Anomaly/x.JPG"),
     ValueError, r"must list every test anomaly, got no row for candle/Data/Images/Anomaly/002.JPG \(.*1cls.csv:9\)"),
    (lambda s: _replace_anno(s, "pcb1", ",bent,", ",normal,"), ValueError,
     r"image_anno.csv:7: label of pcb1/Data/Images/Anomaly/000.JPG must name its defect .*got 'normal'"),
    (lambda s: _replace_anno(s, "pcb1", ",bent,", ",??,"), ValueError,
     r"label must name a defect with a letter or digit .*got '\?\?'"),
    (lambda s: _replace_anno(s, "pcb1", ",bent,", ",Good,"), ValueError, r"not good/ok\), got 'Good'"),
    (lambda s: _replace_anno(s, "candle", '"wax melded out,chip around edge"', "wax melded out,chip"),
     ValueError, r"image_anno.csv:8: a row must have 3 fields as the header, got 4 \(a field holding a comma"),
])
def test_annotation_errors(fresh_src, tmp_path, edit, error, message):
    edit(fresh_src)
    convert_visa(fresh_src, tmp_path / "bad_mode", progress=False)  # "bad" does not read image_anno.csv
    with pytest.raises(error, match=message):
        convert_visa(fresh_src, tmp_path / "o", defect_types="annotation", progress=False)
    assert not (tmp_path / "o").exists()


def test_argument_errors(visa_src, tmp_path):
    src, _ = visa_src
    with pytest.raises(OSError, match="source .* does not exist"):
        convert_visa(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match=r"split file .*split_csv/2cls.csv does not exist"):
        convert_visa(src, tmp_path / "o", split_file="split_csv/2cls.csv")
    with pytest.raises(ValueError, match=r"categories must be objects of the split file .*\(candle, pcb1\), "
                                         r"got bottle"):
        convert_visa(src, tmp_path / "o", categories=["candle", "bottle"])
    with pytest.raises(ValueError, match="categories must name at least one"):
        convert_visa(src, tmp_path / "o", categories=[])
    with pytest.raises(ValueError, match="category must be a plain directory name"):
        convert_visa(src, tmp_path / "o", categories=["../candle"])
    with pytest.raises(ValueError, match="defect_types must be one of"):
        convert_visa(src, tmp_path / "o", defect_types="labels")
    with pytest.raises(ValueError, match="must not be the source"):
        convert_visa(src, src / "mvtec", dry_run=True)
    assert not (src / "mvtec").exists()


# ------------------------------------------------------------------------------ CLI
def test_cli(visa_src, tmp_path, capsys):
    src, _ = visa_src
    out = tmp_path / "o"
    assert cli.main(["convert", "visa", str(src), str(out), "--category", "pcb1", "--defect-types", "annotation",
                     "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "pcb1: train/good 3, test/good 2, test/bent 1, test/scratch_deep 1" in text
    assert f"wrote pcb1 under {out}" in text
    assert sorted(p.name for p in out.iterdir()) == ["pcb1"]
    assert cli.main(["convert", "visa", str(src), str(out), "--quiet"]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["convert", "visa", str(src), str(tmp_path / "p"), "--category", "candle", "pcb1",
                     "--link", "--dry-run", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "dry run, nothing written" in text and "categories 2, train/good 6" in text
    assert not (tmp_path / "p").exists()
