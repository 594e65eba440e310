"""Low-latency PatchCore scoring for batch 1 and small batches (issue 6).

``FastScorer(model)`` scores images with a fitted :class:`~ofdb_fast.patchcore.model.PatchCore`
through a serving-oriented path; the model itself is left untouched (``predict`` stays the
float32 reference path):

- backbone: a copy of the (already truncated) extractor with every eval-mode BatchNorm folded
  into the convolution before it, cast to ``dtype`` (float16/bfloat16 on the GPU) in
  ``channels_last`` layout;
- ``patch_aggregate``: the fused Triton kernel on the GPU (float32 features in, float32 out);
- kNN: :func:`ofdb_fast.triton.knn_min.knn_min_triton`, the fused GEMM + running-min kernel,
  over a copy of the memory bank in ``dtype`` (its squared norms precomputed once in float32);
  queries are rounded to ``dtype``, accumulation is float32;
- maps: bilinear upsampling and the scipy-equivalent Gaussian of ``scoring.py``, with the
  kernel and the reflect indices kept on the device (no host copies per call);
- CUDA graphs: per batch size (and image size) one ``torch.cuda.CUDAGraph`` with a static
  input buffer, captured on first use or by :meth:`FastScorer.warmup`. A batch of ``n`` images
  runs in chunks; each chunk replays the smallest graph that holds it (padded rows are zeros,
  their outputs dropped: BatchNorm is in eval mode, so rows never interact).

On the CPU the same path runs eagerly (no graphs), float32 or bfloat16, with the model's kNN
backend on the float32 bank unless ``knn_backend="triton"`` (the Triton interpreter: tests).

Accuracy vs ``PatchCore.predict``: float32 on the CPU agrees to float32 rounding (BatchNorm
folding and summation order; tests use rtol 1e-4); half precision changes the features by
~1e-3 relative (tests state the measured worst case) and leaves image AUROC unchanged to 3
decimals on a synthetic category.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import require_int

DTYPES = ("float16", "bfloat16", "float32")
KNN_BACKENDS = ("auto", "triton", "numpy", "cpu", "torch", "faiss")


def fold_batchnorm(module: Any) -> Any:
    """Fold every ``(convN, bnN)`` pair and ``downsample = Sequential(conv, bn)`` of a
    torchvision ResNet (eval mode) into the convolution, in place; returns ``module``."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in module.modules():
        for i in (1, 2, 3):
            conv, bn = getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(parent, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(parent, f"bn{i}", torch.nn.Identity())
        ds = getattr(parent, "downsample", None)
        if isinstance(ds, torch.nn.Sequential) and len(ds) == 2 and isinstance(ds[0], torch.nn.Conv2d) \
                and isinstance(ds[1], torch.nn.BatchNorm2d):
            parent.downsample = torch.nn.Sequential(fuse_conv_bn_eval(ds[0], ds[1]))
    return module


class _Smoother:
    """``scoring.anomaly_maps_torch`` with its constants on the device (graph-capturable)."""

    def __init__(self, size: tuple[int, int], sigma: float, device: Any):
        import torch

        from . import scoring

        self.size, self.sigma = size, float(sigma)
        if self.sigma > 0:
            kernel = torch.as_tensor(scoring.gaussian_kernel1d(self.sigma), dtype=torch.float32, device=device)
            radius = (kernel.numel() - 1) // 2
            self.ky, self.kx = kernel.view(1, 1, -1, 1), kernel.view(1, 1, 1, -1)
            self.iy = torch.as_tensor(scoring.symmetric_index(size[0], radius), device=device)
            self.ix = torch.as_tensor(scoring.symmetric_index(size[1], radius), device=device)

    def __call__(self, patch):  # [B, h, w] float32 -> [B, H, W]
        import torch.nn.functional as F

        x = F.interpolate(patch[:, None], size=self.size, mode="bilinear", align_corners=False)
        if self.sigma > 0:
            x = F.conv2d(x.index_select(2, self.iy), self.ky)
            x = F.conv2d(x.index_select(3, self.ix), self.kx)
        return x[:, 0]


class FastScorer:
    """Batch-1 / small-batch scoring of a fitted PatchCore model (see the module docstring).

    Args:
        model: a fitted (or loaded) :class:`PatchCore`; its device is used.
        batch_sizes: static batch sizes (one CUDA graph each); larger inputs run in chunks.
        dtype: ``"auto"`` (float16 on CUDA, float32 on the CPU), ``"float16"``, ``"bfloat16"``
            or ``"float32"`` (a string or the torch dtype): backbone and memory-bank precision.
        channels_last: run the backbone in ``channels_last`` layout.
        cuda_graph: capture CUDA graphs (CUDA only; ignored on the CPU).
        knn_backend: ``"auto"`` (``"triton"`` on CUDA; on the CPU the model's ``knn_backend``
            over the float32 bank), ``"triton"``, or a ``knn_score`` backend name (float32).
        aggregate_backend: ``patch_aggregate`` backend (``"auto"``: triton on CUDA).
        fold_bn: fold BatchNorm into the convolutions.

    Example:
        >>> scorer = FastScorer(PatchCore.load("runs/bottle", device="cuda"))  # doctest: +SKIP
        >>> scorer.warmup()  # captures the graphs for 1, 8, 32 images  # doctest: +SKIP
        >>> scores, maps = scorer.score(image)  # [1], [1, 224, 224]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_sizes: Sequence[int] = (1, 8, 32),
        dtype: Any = "auto",
        channels_last: bool = True,
        cuda_graph: bool = True,
        knn_backend: str = "auto",
        aggregate_backend: str = "auto",
        fold_bn: bool = True,
    ):
        import torch

        model._require_fitted()
        if isinstance(batch_sizes, (int, np.integer)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise ValueError(f"batch_sizes must be a non-empty sequence of ints >= 1, got {batch_sizes!r}")
        self.batch_sizes = tuple(sorted({require_int(b, "batch_sizes[i]", minimum=1) for b in batch_sizes}))
        self.device = torch.device(model.device)
        on_cuda = self.device.type == "cuda"
        name = str(dtype).replace("torch.", "")
        if name == "auto":
            name = "float16" if on_cuda else "float32"
        if name not in DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {DTYPES}, got {dtype!r}")
        self.dtype = getattr(torch, name)
        if knn_backend not in KNN_BACKENDS:
            raise ValueError(f"knn_backend must be one of {KNN_BACKENDS}, got {knn_backend!r}")
        if knn_backend == "auto":
            knn_backend = "triton" if on_cuda else model.knn_backend
        self.knn_backend = knn_backend
        self.aggregate_backend = aggregate_backend
        self.cuda_graph = bool(cuda_graph) and on_cuda
        if self.cuda_graph and knn_backend != "triton":
            raise ValueError(f"cuda_graph=True needs knn_backend='triton' (the other backends validate on the "
                             f"host, which a graph cannot capture), got {knn_backend!r}")
        self.channels_last = bool(channels_last)
        self.model = model
        self.config = model.config
        self.k = min(int(self.config["anomaly_scorer_num_nn"]), int(model.memory_bank.shape[0]))
        if knn_backend == "triton":
            from ..triton.knn_min import MAX_K, bank_sqnorm

            if self.k > MAX_K:
                raise ValueError(f"anomaly_scorer_num_nn must be <= {MAX_K} for knn_backend 'triton', got {self.k}")
            largest = float(torch.linalg.vector_norm(model.memory_bank, float("inf")))
            if self.dtype == torch.float16 and largest >= float(torch.finfo(torch.float16).max):
                raise ValueError(f"the memory bank must fit in float16 (|value| < 65504) for dtype float16, got "
                                 f"|value| up to {largest:g}; use dtype='bfloat16'")
            self.bank = model.memory_bank.to(self.dtype).contiguous()
            self.bank_sqnorm = bank_sqnorm(self.bank)
        self.bank32 = model.memory_bank.to(torch.float32).contiguous()
        extractor = copy.deepcopy(model.extractor).eval()
        if fold_bn:
            fold_batchnorm(extractor)
        extractor = extractor.to(self.device, self.dtype)
        if self.channels_last:
            extractor = extractor.to(memory_format=torch.channels_last)
        self.extractor = extractor
        self._smoothers: dict[tuple[int, int], _Smoother] = {}
        self._graphs: dict[tuple[int, int, int], tuple] = {}

    # ------------------------------------------------------------------ pipeline
    def _smoother(self, size: tuple[int, int]) -> _Smoother:
        if size not in self._smoothers:
            self._smoothers[size] = _Smoother(size, self.config["sigma"], self.device)
        return self._smoothers[size]

    def _pipeline(self, images):
        """``images [B, 3, H, W]`` float32 on the device -> ``(scores [B], maps [B, H, W])`` float32."""
        import torch

        from ..ops.knn_score import knn_score
        from ..ops.patch_aggregate import patch_aggregate
        from . import scoring

        cfg = self.config
        with torch.inference_mode():
            x = images.to(self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats = [f.to(torch.float32).contiguous() for f in self.extractor(x)]
            n, (h, w) = images.shape[0], feats[0].shape[2:]
            flat = patch_aggregate(feats, patch_size=cfg["patch_size"],
                                   pretrain_embed_dimension=cfg["pretrain_embed_dimension"],
                                   target_embed_dimension=cfg["target_embed_dimension"],
                                   backend=self.aggregate_backend)
            if self.knn_backend == "triton":
                from ..triton.knn_min import knn_min_triton

                dist, index = knn_min_triton(flat, self.bank, self.k, sqnorm=self.bank_sqnorm)
            else:
                dist, index = knn_score(flat, self.bank32, self.k, return_indices=True, backend=self.knn_backend)
            patch = scoring.patch_scores_from_distances(dist).reshape(n, h * w)
            if cfg["reweight"]:
                scores = scoring.reweight_image_scores(flat.reshape(n, h * w, -1), patch, index[:, 0].reshape(n, -1),
                                                       self.bank32, b=cfg["reweight_b"])
            else:
                scores = scoring.image_scores_from_patches(patch)
            maps = self._smoother(tuple(int(s) for s in images.shape[2:]))(patch.reshape(n, h, w))
        return scores.to(torch.float32), maps

    def _graph(self, batch: int, height: int, width: int) -> tuple:
        """(graph, static input, static outputs) for this shape, captured on first use."""
        import torch

        key = (batch, height, width)
        if key not in self._graphs:
            with torch.cuda.device(self.device):  # torch.cuda.graph captures on the current device
                self._graphs[key] = self._capture(batch, height, width)
        return self._graphs[key]

    def _capture(self, batch: int, height: int, width: int) -> tuple:
        """Warm up, then capture ``_pipeline`` on a static ``[batch, 3, height, width]`` input."""
        import torch

        static_in = torch.zeros((batch, 3, height, width), dtype=torch.float32, device=self.device)
        # Warm up on a side stream (compiles the Triton kernels, fills the table caches and
        # cuDNN's choices) so that the capture sees no host copies or first-call work.
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._pipeline(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Capture on `side` too: without `stream=`, torch.cuda.graph uses one process-wide
        # capture stream created on whichever GPU was current at the first capture, so a scorer
        # on cuda:1 after one on cuda:0 would capture on cuda:0 (an empty or failing graph).
        with torch.cuda.graph(graph, stream=side):
            static_out = self._pipeline(static_in)
        return graph, static_in, static_out

    def warmup(self, size: int | tuple[int, int] | None = None) -> FastScorer:
        """Capture (CUDA) or run once (CPU) every batch size at ``size`` (default: the model's
        ``imagesize``), so the first real request pays no compilation or capture."""
        import torch

        from .._validate import require_size2

        height, width = require_size2(self.config["imagesize"] if size is None else size, "size")
        for b in self.batch_sizes:
            if self.cuda_graph:
                self._graph(b, height, width)
            else:
                self._pipeline(torch.zeros((b, 3, height, width), device=self.device))
        return self

    # ---------------------------------------------------------------------- API
    def _chunks(self, n: int) -> list[tuple[int, int, int]]:
        """``(start, count, static batch)`` covering ``n`` images: full largest batches, then the
        smallest static batch that holds the rest."""
        largest = self.batch_sizes[-1]
        out, start = [], 0
        while start < n:
            count = min(largest, n - start)
            out.append((start, count, next(b for b in self.batch_sizes if b >= count)))
            start += count
        return out

    def score(self, images: Any):
        """Score images.

        Args:
            images: ``[B, 3, H, W]`` float images normalised like the training images (NumPy
                or torch, any device; moved to the model's device like ``PatchCore.predict``).

        Returns:
            ``(image_scores [B], maps [B, H, W])`` float32: NumPy for NumPy input, torch
            tensors on the input's device for torch input.
        """
        import torch

        is_torch = isinstance(images, torch.Tensor)
        x = images if is_torch else torch.as_tensor(np.asarray(images))
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"images must have a floating dtype (normalised), got {x.dtype}")
        n, _, height, width = (int(s) for s in x.shape)
        x = x.to(self.device, torch.float32)
        scores = torch.empty((n,), dtype=torch.float32, device=self.device)
        maps = torch.empty((n, height, width), dtype=torch.float32, device=self.device)
        # graph.replay() launches on the current device's stream: make the model's GPU current.
        with torch.cuda.device(self.device) if self.cuda_graph else contextlib.nullcontext():
            for start, count, batch in self._chunks(n):
                part = x[start:start + count]
                if self.cuda_graph:
                    graph, static_in, (s_out, m_out) = self._graph(batch, height, width)
                    static_in[:count].copy_(part)
                    if count < batch:
                        static_in[count:].zero_()
                    graph.replay()
                    scores[start:start + count] = s_out[:count]
                    maps[start:start + count] = m_out[:count]
                else:
                    s, m = self._pipeline(part)
                    scores[start:start + count], maps[start:start + count] = s, m
        if is_torch:
            return scores.to(images.device), maps.to(images.device)
        return scores.cpu().numpy(), maps.cpu().numpy()


# ------------------------------------------------------------------- serving benchmark
def unfused_scorer(model: Any):
    """The unfused float32 PyTorch path (``predict``'s ``_score_batch`` with the ``torch``
    aggregate and kNN backends): the baseline of ``serve-bench``. Returns ``fn(images)``."""

    def run(images):
        saved = model.aggregate_backend, model.knn_backend
        model.aggregate_backend, model.knn_backend = "torch", "torch"
        try:
            return model._score_batch(images)
        finally:
            model.aggregate_backend, model.knn_backend = saved

    return run


def measure_latency(fn: Any, images: Any, *, iters: int, warmup: int = 3) -> dict[str, float]:
    """Time ``fn(images)`` ``iters`` times (after ``warmup`` calls), waiting for the GPU after
    each call; ``images`` stay where they are (already on the device: no transfer is timed).

    Returns:
        ``{"batch", "iters", "p50_ms", "p99_ms", "mean_ms", "min_ms", "images_per_s"}`` with
        ``images_per_s = batch / mean latency``.
    """
    import time

    import torch

    iters = require_int(iters, "iters", minimum=1)
    warmup = require_int(warmup, "warmup", minimum=0)
    on_cuda = isinstance(images, torch.Tensor) and images.is_cuda
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    for _ in range(warmup):
        fn(images)
    sync()
    times = np.empty(iters, np.float64)
    for i in range(iters):
        t0 = time.perf_counter()
        fn(images)
        sync()
        times[i] = time.perf_counter() - t0
    batch = int(images.shape[0])
    return {"batch": batch, "iters": iters, "p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p99_ms": 1e3 * float(np.percentile(times, 99)), "mean_ms": 1e3 * float(times.mean()),
            "min_ms": 1e3 * float(times.min()), "images_per_s": batch / float(times.mean())}
