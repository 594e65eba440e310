"""MVTec-AD-format datasets: listing, reference preprocessing, batches. Torch-free.

Layout (also MPDD, BTAD, converted KolektorSDD)::

    <root>/<category>/train/good/*.<ext>
    <root>/<category>/test/<type>/*.<ext>              type "good" = normal, anything else = defect
    <root>/<category>/ground_truth/<type>/<stem>_mask.<ext>   (or <stem>.<ext>, as BTAD)

MVTec AD 2 keeps its labelled test set in ``test_public/`` (``good``, ``bad``) with the masks
inside it (``test_public/ground_truth/bad/<stem>_mask.png``): a category without ``test/`` but
with ``test_public/`` is read that way (``validation/good`` and the unlabelled
``test_private*`` folders are not used).

BTAD names its normal folders ``ok`` (``train/ok``, ``test/ok``; defects in ``test/ko`` with
masks ``ground_truth/ko/<stem>.png``): ``ok`` is read as ``good`` (the samples' ``defect_type``
is ``"good"``), unless the category also has a ``good`` folder in the same split, which is
ambiguous and an error.

Image extensions: .png .jpg .jpeg .bmp .tif .tiff (case-insensitive); hidden files are skipped.
Order is deterministic: defect types sorted by name, files sorted by name.

Preprocessing (the reference project's ``--resize 256 --imagesize 224``, torchvision semantics
reproduced with PIL so no torch is needed):
- image: ``PIL.Image.convert("RGB")`` (greyscale/RGBA/palette inputs), resize so the shorter
  side is ``resize`` and the longer ``int(resize * long / short)`` (bilinear, PIL's
  antialiased filter, as torchvision's ``Resize`` on PIL images), centre crop ``imagesize``
  (top/left offsets ``int(round((size - crop) / 2))``), scale to [0, 1], ImageNet
  normalisation. Output float32 ``[3, imagesize, imagesize]``.
- mask: converted to 8-bit greyscale ("L"), same resize and crop, scaled to [0, 1], binarised
  ``> 0.5``. Masks stored as 0/1 (maximum value 1, as some converted datasets do) are scaled
  by 1 instead of 1/255. A mask whose size differs from its image is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
NORMAL_FOLDERS = (GOOD, "ok")  # "ok": BTAD's name for the normal images


@dataclasses.dataclass
class Sample:
    """One image of a split."""

    path: str
    label: int  # 0 good, 1 defect
    defect_type: str
    mask_path: str | None
    category: str


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side) / centre-crop sizes and the normalisation of the reference."""

    resize: int = 256
    imagesize: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for name in ("resize", "imagesize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.imagesize > self.resize:
            raise ValueError(f"imagesize must be <= resize ({self.resize}), got {self.imagesize}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std must have 3 values, got {self.mean!r}, {self.std!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0, got {self.std!r}")


# ---------------------------------------------------------------------------- listing
def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if _is_image(p))


TEST_PUBLIC = "test_public"  # MVTec AD 2's labelled test split


def _test_dirs(category_dir: Path) -> tuple[Path, Path]:
    """``(test dir, ground-truth root)``: ``test/`` + ``ground_truth/``, or MVTec AD 2's
    ``test_public/`` + ``test_public/ground_truth/`` when there is no ``test/``."""
    if not (category_dir / "test").is_dir() and (category_dir / TEST_PUBLIC).is_dir():
        return category_dir / TEST_PUBLIC, category_dir / TEST_PUBLIC / "ground_truth"
    return category_dir / "test", category_dir / "ground_truth"


def test_dir(category_dir: str | os.PathLike) -> Path:
    """The labelled test split of a category: ``test/``, or MVTec AD 2's ``test_public/``."""
    return _test_dirs(Path(category_dir))[0]


def _is_category(d: Path) -> bool:
    return (d / "train").is_dir() and _test_dirs(d)[0].is_dir()


