"""KolektorSDD and KolektorSDD2 to the MVTec AD layout (see shared/reference/other-seeds.md, 2).

KolektorSDD (ViCoS "fine annotations" release)::

    SRC/kos01 .. kos50/PartN.jpg + PartN_label.bmp        (grey JPG about 500 x 1240..1270)

KolektorSDD2::

    SRC/{train,test}/<id>.png + <id>_GT.png                  (RGB PNG about 230 x 630)

Output (one category directory, MVTec names)::

    DST/<category>/train/good/NNN.png
    DST/<category>/test/{good,defect}/NNN.png
    DST/<category>/ground_truth/defect/NNN_mask.png          (0/255)
    DST/<category>/manifest.csv                              (output file -> source files)
    DST/<category>/conversion_report.json                    (counts, skipped files, settings)

Conventions (the reference script's choices, made reproducible):
- A sample is defective iff its label has a non-zero pixel. Labels are read as 8-bit grey.
- Images are decoded by OpenCV as 3-channel BGR (a grey JPG becomes 3 equal channels, as the
  reference's ``imread(path, 1)``) and written as 3-channel PNG (lossless; compression level 1
  instead of the reference's 0: same pixels, smaller files).
- Size ``(W, H)``: KolektorSDD 500 x 1240, KolektorSDD2 232 x 640 (the official input size).
  ``fit="resize"`` (default, the reference): ``cv2.resize`` bilinear to the size, which
  distorts the aspect ratio. ``fit="pad"``: no interpolation; each axis shorter than the size
  is zero-padded evenly on both sides (the odd pixel after), each longer axis centre-cropped
  (the odd pixel dropped at the end). ``size=None`` keeps every image's own size.
- Masks: the label is binarised (``> 0`` -> 255) before it is resized bilinearly and
  thresholded ``> 127`` -> 255. For 0/255 labels this equals the reference (resize then
  threshold); binarising first also keeps 0/1-valued labels, which the reference would erase.
- KolektorSDD split: the listing is sorted (folders by name, parts by number, so Part10 follows
  Part9), defective samples go to ``test/defect`` in that order; the good samples are permuted
  with ``seed`` (counter RNG, stream ``STREAM_SPLIT``), the last ``n_test_good`` (default: as
  many as the defects, the reference's choice) of the permutation go to ``test/good`` and the
  rest to ``train/good``, each numbered from 000 in permutation order. The reference shuffles
  an unsorted listing without a seed, so its split is not reproducible; ours is.
  ``kos21/Part7`` (skipped by the official ViCoS loader) is kept unless listed in ``exclude``;
  the report says so.
- KolektorSDD2 mapping: train negatives -> ``train/good``, test negatives -> ``test/good``,
  test positives -> ``test/defect``; train positives are excluded (default) or moved to
  ``test/defect`` (``train_positives="test"``); both are reported. Output names keep the ids
  (``10000.png``, ``10000_mask.png``); a train id moved to test that collides with a test id
  gets the prefix ``train_``.
- Unreadable images or labels, images without a label and labels without an image are
  skipped and listed in the report; nothing in SRC is ever written. The category directory is
  written to a temporary directory beside it and moved into place with ``os.replace``; a
  non-empty DST is refused unless ``overwrite`` (which replaces only ``DST/<category>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import csv_text, staged_dir
from ._common import PNG_LEVEL, ConversionReport, check_paths, natural_key

KSDD_SIZE = (500, 1240)  # (W, H), the reference's cv2 dsize
KSDD2_SIZE = (232, 640)  # (W, H), the official KolektorSDD2 input size
FITS = ("resize", "pad")
TRAIN_POSITIVES = ("exclude", "test")
KSDD_KNOWN_ODD = "kos21/Part7"  # skipped by vicoslab/mixed-segdec-net-comind2021:data/input_ksdd.py


@dataclasses.dataclass
class _Item:
    key: str  # "kos01/Part3" or "train/10000"
    image: Path
    label: Path
    defect: bool = False


# ---------------------------------------------------------------------------- helpers
def seeded_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(n, seed)``.

    Sorts the counter RNG's 64-bit draws ``bits(stream_key(seed, STREAM_SPLIT, 0), i)``
    (stable, so the astronomically unlikely tie keeps index order).

    Example:
        >>> sorted(seeded_permutation(5, 0).tolist())
        [0, 1, 2, 3, 4]
    """
    from ..reference import _rng

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    key = _rng.stream_key(int(seed), _rng.STREAM_SPLIT, 0)
    draws = _rng.bits(key, np.arange(int(n), dtype=np.uint64))
    return np.argsort(np.atleast_1d(draws), kind="stable").astype(np.int64)


