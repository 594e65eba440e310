"""VisA to the MVTec AD layout.

Source (the public VisA release, unpacked; only read)::

    SRC/split_csv/1cls.csv                               object,split,label,image,mask
    SRC/<object>/Data/Images/Normal/*.JPG
    SRC/<object>/Data/Images/Anomaly/*.JPG
    SRC/<object>/Data/Masks/Anomaly/<stem>.png           defect pixels are small non-zero ints
    SRC/<object>/image_anno.csv                          image,label,mask (label: defect text)

Output (one directory per category, MVTec names)::

    DST/<category>/train/good/<name>                     the source file, its name kept (0836.JPG)
    DST/<category>/test/good/<name>
    DST/<category>/test/<type>/<name>                    <type>: "bad", or from image_anno.csv
    DST/<category>/ground_truth/<type>/<stem>_mask.png   8-bit grey, 0/255, <stem> = the image's
    DST/<category>/manifest.csv                          output files -> source files, label text
    DST/<category>/conversion_report.json                this category's counts, skips, settings

Conventions:
- The split file decides everything (default ``split_csv/1cls.csv``, the protocol of anomalib
  and spot-diff; a path relative to SRC, or absolute); its image and mask paths are relative to
  SRC. ``train``/``normal`` -> ``train/good``, ``test``/``normal`` -> ``test/good``,
  ``test``/``anomaly`` -> ``test/<type>`` with its mask. ``train``/``anomaly`` rows (the
  ``2cls_*`` split files have them) are excluded and listed in the report: an MVTec training set
  holds normal images only. Categories: every ``object`` of the split file, or ``categories``.
- Defect types: ``"bad"`` (default; one folder, as anomalib and spot-diff) or ``"annotation"``:
  the label of ``<object>/image_anno.csv``, which makes the output usable by ``ofdb-fast
  cluster`` (its classes are the ``test/<type>`` folders). A label is split at commas into
  defects, each sanitised to a folder name (:func:`defect_folder`: lower case, every run of
  characters other than ``a-z0-9`` becomes ``_``, ``_`` stripped at both ends, so
  ``"chip around edge"`` -> ``chip_around_edge``). One distinct defect names the folder; an
  image with several goes to ``combined``, MVTec AD's folder for images with more than one
  defect, which ``ofdb-fast cluster`` leaves out of the clustering (a folder per combination
  would make classes of one or two images). Labels that differ only in case or punctuation share
  a folder; ``manifest.csv`` keeps each label's text. The annotation file's image paths may be
  relative to SRC (``candle/Data/...``, as released) or to the category folder.
- Images are copied byte for byte (no re-encoding; file names kept), or hard-linked with
  ``link=True``. A hard link *is* the source file: editing an output image edits SRC. Where no
  link can be made (SRC and DST on different file systems, a file system without hard links)
  the image is copied and the report counts it.
- Every image is decoded once to prove it is readable, by Pillow (a JPEG at 1/8 scale through
  draft mode, which still decodes every entropy-coded byte, so a truncated file is caught).
- Masks are decoded by Pillow at full size (a palette PNG gives its indices, a 16-bit PNG its
  values; in a colour mask any colour channel counts, alpha is ignored), binarised ``!= 0`` ->
  255 and written as 8-bit grey PNG. A mask must have its image's size. A mask without any
  non-zero pixel is kept (the image is still a test anomaly) and counted in a note.
- Errors and skips. The csv files define the benchmark, so a problem in them is an error naming
  ``file:line``, raised before anything is written: a missing split file or column, a row whose
  field count differs from the header's (an unquoted comma), a split other than train/test, a
  label other than normal/anomaly, an image or mask path that is absolute or contains ``..``
  (paths are checked as text; symlinks inside SRC are followed), an image without an image
  extension, an image listed twice (within or across splits), two images that would get the
  same output name, a normal row with a mask or a test anomaly without one, an object that is
  not a plain directory name, a category without train normal or test rows; in
  ``"annotation"`` mode also a missing annotation file, a test anomaly it does not list or
  labels ``normal``, a label without a letter or digit, or one that would name ``good``. A
  problem of one file (missing, unreadable, a mask whose size differs from its image's) skips
  that sample, listed in the report (``missing``, ``unreadable``): one damaged file should not
  block the other 10,820. A category left without a readable training or test image is an error.
- Files under ``<object>/Data/Images/`` that the split file does not name are listed as
  ``ignored`` (a wrong or truncated split file shows there).
- Output: a non-empty DST is refused unless ``overwrite``, which replaces only the converted
  ``DST/<category>`` directories (other entries of DST are kept). Each category is written into
  a hidden directory beside it and moved into place (``os.replace``) when complete, manifest and
  report included, so an interrupted run leaves each category complete or absent (a killed
  process may leave a hidden ``.<category>.tmp-*`` directory, never a partial ``<category>``).
  Categories are written in sorted order; an error in one leaves those before it converted.
- The returned report sums the categories (``counts``), keeps each one's counts
  (``categories``) and prefixes each one's notes with its name; the skipped and excluded files
  are listed as paths under SRC.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

from .._io import csv_text, staged_dir
from ._common import PNG_LEVEL, ConversionReport, check_paths, is_plain_name, natural_key

DEFAULT_SPLIT_FILE = "split_csv/1cls.csv"
DEFECT_TYPES = ("bad", "annotation")
BAD = "bad"  # the single defect folder of anomalib's and spot-diff's VisA conversion
ANNOTATION_FILE = "image_anno.csv"
SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
ANNOTATION_COLUMNS = ("image", "label")
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly")
# os.link errors meaning "no hard link possible here" (copy instead); anything else is raised.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})
_MANIFEST_HEADER = ("output", "split", "label", "defect_type", "mask", "annotation", "source_image",
                    "source_mask")


@dataclasses.dataclass
class VisaReport(ConversionReport):
    """:class:`ConversionReport` plus the files named but not found and the per-category counts."""

    LISTED: ClassVar[tuple[str, ...]] = (*ConversionReport.LISTED, "missing")

    missing: list[str] = dataclasses.field(default_factory=list)
    categories: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def _count_lines(self) -> list[str]:
        return super()._count_lines() + [f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                                         for name, counts in self.categories.items()]


@dataclasses.dataclass
class _Sample:
    where: str  # "<split file>:<line>"
    category: str
    split: str  # "train" | "test"
    anomaly: bool
    image: PurePosixPath  # relative to SRC
    mask: PurePosixPath | None  # relative to SRC
    annotation: str = ""  # image_anno.csv's label text ("annotation" mode)
    defect_type: str = "good"  # folder under test/ and ground_truth/

    @property
    def excluded(self) -> bool:
        return self.split == "train" and self.anomaly

    @property
    def output(self) -> str:
        return f"{self.split}/{self.defect_type}/{self.image.name}"

    @property
    def output_mask(self) -> str:
        return f"ground_truth/{self.defect_type}/{self.image.stem}_mask.png" if self.anomaly else ""


# ------------------------------------------------------------------------------ csv files
def defect_folder(label: str) -> str | None:
    """The ``test/`` folder for an ``image_anno.csv`` label (see the module docstring).

    Returns:
        The sanitised defect name, ``"combined"`` for several distinct defects, or None when
        no comma-separated part has a letter or digit.

    Example:
        >>> defect_folder("chip around edge"), defect_folder("Burnt, chip-around edge")
        ('chip_around_edge', 'combined')
    """
    from ..cluster.pipeline import COMBINED

    names: list[str] = []
    for part in label.split(","):
        name = re.sub(r"[^a-z0-9]+", "_", part.strip().lower()).strip("_")
        if name and name not in names:
            names.append(name)
    if not names:
        return None
    return names[0] if len(names) == 1 else COMBINED


def _read_table(path: Path, columns: Sequence[str], what: str) -> list[tuple[str, dict[str, str]]]:
    """``(where, row)`` for every non-blank row of a csv file whose header has ``columns``.

    Header names are compared stripped and lower-cased (a UTF-8 BOM is dropped); values are
    stripped. Quoted fields may hold commas and newlines (the ``csv`` module's dialect).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a file")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            names = [h.strip().lower() for h in header]
            if any(c not in names for c in columns):
                raise ValueError(f"{what} {path} must start with a header naming the columns {','.join(columns)}, "
                                 f"got {','.join(header) or 'an empty file'}")
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue
                where = f"{path}:{reader.line_num}"
                if len(fields) != len(names):
                    raise ValueError(f"{where}: a row must have {len(names)} fields as the header, got "
                                     f"{len(fields)} (a field holding a comma must be quoted)")
                rows.append((where, {n: v.strip() for n, v in zip(names, fields)}))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} must be UTF-8 text, got undecodable bytes ({exc.reason})") from None
    except csv.Error as exc:
        raise ValueError(f"{what} {path} must be a csv file, got an error near line {reader.line_num}: {exc}") from None
    return rows


