"""Training data sources for ``ofdb-fast pretrain``: the same samples from disk or from memory.

Both sources hand the trainer ``uint8`` ``[b, H, W, 3]`` images on the training device and
``int64`` labels, for a list of global sample indices:

* :class:`ImageFolderSource`: a folder in torchvision ``ImageFolder`` layout (as written by
  ``ofdb-fast generate``). Class order is the lexicographic order of the folder names
  (``"0", "1", "10", "100", ...``), samples sorted by path within a class, as ImageFolder.
  Small sets are decoded once into one tensor resident on the device (1,000 x 512^2 x 3 B =
  786 MB); above ``max_resident_bytes`` each batch is decoded by a DataLoader instead.
* :class:`IfsSource`: renders the same images in memory with the ``ifs_render`` op (``cuda``
  backend for a CUDA device, ``cpu`` otherwise), with the dataset mapping of ``generate``:
  global index ``i`` -> folder label ``i // P`` and system ``int(i // (C * P / S))`` computed
  in float (the reference's quirk; 1k OFDB-4AD uses systems 0, 49, 99, ...), render seed =
  the dataset seed and image id = ``i``. With the same systems and seed both sources give
  identical pixels (PNG is lossless) and identical labels.

The mapping is implemented here (:func:`system_index`, :func:`folder_label`); it mirrors the
reference and must stay equal to ``generate``'s (``fractal/dataset.py``) when that lands.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MAX_RESIDENT_BYTES = 4 << 30


# ----------------------------------------------------------------------------- mapping
def system_index(i: int, num_classes: int, per_class: int, num_systems: int) -> int:
    """System used by global sample ``i``: ``int(i // (C * P / S))`` in float, as the reference."""
    return int(float(i) // (num_classes * per_class / num_systems))


def folder_label(i: int, per_class: int) -> int:
    """Folder (class directory) number of global sample ``i``."""
    return i // per_class


def lexicographic_rank(num_classes: int) -> list[int]:
    """``rank[k]``: ImageFolder's label for folder ``str(k)`` (folders sorted as strings)."""
    order = sorted(range(num_classes), key=str)
    rank = [0] * num_classes
    for r, k in enumerate(order):
        rank[k] = r
    return rank


def image_relpath(i: int, per_class: int) -> str:
    """``{label}/image_{i:0{len(str(P))}d}.png``: the generate/reference file name of sample ``i``."""
    return f"{folder_label(i, per_class)}/image_{i:0{len(str(per_class))}d}.png"


# ----------------------------------------------------------------------------- base
class Source:
    """Common interface: ``num_samples``, ``num_classes``, ``classes``, ``labels`` (CPU int64
    ``[N]``), ``image_shape`` ``(H, W)`` and :meth:`batches`."""

    num_samples: int
    classes: list[str]
    labels: object
    image_shape: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batches(self, index_lists: Sequence, device) -> Iterator[tuple[object, object]]:
        """Yield ``(images uint8 [b, H, W, 3], labels int64 [b])`` on ``device`` per index list."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": type(self).__name__, "num_samples": self.num_samples, "num_classes": self.num_classes,
                "image_shape": list(self.image_shape)}


class ResidentSource(Source):
    """All images in one ``uint8`` ``[N, H, W, 3]`` tensor on the device; a batch is a gather."""

    def __init__(self, images, labels, classes: list[str], info: dict | None = None):
        self.images = images
        self.labels = labels.cpu()
        self._labels_dev = labels.to(images.device)
        self.classes = classes
        self.num_samples = int(images.shape[0])
        self.image_shape = (int(images.shape[1]), int(images.shape[2]))
        self.info = info or {}

    def batches(self, index_lists, device):
        for idx in index_lists:
            idx_d = idx.to(self.images.device)
            yield self.images.index_select(0, idx_d).to(device), self._labels_dev.index_select(0, idx_d).to(device)

    def describe(self) -> dict:
        return {**super().describe(), **self.info, "resident": True}


# ----------------------------------------------------------------------------- ImageFolder
def scan_image_folder(root: str | os.PathLike) -> tuple[list[str], list[str], list[int]]:
    """ImageFolder's scan: ``(classes, paths, labels)`` with classes sorted as strings."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise OSError(f"--data {root} is not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise ValueError(f"--data {root} must contain one sub-folder per class, got none")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(label)
    if not paths:
        raise ValueError(f"--data {root} must contain images ({', '.join(IMG_EXTENSIONS)}), got none")
    return classes, paths, labels


def decode_image(path: str):
    """``uint8`` ``[H, W, 3]`` NumPy array of an image file (converted to RGB)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise OSError(f"cannot decode image {path}: {exc}") from exc


def _decode_all(paths: Sequence[str], num_threads: int):
    import numpy as np

    with ThreadPoolExecutor(max(1, num_threads)) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(decode_image, paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images in the data folder must all have the same size, got {sorted(shapes)[:4]}")
    return np.stack(arrays)


class _FolderDataset:
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        return torch.from_numpy(decode_image(self.paths[i]).copy())


class ImageFolderSource(Source):
    """A folder that does not fit in device memory: each batch is decoded by a DataLoader."""

    def __init__(self, root, num_workers: int = 4):
        self.root = os.fspath(root)
        self.classes, self.paths, labels = scan_image_folder(root)
        import torch

        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.num_samples = len(self.paths)
        first = decode_image(self.paths[0])
        self.image_shape = (int(first.shape[0]), int(first.shape[1]))
        self.num_workers = num_workers

    @classmethod
    def open(cls, root, device, *, max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES, num_workers: int = 4):
        """Resident on ``device`` when ``N * H * W * 3 <= max_resident_bytes``, else streaming."""
        import torch

        src = cls(root, num_workers=num_workers)
        h, w = src.image_shape
        if src.num_samples * h * w * 3 > max_resident_bytes:
            return src
        images = torch.from_numpy(_decode_all(src.paths, num_workers or 1)).to(device)
        return ResidentSource(images, src.labels, src.classes, info={"root": src.root})

    def batches(self, index_lists, device):
        import torch
        from torch.utils.data import DataLoader

        dataset = _FolderDataset(self.paths)
        lists = [idx.tolist() for idx in index_lists]
        pin = torch.device(device).type == "cuda"
        loader = DataLoader(dataset, batch_sampler=lists, num_workers=self.num_workers, pin_memory=pin,
                            persistent_workers=False)
        for idx, images in zip(lists, loader):
            yield images.to(device, non_blocking=True), self.labels[idx].to(device, non_blocking=True)

    def describe(self) -> dict:
        return {**super().describe(), "root": self.root, "resident": False}


# ----------------------------------------------------------------------------- on the fly
RenderFn = Callable[..., object]


@dataclass(frozen=True)
class IfsDatasetSpec:
    """The dataset ``generate`` writes: ``num_classes`` x ``per_class`` images of ``size``^2
    from ``systems`` (``[S, K, 2, 3]`` float64) / ``n_maps`` (``[S]``), render seed ``seed``."""

    systems: object
    n_maps: object
    num_classes: int
    per_class: int
    size: int
    seed: int

    def __post_init__(self):
        s = int(self.systems.shape[0])
        if self.num_classes < 1 or self.per_class < 1:
            raise ValueError(f"num_classes and per_class must be >= 1, got {self.num_classes}, {self.per_class}")
        if system_index(self.num_classes * self.per_class - 1, self.num_classes, self.per_class, s) >= s:
            raise ValueError(f"num_systems must be large enough for the mapping, got {s}")

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.per_class


def default_render_fn(device) -> RenderFn:
    """``ifs_render`` with the backend of ``device`` (``cuda`` on GPU, ``cpu`` otherwise)."""
    import torch

    try:
        from ..ops.ifs_render import ifs_render
    except ImportError as exc:
        raise RuntimeError(
            "the on-the-fly source needs the ifs_render op (ofdb_fast.ops.ifs_render), which this build lacks; "
            f"use --data with a folder written by `ofdb-fast generate` ({exc})"
        ) from exc
    backend = "cuda" if torch.device(device).type == "cuda" else "cpu"

    def render(systems, n_maps, *, size, seed, image_ids):
        return ifs_render(systems, n_maps, size=size, seed=seed, image_ids=image_ids, backend=backend)

    return render


class IfsSource(Source):
    """Images rendered in memory from IFS systems with the ``generate`` mapping.

    ``render_fn(systems [b,K,2,3], n_maps [b], *, size, seed, image_ids [b]) -> uint8 [b,H,W,3]``
    (default: :func:`default_render_fn`). With ``resident=True`` all images are rendered once
    (in chunks of ``chunk``) into a device tensor; otherwise each batch is rendered when needed.
    """

    def __init__(self, spec: IfsDatasetSpec, device, *, render_fn: RenderFn | None = None, chunk: int = 256):
        import torch

        self.spec = spec
        self.device = torch.device(device)
        self.render_fn = render_fn or default_render_fn(self.device)
        self.chunk = chunk
        rank = lexicographic_rank(spec.num_classes)
        self.classes = sorted((str(k) for k in range(spec.num_classes)))
        n = spec.num_samples
        self.num_samples = n
        self.labels = torch.tensor([rank[folder_label(i, spec.per_class)] for i in range(n)], dtype=torch.int64)
        self.sys_idx = torch.tensor(
            [system_index(i, spec.num_classes, spec.per_class, int(spec.systems.shape[0])) for i in range(n)],
            dtype=torch.int64,
        )
        self.image_shape = (spec.size, spec.size)

    def render(self, indices):
        """``uint8`` ``[b, size, size, 3]`` on the source device for global indices ``[b]``."""
        import numpy as np
        import torch

        idx = indices.cpu()
        sys_idx = self.sys_idx[idx].numpy()
        systems = np.ascontiguousarray(np.asarray(self.spec.systems)[sys_idx], dtype=np.float64)
        n_maps = np.ascontiguousarray(np.asarray(self.spec.n_maps)[sys_idx])
        ids = idx.numpy().astype(np.int64)
        if self.device.type == "cuda":
            systems, n_maps, ids = (torch.from_numpy(a).to(self.device) for a in (systems, n_maps, ids))
        out = self.render_fn(systems, n_maps, size=self.spec.size, seed=self.spec.seed, image_ids=ids)
        out = torch.as_tensor(out)
        return out.to(self.device)

    def to_resident(self) -> ResidentSource:
        """Render every image once into a resident tensor (the OFDB case: 1,000 images)."""
        import torch

        parts = [self.render(torch.arange(s, min(s + self.chunk, self.num_samples)))
                 for s in range(0, self.num_samples, self.chunk)]
        return ResidentSource(torch.cat(parts), self.labels, self.classes, info=self._info())

    def batches(self, index_lists: Iterable, device):
        for idx in index_lists:
            yield self.render(idx).to(device), self.labels[idx.cpu()].to(device)

    def _info(self) -> dict:
        s = self.spec
        return {"num_systems": int(s.systems.shape[0]), "per_class": s.per_class, "size": s.size, "seed": s.seed}

    def describe(self) -> dict:
        return {**super().describe(), **self._info(), "resident": False}
