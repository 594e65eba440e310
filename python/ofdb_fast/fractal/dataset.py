"""Dataset assembly for ``ofdb-fast generate``: which system each image uses, where it goes,
what a run must (re)do, and the render -> encode -> write pipeline.

Conventions (reference: F4AD ``FractalDatabase``, notes a.6):
- Image ``i`` in ``0 .. C*P-1`` (C classes, P images per class, S systems) has label
  ``i // P`` and uses system ``int(i // (C*P / S))`` with the division and the floor division
  in float64, exactly as the reference (OFDB-4AD's S=50,000, C=1,000, P=1 uses systems
  0, 49, 99, 149, ...: 0.02 is not exact in binary).
- multi-fractals: class ``c`` owns the contiguous block of ``S // C`` systems starting at
  ``c * (S // C)`` (reference ``MultiFractalDatabase``).
- Image ``i`` is rendered with ``ifs_render(..., seed=seed, image_ids=[i])``: its pixels depend
  only on (seed, i, its system, the render flags), never on batching, workers or sharding.
- Systems come from ``--param_file`` or from ``sample_systems(..., rng="counter")``, where
  system ``j`` depends only on (seed, j): only the systems the run uses are sampled, and the
  result equals sampling all ``S`` and indexing.
- Layouts: png ``{dir}/{label}/image_{i:0{len(str(P))}d}.png`` (global ``i``, as the
  reference; ImageFolder-compatible); tar ``{dir}/shard-{k:06d}.tar`` with ``{i:09d}.png`` and
  ``{i:09d}.cls``; npz ``{dir}/shard-{k:06d}.npz`` with ``images``/``labels``/``indices``.
  Shard ``k`` holds images ``[k * shard_size, (k + 1) * shard_size)``.
- Work units are images (png) or shard files (tar/npz). ``--shard I/N`` gives machine ``I``
  the contiguous block of units ``[I*U//N, (I+1)*U//N)``; the union of all machines' outputs
  (manifest included: it does not record the shard) equals a single-machine run byte for byte.
- Every file appears via temp file + ``os.replace``, so a unit whose file exists is complete;
  ``--resume`` skips those and deletes leftover temp files.

Deviations from the reference (deliberate):
- A ``--param_file`` with fewer than ``--num_systems`` systems is an error (the reference
  silently samples the missing systems and writes a pickle into the working directory).
- ``--overwrite`` refuses a directory holding files this tool would not write, then removes
  only this tool's files (class folders of ``image_*.png``, ``shard-*.tar|npz``, the
  manifest, temp files). Without it, a non-empty directory is refused.
- multi-fractals cannot honour ``--remove_jitter`` or ``--background`` (the composer always
  jitters and uses a black canvas); those combinations are refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import writers

MANIFEST_NAME = "ofdb_manifest.json"
MANIFEST_VERSION = 1
DATASET_TYPES = ("fractals", "multi-fractals")
FORMATS = ("png", "tar", "npz")
BACKENDS = ("auto", "numpy", "cpu", "cuda")
_SHARD_RE = re.compile(r"^shard-\d{6}\.(tar|npz)$")
_IMAGE_RE = re.compile(r"^image_\d+\.png$")


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """Everything ``generate`` needs; field names are the CLI flags."""

    dataset_dir: str = "./fractals"
    dataset_type: str = "fractals"
    param_file: str = ""
    num_systems: int = 50_000
    num_class: int = 1000
    per_class: int = 1
    size: int = 512
    remove_jitter: bool = False
    background: bool = False
    n_points: int = 100_000
    seed: int = 0
    min_n: int = 2
    max_n: int = 4
    bval: float = 1.0
    backend: str = "auto"
    workers: int | None = None  # encoder threads; None -> os.cpu_count()
    shard: tuple[int, int] = (0, 1)  # (I, N): this machine is I of N
    resume: bool = False
    overwrite: bool = False
    format: str = "png"
    shard_size: int = 1000
    batch_size: int | None = None  # images per render call; None -> 64 (cuda: 256)
    png_level: int = 1
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    n_written: int  # images rendered and written by this call
    n_skipped: int  # images of this machine's part already present (resume)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_written / self.seconds if self.seconds > 0 else float("inf")


# ----------------------------------------------------------------------------- mapping
def class_system_index(num_class: int, per_class: int, num_systems: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and system indices of all ``C * P`` images, as the reference assigns them.

    Returns:
        ``labels`` int64 ``[C*P]`` (``i // P``) and ``systems`` int64 ``[C*P]``
        (``int(i // (C*P / S))`` in float64; NumPy's float floor division follows Python's).

    Example:
        >>> class_system_index(1000, 1, 50_000)[1][:4].tolist()
        [0, 49, 99, 149]
    """
    total = num_class * per_class
    index = np.arange(total, dtype=np.int64)
    divisor = float(total) / float(num_systems)
    systems = np.floor_divide(index.astype(np.float64), divisor).astype(np.int64)
    if total and (systems.min() < 0 or systems.max() >= num_systems):  # cannot happen for S >= 1
        raise AssertionError(f"system index out of range for C={num_class}, P={per_class}, S={num_systems}")
    return index // per_class, systems