def _relative(value: str, where: str, what: str) -> PurePosixPath:
    p = PurePosixPath(value)
    if not p.parts:
        raise ValueError(f"{where}: {what} must be a path relative to the dataset root, got {value!r}")
    if p.is_absolute() or PureWindowsPath(value).anchor or ".." in p.parts:
        raise ValueError(f"{where}: {what} must be a path relative to the dataset root without '..', "
                         f"got {value!r}")
    return p


def _read_split(path: Path) -> list[_Sample]:
    from ..patchcore.data import IMAGE_EXTENSIONS

    samples: list[_Sample] = []
    seen: dict[PurePosixPath, str] = {}
    for where, row in _read_table(path, SPLIT_COLUMNS, "split file"):
        obj, split, label = row["object"], row["split"].lower(), row["label"].lower()
        if not is_plain_name(obj):
            raise ValueError(f"{where}: object must be a plain directory name, got {obj!r}")
        if split not in SPLITS:
            raise ValueError(f"{where}: split must be one of {', '.join(SPLITS)}, got {row['split']!r}")
        if label not in LABELS:
            raise ValueError(f"{where}: label must be one of {', '.join(LABELS)}, got {row['label']!r}")
        image = _relative(row["image"], where, "image")
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{where}: image must be an image file ({' '.join(IMAGE_EXTENSIONS)}), "
                             f"got {row['image']!r}")
        mask = _relative(row["mask"], where, "mask") if row["mask"] else None
        anomaly = label == "anomaly"
        if not anomaly and mask is not None:
            raise ValueError(f"{where}: mask must be empty for a normal image, got {row['mask']!r}")
        if anomaly and split == "test" and mask is None:
            raise ValueError(f"{where}: mask must name the defect mask of a test anomaly, got an empty field")
        if image in seen:
            raise ValueError(f"{where}: image {image} must be listed once, got it also at {seen[image]}")
        seen[image] = where
        samples.append(_Sample(where, obj, split, anomaly, image, mask))
    return samples


