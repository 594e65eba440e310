"""Training data sources for ``ofdb-fast pretrain``: the same samples from disk or from memory.

Both sources hand the trainer ``uint8`` ``[b, H, W, 3]`` images on the training device and
``int64`` labels, for a list of global sample indices:

* :class:`ImageFolderSource`: a folder in torchvision ``ImageFolder`` layout (as written by
  ``ofdb-fast generate``). Class order is the lexicographic order of the folder names
  (``"0", "1", "10", "100", ...``), samples sorted by path within a class, as ImageFolder.
  Small sets are decoded once into one tensor resident on the device (1,000 x 512^2 x 3 B =
  786 MB); above ``max_resident_bytes`` each batch is decoded by a DataLoader instead.
* :class:`IfsSource`: renders the same images in memory with the ``ifs_render`` op (``cuda``
  backend for a CUDA device, ``cpu`` otherwise) using ``generate``'s own code for the
  mapping (``dataset.class_system_index``: folder ``i // P``, system ``int(i // (C*P/S))`` in
  float) and the systems (``dataset.load_systems``), render seed = ``generate --seed``, image
  id = ``i``. With the same options both sources give identical pixels (PNG is lossless) and
  identical labels.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MAX_RESIDENT_BYTES = 4 << 30


# ----------------------------------------------------------------------------- mapping
def lexicographic_rank(num_classes: int) -> list[int]:
    """``rank[k]``: ImageFolder's label for folder ``str(k)`` (folders sorted as strings)."""
    order = sorted(range(num_classes), key=str)
    rank = [0] * num_classes
    for r, k in enumerate(order):
        rank[k] = r
    return rank


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


def default_render_fn(device) -> RenderFn:
    """``ifs_render`` with the backend of ``device`` (``cuda`` on GPU, ``cpu`` otherwise);
    the NumPy reference when this build has no ``ofdb_fast.ops.ifs_render`` (CPU only)."""
    import torch

    dev = torch.device(device)
    try:
        from ..ops.ifs_render import ifs_render
    except ImportError as exc:
        if dev.type == "cuda":
            raise RuntimeError(
                "the on-the-fly source on CUDA needs the ifs_render op (ofdb_fast.ops.ifs_render), which this build "
                f"lacks; use --data with a folder written by `ofdb-fast generate` ({exc})"
            ) from exc
        from ..reference.ifs_render import ifs_render as reference_render

        def render(systems, n_maps, *, size, seed, image_ids, config):
            return reference_render(systems, n_maps, size=size, seed=seed, image_ids=image_ids, config=config)

        return render
    backend = "cuda" if dev.type == "cuda" else "cpu"

    def render(systems, n_maps, *, size, seed, image_ids, config):
        return ifs_render(systems, n_maps, size=size, seed=seed, image_ids=image_ids, config=config,
                          backend=backend)

    return render


AHEAD_MAX_IMAGES = 4096
AHEAD_MAX_BYTES = 8 << 30  # RGB output + int32 counts of one on-the-fly render call