def class_blocks(num_class: int, num_systems: int) -> np.ndarray:
    """multi-fractals: the system indices of each class, ``int64 [C, S // C]``."""
    width = num_systems // num_class
    return np.arange(num_class * width, dtype=np.int64).reshape(num_class, width)


def image_relpath(label: int, index: int, per_class: int) -> str:
    """``{label}/image_{index:0{len(str(P))}d}.png`` (``index`` is the global image index)."""
    return f"{label}/image_{index:0{len(str(per_class))}d}.png"


def shard_name(k: int, fmt: str) -> str:
    return f"shard-{k:06d}.{fmt}"


def units_for_machine(n_units: int, shard: tuple[int, int]) -> range:
    """The contiguous block of work units machine ``I`` of ``N`` owns."""
    i, n = shard
    return range(i * n_units // n, (i + 1) * n_units // n)


# ------------------------------------------------------------------------------ checks
def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard I/N must satisfy 0 <= I < N, got {text!r}")
    return i, n


def validate_options(opts: GenerateOptions) -> None:
    """Raise ``ValueError`` naming the flag for any inconsistent option."""
    def positive(name, value):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")

    if opts.dataset_type not in DATASET_TYPES:
        raise ValueError(f"--dataset_type must be one of {', '.join(DATASET_TYPES)}, got {opts.dataset_type!r}")
    if opts.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {opts.backend!r}")
    for name in ("num_systems", "num_class", "per_class", "size", "n_points", "shard_size", "min_n"):
        positive(name, getattr(opts, name))
    for name in ("workers", "batch_size"):
        if getattr(opts, name) is not None:
            positive(name, getattr(opts, name))
    if opts.min_n < 2:
        raise ValueError(f"--min_n must be >= 2 (one-map systems need an explicit sigma-factor range, "
                         f"which generate does not take; sample them with ofdb-fast ifs), got {opts.min_n}")
    if opts.max_n < opts.min_n:
        raise ValueError(f"--max_n must be >= --min_n ({opts.min_n}), got {opts.max_n}")
    if not (opts.bval > 0 and np.isfinite(opts.bval)):
        raise ValueError(f"--bval must be a finite number > 0, got {opts.bval}")
    if not 0 <= opts.seed < 2**64:
        raise ValueError(f"--seed must be in [0, 2**64), got {opts.seed}")
    if not 0 <= opts.png_level <= 9:
        raise ValueError(f"--png_level must be in 0..9, got {opts.png_level}")
    i, n = opts.shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard I/N must satisfy 0 <= I < N, got {i}/{n}")
    if opts.resume and opts.overwrite:
        raise ValueError("--resume and --overwrite cannot be used together")
    if not opts.dataset_dir:
        raise ValueError("--dataset_dir must not be empty")
    if opts.param_file and not os.path.isfile(opts.param_file):
        raise ValueError(f"--param_file {opts.param_file} does not exist or is not a file")
    if opts.dataset_type == "multi-fractals":
        if opts.num_systems < opts.num_class:
            raise ValueError(f"--num_systems ({opts.num_systems}) must be >= --num_class ({opts.num_class}) "
                             f"for multi-fractals (each class needs a block of num_systems // num_class systems)")
        if opts.remove_jitter or opts.background:
            raise ValueError("--remove_jitter and --background are not supported with --dataset_type multi-fractals")


def _resolve_backend(backend: str) -> str:
    from .._dispatch import has_cuda, resolve

    if backend == "auto":
        return "cuda" if has_cuda() else resolve("ifs_render", "auto", "cpu", supported=("numpy", "cpu"))
    return resolve("ifs_render", backend, "cuda" if backend == "cuda" else "cpu",
                   supported=("numpy", "cpu", "cuda"))


# ---------------------------------------------------------------------------- manifest
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(opts: GenerateOptions, backend: str) -> dict:
    """The manifest: everything that determines the output bytes (compared on ``--resume``)
    plus an ``info`` section that is not compared. It never records the machine's shard."""
    from .. import __version__

    sampled = not opts.param_file
    tar_or_npz = opts.format in ("tar", "npz")
    content = {
        "dataset_type": opts.dataset_type,
        "param_file_sha256": None if sampled else _sha256(opts.param_file),
        "num_systems": opts.num_systems,
        "num_class": opts.num_class,
        "per_class": opts.per_class,
        "size": opts.size,
        "remove_jitter": opts.remove_jitter,
        "background": opts.background,
        "n_points": opts.n_points,
        "seed": opts.seed,
        "min_n": opts.min_n if sampled else None,
        "max_n": opts.max_n if sampled else None,
        "bval": float(opts.bval) if sampled else None,
        "format": opts.format,
        "shard_size": opts.shard_size if tar_or_npz else None,
        "png_level": opts.png_level if opts.format in ("png", "tar") else None,
        # numpy and cpu are bit-identical; CUDA may differ in rare pixels.
        "render_numerics": "cuda" if backend == "cuda" else "cpu",
    }
    total = opts.num_class * opts.per_class
    return {
        "manifest_version": MANIFEST_VERSION,
        "ofdb_fast_version": __version__,
        "content": content,
        "counts": {
            "images": total,
            "classes": opts.num_class,
            "units": total if opts.format == "png" else -(-total // opts.shard_size),
        },
        "info": {"tool": "ofdb-fast generate", "param_file": opts.param_file or None},
    }


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _check_resume_manifest(path: str, expected: dict) -> None:
    try:
        with open(path, "rb") as f:
            found = json.loads(f.read().decode())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: cannot read {path}: {exc}") from None
    if not isinstance(found, dict):
        raise ValueError(f"--resume: {path} is not an ofdb_fast manifest")
    keys = ("manifest_version", "ofdb_fast_version", "content", "counts")
    if all(found.get(k) == expected[k] for k in keys):
        return
    diffs = []
    for key in keys[:2]:
        if found.get(key) != expected[key]:
            diffs.append(f"{key} {found.get(key)!r} (now {expected[key]!r})")
    old = found.get("content") if isinstance(found.get("content"), dict) else {}
    for key, value in expected["content"].items():
        if old.get(key) != value:
            diffs.append(f"{key} {old.get(key)!r} (now {value!r})")
    raise ValueError(f"--resume: {path} was written with different settings: {', '.join(diffs) or 'counts'}; "
                     f"rerun with the original flags, or use --overwrite to start over")


# ------------------------------------------------------------------- directory handling
def _is_ours(entry: os.DirEntry) -> bool:
    name = entry.name
    if entry.is_file(follow_symlinks=False):
        return name == MANIFEST_NAME or bool(_SHARD_RE.match(name)) or writers.is_temp_name(name)
    if entry.is_dir(follow_symlinks=False) and name.isdigit():
        with os.scandir(entry.path) as inner:
            return all(e.is_file(follow_symlinks=False) and (_IMAGE_RE.match(e.name) or writers.is_temp_name(e.name))
                       for e in inner)
    return False


def _clear_own_files(dataset_dir: str) -> None:
    """--overwrite: refuse foreign files, else remove this tool's files."""
    with os.scandir(dataset_dir) as it:
        entries = list(it)
    for entry in entries:
        if not _is_ours(entry):
            raise ValueError(f"--overwrite: {dataset_dir} contains {entry.path!r}, which ofdb-fast generate "
                             f"did not write; refusing to delete anything (empty the directory yourself)")
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def _remove_temp_files(dataset_dir: str) -> None:
    """--resume: delete temp files an interrupted run left in our layout."""
    with os.scandir(dataset_dir) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False) and writers.is_temp_name(entry.name):
                os.remove(entry.path)
            elif entry.is_dir(follow_symlinks=False) and entry.name.isdigit():
                with os.scandir(entry.path) as inner:
                    for e in inner:
                        if e.is_file(follow_symlinks=False) and writers.is_temp_name(e.name):
                            os.remove(e.path)


def prepare_directory(opts: GenerateOptions, manifest: dict) -> None:
    """Create/check ``dataset_dir`` per ``--resume``/``--overwrite`` and write the manifest."""
    path = opts.dataset_dir
    manifest_path = os.path.join(path, MANIFEST_NAME)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OSError(f"--dataset_dir {path}: cannot create the directory: {exc.strerror or exc}") from None
    if not os.path.isdir(path):
        raise OSError(f"--dataset_dir {path} is not a directory")
    non_empty = any(True for _ in os.scandir(path))
    if non_empty:
        if opts.overwrite:
            _clear_own_files(path)
        elif opts.resume:
            if not os.path.isfile(manifest_path):
                raise ValueError(f"--resume: {path} has no {MANIFEST_NAME}; it was not written by "
                                 f"ofdb-fast generate (use an empty directory)")
            _check_resume_manifest(manifest_path, manifest)
            _remove_temp_files(path)
            return
        else:
            raise ValueError(f"--dataset_dir {path} is not empty; pass --resume to continue a previous run "
                             f"or --overwrite to replace its output")
    try:
        writers.atomic_write_bytes(manifest_path, _manifest_bytes(manifest))
    except OSError as exc:
        raise OSError(f"--dataset_dir {path}: cannot write files: {exc.strerror or exc}") from None


# -------------------------------------------------------------------------- systems
# Sampling one system through a gap costs ~1.2 us, a separate sample_systems call ~90 us
# (2-core CI VM): runs of used indices closer than this are sampled as one range.
_MERGE_GAP = 64


def _sample_subset(indices: np.ndarray, opts: GenerateOptions):
    """Counter-mode systems ``indices`` (sorted, unique) of ``num_systems``, sampled as a few
    contiguous ranges with ``start=``; equal to sampling all and indexing, since system ``j``
    depends only on (seed, j)."""
    from .ifs import IFSParams, sample_systems

    indices = np.asarray(indices, dtype=np.int64)
    kwargs = dict(min_n=opts.min_n, max_n=opts.max_n, bval=opts.bval, seed=opts.seed, rng="counter")
    breaks = np.flatnonzero(np.diff(indices) > _MERGE_GAP) + 1
    parts = []
    for run in np.split(indices, breaks):
        first = int(run[0])
        block = sample_systems(int(run[-1]) - first + 1, start=first, **kwargs)
        parts.append(block.subset(run - first))
    systems = np.concatenate([p.systems for p in parts])
    n_maps = np.concatenate([p.n_maps for p in parts])
    hparams = dict(parts[0].hparams, num_systems=int(indices.size), start=None, indices="subset")
    return IFSParams(systems, n_maps, hparams)


def load_systems(opts: GenerateOptions, used: np.ndarray):
    """``IFSParams`` holding the systems ``used`` (sorted unique global indices), in that order."""
    if opts.param_file:
        from .params_io import load_params

        params = load_params(opts.param_file)
        if len(params) < opts.num_systems:
            raise ValueError(f"--param_file {opts.param_file} holds {len(params)} systems but "
                             f"--num_systems is {opts.num_systems}; pass --num_systems {len(params)} or a larger file")
        return params.subset(used)
    return _sample_subset(used, opts)


# ---------------------------------------------------------------------------- planning
@dataclasses.dataclass
class _Plan:
    labels: np.ndarray  # [C*P]
    systems: np.ndarray  # [C*P] system used by each image (fractals)
    units: range  # this machine's units
    todo_units: list  # units that still need writing
    n_skipped: int
    todo_indices: np.ndarray | None = None  # images still to render, in order


def _plan(opts: GenerateOptions) -> _Plan:
    labels, systems = class_system_index(opts.num_class, opts.per_class, opts.num_systems)
    total = labels.size
    if opts.format == "png":
        units = units_for_machine(total, opts.shard)
        present: dict[int, set] = {}
        todo = []
        for i in units:
            label = int(labels[i])
            if label not in present:
                class_dir = os.path.join(opts.dataset_dir, str(label))
                present[label] = set(os.listdir(class_dir)) if os.path.isdir(class_dir) else set()
            if os.path.basename(image_relpath(label, i, opts.per_class)) not in present[label]:
                todo.append(i)
        return _Plan(labels, systems, units, todo, len(units) - len(todo))
    n_units = -(-total // opts.shard_size)
    units = units_for_machine(n_units, opts.shard)
    todo = [k for k in units if not os.path.exists(os.path.join(opts.dataset_dir, shard_name(k, opts.format)))]
    done = set(units) - set(todo)
    n_skipped = sum(min(opts.shard_size, total - k * opts.shard_size) for k in done)
    return _Plan(labels, systems, units, todo, n_skipped)


def _batches(opts: GenerateOptions, plan: _Plan, batch_size: int):
    """Yield ``(unit, image_indices)``; for shards a batch never crosses a shard boundary."""
    if opts.format == "png":
        todo = np.asarray(plan.todo_units, dtype=np.int64)
        for start in range(0, todo.size, batch_size):
            yield None, todo[start:start + batch_size]
        return
    total = plan.labels.size
    for k in plan.todo_units:
        stop = min((k + 1) * opts.shard_size, total)
        for start in range(k * opts.shard_size, stop, batch_size):
            yield k, np.arange(start, min(start + batch_size, stop), dtype=np.int64)


# -------------------------------------------------------------------------- rendering
class _Renderer:
    def __init__(self, opts: GenerateOptions, plan: _Plan, backend: str):
        self.opts = opts
        self.backend = backend
        if opts.dataset_type == "fractals":
            needed = np.asarray(plan.todo_indices, dtype=np.int64)
            self.used = np.unique(plan.systems[needed]) if needed.size else np.zeros(0, np.int64)
        else:
            self.blocks = class_blocks(opts.num_class, opts.num_systems)
            labels = np.unique(plan.labels[np.asarray(plan.todo_indices, dtype=np.int64)])
            self.used = np.unique(self.blocks[labels]) if labels.size else np.zeros(0, np.int64)
        self.params = load_systems(opts, self.used) if self.used.size else None

    def __call__(self, image_ids: np.ndarray, labels: np.ndarray, systems: np.ndarray) -> np.ndarray:
        opts = self.opts
        if opts.dataset_type == "multi-fractals":
            from .multi import render_multi_fractals

            blocks = [np.searchsorted(self.used, self.blocks[label]) for label in labels]
            return np.asarray(render_multi_fractals(self.params, blocks, image_ids, size=opts.size, seed=opts.seed,
                                                    backend=self.backend, n_points=opts.n_points))
        rows = np.searchsorted(self.used, systems)
        return render_fractals(opts, self.params.systems[rows], self.params.n_maps[rows], image_ids, self.backend)


def render_fractals(opts: GenerateOptions, systems: np.ndarray, n_maps: np.ndarray, image_ids: np.ndarray,
                    backend: str) -> np.ndarray:
    """``ifs_render`` with the dataset's settings; host arrays in and out on every backend.

    Args:
        systems: ``[B, K, 2, 3]`` float64; n_maps: ``[B]``; image_ids: ``[B]`` global indices.

    Returns:
        ``uint8 [B, size, size, 3]``.
    """
    from ..ops.ifs_render import RenderConfig, ifs_render

    config = RenderConfig(n_points=opts.n_points, jitter=not opts.remove_jitter, background=opts.background)
    args = (systems, n_maps, image_ids)
    if backend == "cuda":  # ops never copy across devices; do it here, explicitly
        import torch

        args = tuple(torch.as_tensor(np.ascontiguousarray(a), device="cuda") for a in args)
    images = ifs_render(args[0], args[1], size=(opts.size, opts.size), seed=opts.seed, image_ids=args[2],
                        config=config, backend=backend)
    if backend == "cuda":
        images = images.cpu().numpy()
    return np.asarray(images)


def _preflight(opts: GenerateOptions, backend: str) -> None:
    """Surface render errors (unsupported option, unavailable backend) before any file is written."""
    if opts.dataset_type == "fractals":
        render_fractals(opts, np.zeros((0, 1, 2, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64), backend)
    else:
        from . import multi  # noqa: F401


# --------------------------------------------------------------------------- pipeline
def _write_png(path: str, image: np.ndarray, level: int) -> None:
    writers.atomic_write_bytes(path, writers.encode_png(image, level))


def generate(opts: GenerateOptions) -> GenerateResult:
    """Generate (this machine's part of) the dataset described by ``opts``.

    Rendering runs in the calling thread (the compiled backends release the GIL and use all
    cores) while a thread pool encodes and writes the previous batches; at most two batches
    are in flight, so memory stays bounded at any dataset size.

    Returns:
        counts of images written and skipped, and the wall time of this call.

    Example:
        >>> generate(GenerateOptions(dataset_dir="/tmp/ofdb", num_class=10, size=64, n_points=2000,
        ...                          progress=False)).n_written  # doctest: +SKIP
        10
    """
    start = time.perf_counter()
    validate_options(opts)
    backend = _resolve_backend(opts.backend)
    _preflight(opts, backend)
    manifest = build_manifest(opts, backend)
    prepare_directory(opts, manifest)
    plan = _plan(opts)
    batch_size = opts.batch_size or (256 if backend == "cuda" else 64)
    batches = list(_batches(opts, plan, batch_size))
    plan.todo_indices = np.concatenate([ids for _, ids in batches]) if batches else np.zeros(0, np.int64)
    n_todo = int(plan.todo_indices.size)
    if n_todo == 0:
        return GenerateResult(0, plan.n_skipped, time.perf_counter() - start)
    renderer = _Renderer(opts, plan, backend)
    if opts.format == "png":
        for label in np.unique(plan.labels[plan.todo_indices]):
            os.makedirs(os.path.join(opts.dataset_dir, str(int(label))), exist_ok=True)

    progress = _progress(n_todo, opts.progress)
    workers = opts.workers or os.cpu_count() or 1
    in_flight: deque[list[Future]] = deque()
    open_shard: dict = {}  # k -> writer, touched only by the single writer thread
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="ofdb-encode") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="ofdb-shard") as shard_pool:
            try:
                for k, ids in batches:
                    images = renderer(ids, plan.labels[ids], plan.systems[ids])
                    in_flight.append(_submit(opts, pool, shard_pool, open_shard, k, ids, plan.labels[ids], images))
                    while len(in_flight) > 1:
                        _drain(in_flight.popleft(), progress)
                while in_flight:
                    _drain(in_flight.popleft(), progress)
            except BaseException:
                for futures in in_flight:
                    for f in futures:
                        f.cancel()
                shard_pool.submit(_abort_all, open_shard).result()
                raise
    finally:
        progress.close()
    return GenerateResult(n_todo, plan.n_skipped, time.perf_counter() - start)


def _submit(opts, pool, shard_pool, open_shard, k, ids, labels, images) -> list[Future]:
    if opts.format == "png":
        return [pool.submit(_write_png, os.path.join(opts.dataset_dir, image_relpath(int(lbl), int(i), opts.per_class)),
                            images[j], opts.png_level) for j, (i, lbl) in enumerate(zip(ids, labels))]
    pngs = [pool.submit(writers.encode_png, images[j], opts.png_level) for j in range(len(ids))] \
        if opts.format == "tar" else None
    return [shard_pool.submit(_append_to_shard, opts, open_shard, k, ids, labels, images, pngs)]


def _append_to_shard(opts, open_shard, k, ids, labels, images, pngs) -> int:
    total = opts.num_class * opts.per_class
    first, stop = k * opts.shard_size, min((k + 1) * opts.shard_size, total)
    writer = open_shard.get(k)
    if writer is None:
        path = os.path.join(opts.dataset_dir, shard_name(k, opts.format))
        if opts.format == "tar":
            writer = writers.TarShardWriter(path)
        else:
            all_ids = np.arange(first, stop, dtype=np.int64)
            writer = writers.NpzShardWriter(path, stop - first, opts.size, opts.size,
                                            all_ids // opts.per_class, all_ids)
        open_shard[k] = writer
    if opts.format == "tar":
        for i, label, png in zip(ids, labels, pngs):
            writer.add(int(i), png.result(), int(label))
    else:
        writer.add(images)
    if int(ids[-1]) == stop - 1:
        open_shard.pop(k).close()
    return len(ids)


def _abort_all(open_shard: dict) -> None:
    for writer in open_shard.values():
        writer.abort()
    open_shard.clear()


def _drain(futures: list[Future], progress) -> None:
    n = 0
    for f in futures:
        result = f.result()
        n += result if isinstance(result, int) else 1
    progress.update(n)


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