def _read_annotations(src: Path, category: str) -> dict[PurePosixPath, tuple[str, str]]:
    """image (relative to SRC) -> (label text, where) from ``<category>/image_anno.csv``."""
    path = src / category / ANNOTATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist; defect_types='annotation' "
                                f"(--defect-types annotation) names the defect folders from each category's "
                                f"{ANNOTATION_FILE} (defect_types='bad' does not read it)")
    labels: dict[PurePosixPath, tuple[str, str]] = {}
    for where, row in _read_table(path, ANNOTATION_COLUMNS, "annotation file"):
        image = _relative(row["image"], where, "image")
        if image.parts[0] != category:
            image = PurePosixPath(category, image)
        if image in labels and labels[image][0] != row["label"]:
            raise ValueError(f"{where}: image {image} must have one label, got {row['label']!r} here and "
                             f"{labels[image][0]!r} at {labels[image][1]}")
        labels[image] = (row["label"], where)
    return labels


def _plan(src: Path, split_path: Path, category: str, samples: list[_Sample], defect_types: str) -> None:
    """Set each sample's defect type; raise on everything the csv files get wrong (no file I/O
    beyond the annotation file)."""
    from ..patchcore.data import NORMAL_FOLDERS

    if not any(s.split == "train" and not s.anomaly for s in samples):
        raise ValueError(f"split file {split_path} must list train normal images of {category}, got none")
    if not any(s.split == "test" for s in samples):
        raise ValueError(f"split file {split_path} must list test images of {category}, got none")
    labels = _read_annotations(src, category) if defect_types == "annotation" else {}
    outputs: dict[tuple[str, str], _Sample] = {}
    for s in samples:
        if s.anomaly and not s.excluded:
            s.defect_type = BAD
            if defect_types == "annotation":
                if s.image not in labels:
                    raise ValueError(f"annotation file {src / category / ANNOTATION_FILE} must list every test "
                                     f"anomaly, got no row for {s.image} ({s.where})")
                s.annotation, where = labels[s.image]
                folder = defect_folder(s.annotation)
                if s.annotation.strip().lower() == "normal":
                    raise ValueError(f"{where}: label of {s.image} must name its defect (it is a test anomaly at "
                                     f"{s.where}), got 'normal'")
                if folder is None or folder in NORMAL_FOLDERS:
                    raise ValueError(f"{where}: label must name a defect with a letter or digit (the folder "
                                     f"test/<defect>, not {'/'.join(NORMAL_FOLDERS)}), got {s.annotation!r}")
                s.defect_type = folder
        if s.excluded:
            continue
        key = (f"{s.split}/{s.defect_type}", s.image.stem)  # a stem names the mask too
        if key in outputs:
            raise ValueError(f"{s.where}: image {s.image} would be written as {key[0]}/{key[1]}.* like "
                             f"{outputs[key].image} ({outputs[key].where}); output names must be unique")
        outputs[key] = s