def default_ahead(device_type: str, size: int, chunk: int) -> int:
    """Images per on-the-fly render call: on CUDA as many as fit ``AHEAD_MAX_BYTES`` (7 bytes a
    pixel: RGB + counts), at most 4,096 (a call costs about the same for 64 or 4,096 images: one
    GPU thread per chaos game, so per-batch calls would leave the GPU idle ~25 ms a batch) and at
    least ``chunk``; elsewhere ``chunk``."""
    if device_type != "cuda":
        return chunk
    return max(chunk, min(AHEAD_MAX_IMAGES, AHEAD_MAX_BYTES // (7 * size * size)))


class IfsSource(Source):
    """Images rendered in memory from IFS systems, exactly as ``ofdb-fast generate`` renders them.

    Args:
        systems: ``[S', K, 2, 3]`` float64, the systems the dataset uses.
        n_maps: ``[S']`` maps per system.
        rows: ``[N]`` row of ``systems`` used by each global sample.
        folder_labels: ``[N]`` class folder number of each sample (``i // P``).
        size: image side. seed: render seed (``generate --seed``). config: ``RenderConfig``.
        device: where images are produced and kept.
        render_fn: ``(systems, n_maps, *, size, seed, image_ids, config) -> uint8 [b,H,W,3]``
            (default :func:`default_render_fn`).
        chunk: images per render call when building a resident copy.
        ahead: most images rendered per call on the fly (:meth:`batches` renders the next whole
            batches up to this many at once, then hands them out one by one). Default:
            :func:`default_ahead`. The images do not depend on it (each depends only on its id).
    """

    def __init__(self, systems, n_maps, rows, folder_labels, *, size: int, seed: int, config=None, device="cpu",
                 render_fn: RenderFn | None = None, chunk: int = 256, ahead: int | None = None):
        import numpy as np
        import torch

        self.systems = np.ascontiguousarray(systems, dtype=np.float64)
        self.n_maps = np.ascontiguousarray(n_maps, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        folder = np.asarray(folder_labels, dtype=np.int64)
        self.device = torch.device(device)
        self.render_fn = render_fn or default_render_fn(self.device)
        self.size, self.seed, self.config, self.chunk = size, seed, config, chunk
        if ahead is None:
            ahead = default_ahead(self.device.type, size, chunk)
        if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 1:
            raise ValueError(f"ahead must be an int >= 1, got {ahead!r}")
        self.ahead = ahead
        num_classes = int(folder.max()) + 1
        if sorted(set(folder.tolist())) != list(range(num_classes)):
            raise ValueError(f"folder_labels must cover 0..C-1, got {sorted(set(folder.tolist()))[:8]}")
        rank = np.asarray(lexicographic_rank(num_classes), dtype=np.int64)
        self.classes = sorted(str(k) for k in range(num_classes))
        self.num_samples = int(self.rows.shape[0])
        self.labels = torch.from_numpy(rank[folder])
        self.image_shape = (size, size)

    @classmethod
    def from_generate_options(cls, opts, device, *, render_fn: RenderFn | None = None, chunk: int = 256,
                              ahead: int | None = None):
        """The dataset ``generate`` would write for ``opts`` (a ``dataset.GenerateOptions``):
        same mapping (``class_system_index``), systems (``load_systems``), seed and render flags."""
        import numpy as np

        from .dataset import class_system_index, load_systems

        try:
            from ..ops.ifs_render import RenderConfig
        except ImportError:
            from ..reference.ifs_render import RenderConfig

        if opts.dataset_type != "fractals":
            raise ValueError(f"--on-the-fly supports dataset_type fractals only, got {opts.dataset_type!r}")
        folder, sys_idx = class_system_index(opts.num_class, opts.per_class, opts.num_systems)
        used = np.unique(sys_idx)
        params = load_systems(opts, used)
        config = RenderConfig(n_points=opts.n_points, jitter=not opts.remove_jitter, background=opts.background)
        return cls(params.systems, params.n_maps, np.searchsorted(used, sys_idx), folder, size=opts.size,
                   seed=opts.seed, config=config, device=device, render_fn=render_fn, chunk=chunk, ahead=ahead)

    def render(self, indices):
        """``uint8`` ``[b, size, size, 3]`` on the source device for global indices ``[b]``."""
        import numpy as np
        import torch

        ids = indices.cpu().numpy().astype(np.int64)
        rows = self.rows[ids]
        args = (np.ascontiguousarray(self.systems[rows]), np.ascontiguousarray(self.n_maps[rows]), ids)
        if self.device.type == "cuda":  # ops never copy across devices: do it here, explicitly
            args = tuple(torch.as_tensor(a, device=self.device) for a in args)
        out = self.render_fn(args[0], args[1], size=(self.size, self.size), seed=self.seed, image_ids=args[2],
                             config=self.config)
        return torch.as_tensor(out).to(self.device)

    def to_resident(self) -> ResidentSource:
        """Render every image once into a resident tensor (the OFDB case: 1,000 images)."""
        import torch

        parts = [self.render(torch.arange(s, min(s + self.chunk, self.num_samples)))
                 for s in range(0, self.num_samples, self.chunk)]
        return ResidentSource(torch.cat(parts), self.labels, self.classes, info=self._info())

    def batches(self, index_lists: Iterable, device):
        """Render whole batches ahead, up to ``ahead`` images per call (at least one batch), and
        yield them in order: the same images as one call per batch."""
        import torch

        group: list = []
        n = 0
        for idx in index_lists:
            group.append(idx)
            n += int(idx.numel())
            if n >= self.ahead:
                yield from self._render_group(group, device, torch)
                group, n = [], 0
        if group:
            yield from self._render_group(group, device, torch)

    def _render_group(self, group: list, device, torch):
        images = self.render(torch.cat([g.reshape(-1).cpu() for g in group])).to(device)
        start = 0
        for idx in group:
            n = int(idx.numel())
            yield images[start:start + n], self.labels[idx.cpu()].to(device)
            start += n

    def _info(self) -> dict:
        return {"on_the_fly": True, "size": self.size, "seed": self.seed}

    def describe(self) -> dict:
        return {**super().describe(), **self._info(), "resident": False}