def list_categories(root: str | os.PathLike) -> list[str]:
    """Category directories under a dataset root, or ``[root]`` when root is one category.

    Args:
        root: a dataset root (sub-directories with ``train/`` and ``test/``) or a category dir.

    Returns:
        Sorted category directory paths (``str``); the category name is the basename.

    Raises:
        FileNotFoundError: ``root`` does not exist. ValueError: no category found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a directory")
    if _is_category(root):
        return [str(root)]
    found = sorted(str(d) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _is_category(d))
    if not found:
        raise ValueError(f"dataset root {root} must contain category directories with train/ and test/ "
                         f"(MVTec layout), got none")
    return found


def _find_mask(gt_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            for e in (ext, ext.upper()):
                p = gt_dir / f"{name}{e}"
                if p.is_file():
                    return p
    return None


def normal_dir(category_dir: str | os.PathLike, split: str) -> Path | None:
    """``<category>/<split>/good``, or BTAD's ``<split>/ok``; None if neither exists (the test
    split is :func:`test_dir`'s).

    Raises:
        ValueError: both exist (which one holds the normal images is ambiguous).
    """
    split_dir = test_dir(category_dir) if split == "test" else Path(category_dir) / split
    found = [split_dir / name for name in NORMAL_FOLDERS]
    found = [d for d in found if d.is_dir()]
    if len(found) > 1:
        raise ValueError(f"ambiguous layout: both {found[0]} and {found[1]} exist; normal images must be in "
                         f"exactly one of them")
    return found[0] if found else None


def list_samples(category_dir: str | os.PathLike, split: str, *, require_masks: bool = True) -> list[Sample]:
    """The samples of one split of one category.

    Args:
        category_dir: ``<root>/<category>``.
        split: ``"train"`` (``train/good`` only) or ``"test"`` (every ``test/<type>``).
        require_masks: a defect image without a mask is an error (``False``: ``mask_path`` None).

    Returns:
        Samples sorted by (defect type, file name).

    Raises:
        FileNotFoundError: missing category dir, missing mask. ValueError: malformed layout
        (no ``train/good``, no ``test``), an empty ``train/good`` or ``test``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cat = Path(category_dir)
    if not cat.is_dir():
        raise FileNotFoundError(f"category directory {cat} does not exist")
    split_dir, gt_root = _test_dirs(cat) if split == "test" else (cat / split, None)
    if split == "train":
        good = normal_dir(cat, "train")
        if good is None:
            raise ValueError(f"malformed MVTec layout: {split_dir / GOOD} must be a directory of normal images "
                             f"(or {split_dir / 'ok'}, as BTAD)")
        paths = _images(good)
        if not paths:
            raise ValueError(f"{good} must contain training images ({'/'.join(IMAGE_EXTENSIONS)}), got none")
        return [Sample(str(p), 0, GOOD, None, cat.name) for p in paths]
    if not split_dir.is_dir():
        raise ValueError(f"malformed MVTec layout: {split_dir} must be a directory of test/<type>/ folders")
    normal_dir(cat, "test")  # refuses test/good beside test/ok
    samples = []
    for type_dir in sorted(d for d in split_dir.iterdir()
                           if d.is_dir() and not d.name.startswith(".") and d != gt_root):
        for p in _images(type_dir):
            if type_dir.name in NORMAL_FOLDERS:
                samples.append(Sample(str(p), 0, GOOD, None, cat.name))
                continue
            mask = _find_mask(gt_root / type_dir.name, p.stem)
            if mask is None and require_masks:
                raise FileNotFoundError(
                    f"mask for defect image {p} not found: expected "
                    f"{gt_root / type_dir.name / (p.stem + '_mask.png')} (use --no-masks to skip "
                    f"pixel metrics)")
            samples.append(Sample(str(p), 1, type_dir.name, None if mask is None else str(mask), cat.name))
    if not samples:
        raise ValueError(f"{split_dir} must contain test images in test/<type>/, got none")
    return samples