def parse_size(value: Any) -> tuple[int, int] | None:
    """``"500x1240"`` / ``(500, 1240)`` -> ``(W, H)``; ``None``/``"keep"`` -> ``None``."""
    if value is None or value == "keep":
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not m:
            raise ValueError(f"size must be WxH (e.g. 500x1240) or 'keep', got {value!r}")
        value = (int(m.group(1)), int(m.group(2)))
    if (not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ValueError(f"size must be two positive ints (W, H), got {value!r}")
    return int(value[0]), int(value[1])


def _decode(path: Path, grey: bool) -> np.ndarray | None:
    """Decode with OpenCV from bytes (robust to non-ASCII paths); None if unreadable."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    return img


def _pad_or_crop(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    out = np.zeros((height, width) + a.shape[2:], dtype=a.dtype)

    def spans(n_in: int, n_out: int) -> tuple[slice, slice]:
        if n_in >= n_out:  # centre crop
            start = (n_in - n_out) // 2
            return slice(start, start + n_out), slice(0, n_out)
        start = (n_out - n_in) // 2  # centre pad
        return slice(0, n_in), slice(start, start + n_in)

    (sy, dy), (sx, dx) = spans(a.shape[0], height), spans(a.shape[1], width)
    out[dy, dx] = a[sy, sx]
    return out


def _fit_image(a: np.ndarray, size: tuple[int, int] | None, fit: str) -> np.ndarray:
    import cv2

    if size is None or (a.shape[1], a.shape[0]) == size:
        return a
    if fit == "pad":
        return _pad_or_crop(a, size)
    return cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)


def _fit_mask(label: np.ndarray, size: tuple[int, int] | None, fit: str) -> np.ndarray:
    binary = np.where(label > 0, np.uint8(255), np.uint8(0))
    return np.where(_fit_image(binary, size, fit) > 127, np.uint8(255), np.uint8(0))


def _write_png(path: Path, a: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:  # cv2.imwrite's silent False is one of the reference's pitfalls
        raise OSError(f"could not encode {path} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def _check_paths(src: Any, dst: Any, category: str, overwrite: bool) -> tuple[Path, Path]:
    return check_paths(src, dst, [category], overwrite,
                       hint=f"pass --overwrite (overwrite=True) to replace {Path(dst) / category}")


def _classify(items: list[_Item], report: ConversionReport) -> list[_Item]:
    """Decode every label and image once; keep the readable pairs, set ``defect``."""
    kept = []
    for it in items:
        label = _decode(it.label, grey=True)
        image = _decode(it.image, grey=False)
        bad = [str(p) for p, a in ((it.image, image), (it.label, label)) if a is None]
        if bad:
            report.unreadable.extend(bad)
            continue
        if label.shape[:2] != image.shape[:2]:
            report.unreadable.append(f"{it.label} (size {label.shape[1]}x{label.shape[0]} differs from its "
                                     f"image's {image.shape[1]}x{image.shape[0]})")
            continue
        it.defect = bool(label.any())
        kept.append(it)
    return kept


_MANIFEST_HEADER = ("output", "split", "label", "source_image", "source_label")


def _write_category(dst: Path, category: str, plan: list[tuple[_Item, str, str | None]],
                    size: tuple[int, int] | None, fit: str, report: ConversionReport) -> None:
    """Write ``plan`` (item, output image rel path, output mask rel path) atomically."""
    dst.mkdir(parents=True, exist_ok=True)
    with staged_dir(dst / category) as tmp:
        rows = []
        for it, out_img, out_mask in plan:
            image = _decode(it.image, grey=False)
            label = _decode(it.label, grey=True) if out_mask else None
            if image is None or (out_mask and label is None):  # changed since the first pass
                raise OSError(f"{it.image} or its label became unreadable during the conversion")
            _write_png(tmp / out_img, _fit_image(image, size, fit))
            if out_mask:
                _write_png(tmp / out_mask, _fit_mask(label, size, fit))
            rows.append([out_img, out_img.split("/")[0], int(it.defect), str(it.image), str(it.label)])
        for sub in ("train/good", "test/good"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        (tmp / "manifest.csv").write_text(csv_text(_MANIFEST_HEADER, rows))
        (tmp / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def _check_common(fit: str, seed: Any) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def _mvtec_name(i: int, n: int) -> str:
    return f"{i:0{max(3, len(str(max(n - 1, 0))))}d}"


# ------------------------------------------------------------------------- KolektorSDD
def _list_ksdd(src: Path, report: ConversionReport) -> list[_Item]:
    items = []
    for folder in sorted(src.iterdir(), key=lambda p: natural_key(p.name)):
        if folder.name.startswith("."):
            continue
        if not folder.is_dir():
            report.ignored.append(folder.name)
            continue
        files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        labels, images = {}, {}
        for name, p in files.items():
            m = re.fullmatch(r"(.+)_label\.bmp", name, flags=re.IGNORECASE)
            if m:
                labels[m.group(1)] = p
            elif p.suffix.lower() in (".jpg", ".jpeg"):
                images[p.stem] = p
            else:
                report.ignored.append(f"{folder.name}/{name}")
        for stem in sorted(set(labels) | set(images), key=natural_key):
            key = f"{folder.name}/{stem}"
            if stem not in labels:
                report.images_without_label.append(str(images[stem]))
            elif stem not in images:
                report.labels_without_image.append(str(labels[stem]))
            else:
                items.append(_Item(key, images[stem], labels[stem]))
    return items


def convert_kolektorsdd(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    seed: int = 0,
    size: Any = KSDD_SIZE,
    fit: str = "resize",
    n_test_good: int | None = None,
    category: str = "metal",
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    dry_run: bool = False,
) -> ConversionReport:
    """Convert raw KolektorSDD (``kosNN/PartN.jpg`` + ``PartN_label.bmp``) to the MVTec layout.

    Args:
        src: the KolektorSDD root holding ``kos01`` .. ``kos50``; only read.
        dst: output root; ``DST/<category>`` is written. Must be absent or empty unless
            ``overwrite``.
        seed: split seed (same seed and files -> same split).
        size: output ``(W, H)`` or ``"WxH"`` (default 500 x 1240), or ``None`` to keep sizes.
        fit: ``"resize"`` (bilinear, the reference) or ``"pad"`` (zero-pad / centre-crop).
        n_test_good: good images in ``test/good`` (default: the number of defective images).
        category: category directory name (the reference's ``metal``).
        exclude: sample ids to skip, e.g. ``["kos21/Part7"]``.
        overwrite: replace an existing ``DST/<category>``.
        dry_run: list, classify and report without writing anything.

    Returns:
        The :class:`ConversionReport` (counts ``train/good``, ``test/good``, ``test/defect``).

    Raises:
        OSError: missing source, non-empty destination. ValueError: bad options, overlapping
        source and destination, no usable samples, ``n_test_good`` leaving no training image.

    Example:
        >>> r = convert_kolektorsdd("KolektorSDD", "ksdd_mvtec", seed=0)  # doctest: +SKIP
        >>> r.counts  # doctest: +SKIP
        {'samples': 399, 'defect': 52, 'good': 347, 'train/good': 295, 'test/good': 52, 'test/defect': 52}
    """
    _check_common(fit, seed)
    size = parse_size(size)
    src, dst = _check_paths(src, dst, category, overwrite)
    report = ConversionReport("KolektorSDD", str(src), str(dst / category), dry_run=bool(dry_run), settings={
        "seed": int(seed), "size": list(size) if size else None, "fit": fit, "category": category,
        "n_test_good": n_test_good, "exclude": list(exclude)})
    items = _list_ksdd(src, report)
    wanted = set(exclude)
    report.excluded = [it.key for it in items if it.key in wanted]
    missing = sorted(wanted - {it.key for it in items})
    if missing:
        report.notes.append(f"exclude ids not found: {', '.join(missing)}")
    items = [it for it in items if it.key not in wanted]
    if any(it.key == KSDD_KNOWN_ODD for it in items):
        report.notes.append(f"{KSDD_KNOWN_ODD} is included (the official ViCoS loader skips it; "
                            f"pass --exclude {KSDD_KNOWN_ODD} to do the same)")
    items = _classify(items, report)
    if not items:
        raise ValueError(f"source {src} must contain kosNN/PartN.jpg + PartN_label.bmp pairs that can be read, "
                         f"got none ({len(report.unreadable)} unreadable, "
                         f"{len(report.images_without_label)} images without label)")
    defects = [it for it in items if it.defect]
    goods = [it for it in items if not it.defect]
    n_tg = len(defects) if n_test_good is None else n_test_good
    if isinstance(n_tg, bool) or not isinstance(n_tg, (int, np.integer)) or not 0 <= n_tg < len(goods):
        raise ValueError(f"n_test_good must be an int in [0, {len(goods)}) (at least one good image must stay "
                         f"for training; {len(goods)} good and {len(defects)} defective found), got {n_tg!r}")
    if not defects:
        report.notes.append("no defective sample found (every label is empty): test/defect is empty")
    shuffled = [goods[i] for i in seeded_permutation(len(goods), int(seed))]
    train, test_good = shuffled[:len(goods) - n_tg], shuffled[len(goods) - n_tg:]
    plan: list[tuple[_Item, str, str | None]] = []
    for i, it in enumerate(train):
        plan.append((it, f"train/good/{_mvtec_name(i, len(train))}.png", None))
    for i, it in enumerate(test_good):
        plan.append((it, f"test/good/{_mvtec_name(i, len(test_good))}.png", None))
    for i, it in enumerate(defects):
        name = _mvtec_name(i, len(defects))
        plan.append((it, f"test/defect/{name}.png", f"ground_truth/defect/{name}_mask.png"))
    report.counts = {"samples": len(items), "defect": len(defects), "good": len(goods), "train/good": len(train),
                     "test/good": len(test_good), "test/defect": len(defects)}
    if not dry_run:
        _write_category(dst, category, plan, size, fit, report)
    return report


# ------------------------------------------------------------------------ KolektorSDD2
def _list_ksdd2(src: Path, split: str, report: ConversionReport) -> list[_Item]:
    folder = src / split
    if not folder.is_dir():
        raise ValueError(f"source {src} must contain {split}/ (KolektorSDD2 layout: train/ and test/ with "
                         f"<id>.png + <id>_GT.png), got no {folder}")
    images, masks = {}, {}
    for p in folder.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        m = re.fullmatch(r"(.+)_GT\.png", p.name, flags=re.IGNORECASE)
        if m:
            masks[m.group(1)] = p
        elif p.suffix.lower() == ".png":
            images[p.stem] = p
        else:
            report.ignored.append(f"{split}/{p.name}")
    items = []
    for stem in sorted(set(images) | set(masks), key=natural_key):
        if stem not in masks:
            report.images_without_label.append(str(images[stem]))
        elif stem not in images:
            report.labels_without_image.append(str(masks[stem]))
        else:
            items.append(_Item(f"{split}/{stem}", images[stem], masks[stem]))
    return items


def convert_kolektorsdd2(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    size: Any = KSDD2_SIZE,
    fit: str = "resize",
    train_positives: str = "exclude",
    category: str = "ksdd2",
    overwrite: bool = False,
    dry_run: bool = False,
) -> ConversionReport:
    """Convert KolektorSDD2 (``train/``, ``test/`` with ``<id>.png`` + ``<id>_GT.png``) to MVTec.

    Args:
        src: the KolektorSDD2 root; only read.
        dst: output root; ``DST/<category>`` is written (absent or empty unless ``overwrite``).
        size: output ``(W, H)`` / ``"WxH"`` (default 232 x 640) or ``None`` to keep sizes.
        fit: ``"resize"`` (bilinear) or ``"pad"`` (zero-pad / centre-crop).
        train_positives: ``"exclude"`` (default) or ``"test"`` (add them to ``test/defect``).
        category: category directory name.
        overwrite: replace an existing ``DST/<category>``.
        dry_run: report without writing.

    Returns:
        The :class:`ConversionReport`.

    Example:
        >>> convert_kolektorsdd2("KSDD2", "ksdd2_mvtec").counts["train/good"]  # doctest: +SKIP
    """
    _check_common(fit, 0)
    if train_positives not in TRAIN_POSITIVES:
        raise ValueError(f"train_positives must be one of {TRAIN_POSITIVES}, got {train_positives!r}")
    size = parse_size(size)
    src, dst = _check_paths(src, dst, category, overwrite)
    report = ConversionReport("KolektorSDD2", str(src), str(dst / category), dry_run=bool(dry_run), settings={
        "size": list(size) if size else None, "fit": fit, "category": category,
        "train_positives": train_positives})
    train = _classify(_list_ksdd2(src, "train", report), report)
    test = _classify(_list_ksdd2(src, "test", report), report)
    train_good = [it for it in train if not it.defect]
    train_bad = [it for it in train if it.defect]
    test_good = [it for it in test if not it.defect]
    test_bad = [it for it in test if it.defect]
    if not train_good:
        raise ValueError(f"source {src}/train must contain readable negative (empty _GT) images, got none")
    plan: list[tuple[_Item, str, str | None]] = []
    plan += [(it, f"train/good/{it.image.stem}.png", None) for it in train_good]
    plan += [(it, f"test/good/{it.image.stem}.png", None) for it in test_good]
    moved = train_bad if train_positives == "test" else []
    test_ids = {it.image.stem for it in test}
    for it in test_bad + moved:
        stem = it.image.stem
        if it in moved and stem in test_ids:
            stem = f"train_{stem}"
        plan.append((it, f"test/defect/{stem}.png", f"ground_truth/defect/{stem}_mask.png"))
    if train_positives == "exclude":
        report.excluded = [it.key for it in train_bad]
        if train_bad:
            report.notes.append(f"{len(train_bad)} defective training images excluded "
                                f"(--train-positives test moves them to test/defect)")
    elif train_bad:
        report.notes.append(f"{len(train_bad)} defective training images moved to test/defect")
    report.counts = {"train": len(train), "test": len(test), "train/good": len(train_good),
                     "test/good": len(test_good), "test/defect": len(test_bad) + len(moved),
                     "train_positives": len(train_bad)}
    if not dry_run:
        _write_category(dst, category, plan, size, fit, report)
    return report