# ------------------------------------------------------------------------------ files
def _image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of a readable image; raises OSError/ValueError/SyntaxError otherwise."""
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG only; others in full
        im.load()
    return size


def _mask_support(path: Path) -> Any:
    """Boolean ``[H, W]``: the mask's non-zero pixels (see the module docstring)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        a = np.asarray(im)
        if im.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
            a = a[..., :-1]
    return a.any(axis=2) if a.ndim == 3 else a != 0


def _write_mask(path: Path, support: Any) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(support, np.uint8(255), np.uint8(0))).save(path, format="PNG",
                                                                         compress_level=PNG_LEVEL)


def _place(source: Path, target: Path, link: bool) -> str | None:
    """Copy ``source`` to ``target``, or hard-link it; return why a requested link was copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return None
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            shutil.copyfile(source, target)
            return exc.strerror or str(exc)
    shutil.copyfile(source, target)
    return None


def _unlisted(src: Path, category: str, samples: list[_Sample]) -> list[str]:
    from ..patchcore.data import IMAGE_EXTENSIONS

    root = src / category / "Data" / "Images"
    if not root.is_dir():
        return []
    listed = {src / s.image for s in samples}
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not p.name.startswith(".") and p not in listed]
    return sorted((p.relative_to(src).as_posix() for p in found), key=natural_key)


_IMAGE_ERRORS = (OSError, ValueError, SyntaxError)  # what Pillow raises on a damaged file


def _convert_category(src: Path, dst: Path, category: str, samples: list[_Sample], settings: dict[str, Any],
                      link: bool, dry_run: bool, bar: Any) -> VisaReport:
    from PIL import Image

    report = VisaReport("VisA", str(src), str(dst / category), settings={**settings, "categories": [category]},
                        dry_run=dry_run)
    report.excluded = [str(src / s.image) for s in samples if s.excluded]
    report.ignored = _unlisted(src, category, samples)
    if not dry_run:
        dst.mkdir(parents=True, exist_ok=True)
    staging = contextlib.nullcontext(None) if dry_run else staged_dir(dst / category)
    with staging as tmp:
        rows, empty_masks, n_linked, link_failures = [], [], 0, []
        for s in samples:
            if bar is not None:
                bar.update(1)
            if s.excluded:
                continue
            image, mask = src / s.image, (src / s.mask if s.mask else None)
            absent = [str(p) for p in (image, mask) if p is not None and not p.is_file()]
            if absent:
                report.missing.extend(absent)
                continue
            try:
                size = _image_size(image)
            except (*_IMAGE_ERRORS, Image.DecompressionBombError) as exc:
                report.unreadable.append(f"{image} ({exc})")
                continue
            support = None
            if mask is not None:
                try:
                    support = _mask_support(mask)
                except (*_IMAGE_ERRORS, Image.DecompressionBombError) as exc:
                    report.unreadable.append(f"{mask} ({exc})")
                    continue
                if support.shape != (size[1], size[0]):
                    report.unreadable.append(f"{mask} (size {support.shape[1]}x{support.shape[0]} differs from "
                                             f"its image's {size[0]}x{size[1]})")
                    continue
                if not support.any():
                    empty_masks.append(str(mask))
            if tmp is not None:
                failure = _place(image, tmp / s.output, link)
                if failure is not None:
                    link_failures.append(failure)
                elif link:
                    n_linked += 1
                if support is not None:
                    _write_mask(tmp / s.output_mask, support)
            rows.append([s.output, s.split, int(s.anomaly), s.defect_type, s.output_mask, s.annotation,
                         str(image), str(mask) if mask else ""])
        rows.sort(key=lambda r: natural_key(r[0]))
        per_folder: dict[str, int] = {}
        for r in rows:
            folder = r[0].rsplit("/", 1)[0]
            per_folder[folder] = per_folder.get(folder, 0) + 1
        n_skipped = sum(not s.excluded for s in samples) - len(rows)
        for folder in ("train/good", "test"):
            if not any(f.startswith(folder) for f in per_folder):
                raise ValueError(f"category {category} must keep at least one readable {folder} image, got none "
                                 f"({n_skipped} samples skipped: {len(report.missing)} files missing, "
                                 f"{len(report.unreadable)} unreadable)")
        report.counts = {"train/good": per_folder.get("train/good", 0), "test/good": per_folder.get("test/good", 0)}
        report.counts.update(sorted((f, n) for f, n in per_folder.items() if f not in ("train/good", "test/good")))
        report.counts.update(skipped=n_skipped, excluded=len(report.excluded))
        if link and not dry_run:
            report.counts.update(linked=n_linked, copied=len(link_failures))
        if report.excluded:
            report.notes.append(f"{len(report.excluded)} train anomalies excluded (MVTec train/ holds normal "
                                f"images only)")
        if empty_masks:
            report.notes.append(f"{len(empty_masks)} anomaly masks have no non-zero pixel (kept): "
                                + ", ".join(empty_masks[:3]) + (", ..." if len(empty_masks) > 3 else ""))
        if link_failures:
            report.notes.append(f"{len(link_failures)} images copied instead of hard-linked: os.link failed "
                                f"({link_failures[0]}); hard links need SRC and DST on one file system that "
                                f"supports them")
        if tmp is not None:
            for sub in ("train/good", "test/good"):
                (tmp / sub).mkdir(parents=True, exist_ok=True)
            (tmp / "manifest.csv").write_text(csv_text(_MANIFEST_HEADER, rows))
            (tmp / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------ public
def convert_visa(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    categories: Sequence[str] | str | None = None,
    split_file: str | os.PathLike = DEFAULT_SPLIT_FILE,
    defect_types: str = "bad",
    link: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> VisaReport:
    """Convert VisA (``split_csv/1cls.csv`` + ``<object>/Data/...``) to the MVTec AD layout.

    Args:
        src: the VisA root (``candle/``, ..., ``split_csv/``); only read.
        dst: output root; ``DST/<category>`` is written per category. Must be absent or empty
            unless ``overwrite``.
        categories: the objects to convert (default: every object of the split file).
        split_file: the split csv, relative to ``src`` or absolute (default the 1cls protocol).
        defect_types: ``"bad"`` (one ``test/bad`` folder) or ``"annotation"`` (folders from
            ``image_anno.csv``; several defects -> ``combined``).
        link: hard-link the images instead of copying them (copies where impossible).
        overwrite: replace the converted ``DST/<category>`` directories.
        dry_run: read and check everything, write nothing.
        progress: a tqdm bar over the images (on stderr).

    Returns:
        The :class:`VisaReport` (``counts`` summed, ``categories`` per category).

    Raises:
        OSError: missing source, split or annotation file; non-empty destination.
        ValueError: bad options, overlapping source and destination, a malformed csv row
        (named ``file:line``), a category without readable training or test images.

    Example:
        >>> r = convert_visa("VisA_20220922", "visa_mvtec", categories=["candle"])  # doctest: +SKIP
        >>> r.counts  # doctest: +SKIP
        {'categories': 1, 'train/good': 900, 'test/good': 100, 'test/anomaly': 100, 'skipped': 0, 'excluded': 0}
    """
    if defect_types not in DEFECT_TYPES:
        raise ValueError(f"defect_types must be one of {DEFECT_TYPES}, got {defect_types!r}")
    if isinstance(categories, str):
        categories = [categories]
    if categories is not None:
        categories = list(categories)
        if not categories:
            raise ValueError("categories must name at least one category (None: all), got an empty list")
    src, dst = check_paths(src, dst, categories or [], overwrite,
                           hint="pass --overwrite (overwrite=True) to replace the converted categories in it")
    split_path = src / split_file
    samples = _read_split(split_path)
    found = sorted({s.category for s in samples})
    if not found:
        raise ValueError(f"split file {split_path} must list images, got none")
    unknown = sorted(set(categories or ()) - set(found))
    if unknown:
        raise ValueError(f"categories must be objects of the split file {split_path} ({', '.join(found)}), "
                         f"got {', '.join(unknown)}")
    chosen = sorted(set(categories)) if categories else found
    by_category = {c: [s for s in samples if s.category == c] for c in chosen}
    for c in chosen:
        _plan(src, split_path, c, by_category[c], defect_types)
    settings = {"split_file": str(split_file), "categories": chosen, "defect_types": defect_types,
                "link": bool(link)}
    report = VisaReport("VisA", str(src), str(dst), settings=settings, dry_run=bool(dry_run))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(map(len, by_category.values())), unit="img", desc="visa", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        for c in chosen:
            if bar is not None:
                bar.set_description(c)
            part = _convert_category(src, dst, c, by_category[c], settings, link, dry_run, bar)
            report.categories[c] = part.counts
            for key in VisaReport.LISTED:
                getattr(report, key).extend(getattr(part, key))
            report.notes.extend(f"{c}: {n}" for n in part.notes)
    finally:
        if bar is not None:
            bar.close()
    totals = {"categories": len(chosen), "train/good": 0, "test/good": 0, "test/anomaly": 0}
    for counts in report.categories.values():
        for key, n in counts.items():
            key = "test/anomaly" if key.startswith("test/") and key != "test/good" else key
            totals[key] = totals.get(key, 0) + n
    report.counts = totals
    return report