# ---------------------------------------------------------------------------- loading
def _open(path: str | os.PathLike, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()  # decode now: truncated files fail here, not later
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    return img


def _resize_crop(img, pre: Preprocess):
    """torchvision ``Resize(resize)`` + ``CenterCrop(imagesize)`` on a PIL image."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = pre.resize, int(pre.resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - pre.imagesize) / 2.0))
    left = int(round((new_w - pre.imagesize) / 2.0))
    return img.crop((left, top, left + pre.imagesize, top + pre.imagesize))


def _load_image_and_size(path: str | os.PathLike, pre: Preprocess) -> tuple[np.ndarray, tuple[int, int]]:
    img = _open(path, "image")
    size_hw = (img.size[1], img.size[0])
    rgb = np.asarray(_resize_crop(img.convert("RGB"), pre), dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(((rgb - mean) / std).transpose(2, 0, 1)), size_hw


def load_image(path: str | os.PathLike, pre: Preprocess = Preprocess()) -> np.ndarray:
    """One image, preprocessed as the reference: float32 ``[3, imagesize, imagesize]``.

    Raises:
        FileNotFoundError: missing file. ValueError: unreadable or corrupt image (names the path).

    Example:
        >>> x = load_image("carpet/test/hole/000.png", Preprocess())  # doctest: +SKIP
        >>> x.shape, x.dtype  # doctest: +SKIP
        ((3, 224, 224), dtype('float32'))
    """
    return _load_image_and_size(path, pre)[0]


def load_mask(path: str | os.PathLike | None, pre: Preprocess = Preprocess(),
              image_size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One ground-truth mask, resized/cropped like its image and binarised: bool ``[S, S]``.

    Args:
        path: mask file, or ``None`` (a normal image: all False).
        pre: the preprocessing of the images.
        image_size_hw: the original ``(H, W)`` of the image; a mask of another size is an error.

    Raises:
        ValueError: size mismatch or unreadable mask. FileNotFoundError: missing file.
    """
    if path is None:
        return np.zeros((pre.imagesize, pre.imagesize), bool)
    img = _open(path, "mask")
    if image_size_hw is not None and (img.size[1], img.size[0]) != tuple(image_size_hw):
        raise ValueError(f"mask {path} must have the size of its image {tuple(image_size_hw)} (H, W), "
                         f"got {(img.size[1], img.size[0])}")
    grey = img.convert("L")
    scale = 1.0 if np.asarray(grey).max() == 1 else 255.0  # 0/1-valued masks
    values = np.asarray(_resize_crop(grey, pre), dtype=np.float32) / np.float32(scale)
    return values > 0.5


class MVTecDataset:
    """The samples of one split of one category, loaded and preprocessed on access.

    ``dataset[i]`` is ``{"image": float32 [3, S, S], "mask": bool [S, S], "label": int,
    "path": str, "defect_type": str}``; :meth:`batches` stacks them.

    Example:
        >>> ds = MVTecDataset("mvtec/bottle", "test")  # doctest: +SKIP
        >>> for batch in ds.batches(8): batch["image"].shape  # doctest: +SKIP
        (8, 3, 224, 224)
    """

    def __init__(self, category_dir: str | os.PathLike, split: str, pre: Preprocess = Preprocess(), *,
                 require_masks: bool = True, samples: list[Sample] | None = None) -> None:
        self.category_dir = str(category_dir)
        self.split = split
        self.pre = pre
        self.samples = list(samples) if samples is not None else list_samples(
            category_dir, split, require_masks=require_masks)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image, size_hw = _load_image_and_size(s.path, self.pre)
        mask = load_mask(s.mask_path, self.pre, size_hw)
        return {"image": image, "mask": mask, "label": s.label, "path": s.path, "defect_type": s.defect_type}

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], np.int64)

    def batches(self, batch_size: int, *, num_workers: int = 0) -> Iterator[dict[str, Any]]:
        """Yield ``{"image": [B, 3, S, S], "mask": [B, S, S], "label": [B], "path": [B],
        "defect_type": [B]}`` in order; ``num_workers > 0`` decodes in threads (PIL releases
        the GIL while decoding and resizing)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        try:
            for start in range(0, len(self), batch_size):
                idx = range(start, min(len(self), start + batch_size))
                items = list(pool.map(self.__getitem__, idx)) if pool else [self[i] for i in idx]
                yield {
                    "image": np.stack([it["image"] for it in items]),
                    "mask": np.stack([it["mask"] for it in items]),
                    "label": np.array([it["label"] for it in items], np.int64),
                    "path": [it["path"] for it in items],
                    "defect_type": [it["defect_type"] for it in items],
                }
        finally:
            if pool:
                pool.shutdown(wait=True)
