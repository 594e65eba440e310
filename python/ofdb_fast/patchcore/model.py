"""PatchCore: fit a memory bank of patch features on good images, score new images against it.

Pipeline (defaults = the reference's MVTec command; see shared/reference/patchcore.md):
backbone (``wide_resnet50_2``, ``layer2`` + ``layer3``, truncated) -> ``patch_aggregate``
(3x3 patches, pooled to 1024 per layer, then to 1024) -> features ``[B*h*w, D]`` in (b, y, x)
order -> fit: ``kcenter_greedy`` approximate coreset of 10% -> memory bank ``[M, D]`` float32;
predict: ``knn_score`` (squared L2, k = ``anomaly_scorer_num_nn``) -> patch scores
``[B, h, w]`` -> image score = max (optional re-weighting) -> maps: bilinear to the input size
and Gaussian sigma 4 (``scoring.py``).

Saved models are a directory with ``config.json`` (format name and version, every parameter
needed to rebuild the model, fit statistics) and ``model.safetensors`` (``memory_bank``
``[M, D]``, plus ``backbone.*`` tensors unless the weights are a torchvision name that can be
loaded again). Never pickle. Loading validates the format, version, keys, shapes and dtypes.

Randomness: the coreset projection and start points come from ``seed`` (the ops' shared RNG);
random backbone weights from ``torch.manual_seed(seed)``.

Few-shot (``fewshot.py``): ``shots=K`` fits on K training images picked with ``seed`` (no
coreset while the bank is small); ``scorer="fewshot"`` scores with AnomalyGPT's per-layer max
cosine to the reference patches instead of the kNN distance, its banks saved as
``layer_bank.<i>`` tensors. Backbones may be ResNets or ViT/DINO/CLIP (``vit_backbones.py``).

BatchNorm adaptation (``bn_adapt=True``, off by default as in the reference): before the fit
images are embedded, every BatchNorm's running mean/var is re-estimated on those same images
(``backbones.adapt_batchnorm``: AdaBN with PreciseBN aggregation), so the features are
normalised for the category's good images instead of for the pretraining data (a
fractal-pretrained backbone's statistics come from fractals; a random one's are the identity).
Test images are never used. The adapted backbone is saved with the model (``backbone.*``
tensors, whatever the weights) and used unchanged by ``predict`` and after ``load``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write, atomic_write_json, prepare_output_dir
from .._validate import require_float, require_int
from . import backbones as _bb
from . import fewshot as _fewshot

FORMAT_NAME = "ofdb_fast.patchcore"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TENSORS_FILE = "model.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CORESET_METHODS = ("approx", "exact", "all")

# Parameters that define the model (saved in config.json), with their defaults.
DEFAULTS: dict[str, Any] = {
    "backbone": "wide_resnet50_2",
    "layers": list(_bb.DEFAULT_LAYERS),
    "weights": _bb.DEFAULT_WEIGHTS,
    "pretrain_embed_dimension": 1024,
    "target_embed_dimension": 1024,
    "patch_size": 3,
    "anomaly_scorer_num_nn": 1,
    "coreset_percentage": 0.1,
    "coreset_method": "approx",
    "coreset_proj_dim": 128,
    "seed": 0,
    "reweight": False,
    "reweight_b": 3,
    "sigma": 4.0,
    "resize": 256,
    "imagesize": 224,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "shots": 0,
    "scorer": "knn",
    "bn_adapt": False,
}
# Keys added after format version 1 was first written: files without them get these values.
_LATER_KEYS = {"shots": 0, "scorer": "knn", "bn_adapt": False}


def resolve_device(device: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when torch sees a GPU) -> ``"cpu"``/``"cuda"``."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was requested but torch sees no CUDA GPU; use --device cpu")
    return str(device)


def _check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    cfg["backbone"] = _bb.check_backbone(cfg["backbone"])
    layers = _bb.default_layers(cfg["backbone"]) if cfg["layers"] is None else cfg["layers"]
    cfg["layers"] = list(_bb.check_layers(layers, cfg["backbone"]))
    cfg["shots"] = require_int(cfg["shots"], "shots", minimum=0)
    if cfg["scorer"] not in _fewshot.SCORERS:
        raise ValueError(f"scorer must be one of {_fewshot.SCORERS}, got {cfg['scorer']!r}")
    cfg["weights"] = _bb.describe_weights(cfg["weights"])
    for key in ("pretrain_embed_dimension", "target_embed_dimension", "anomaly_scorer_num_nn",
                "coreset_proj_dim", "reweight_b", "resize", "imagesize"):
        cfg[key] = require_int(cfg[key], key, minimum=1)
    cfg["patch_size"] = require_int(cfg["patch_size"], "patch_size", minimum=1)
    if cfg["patch_size"] % 2 == 0:
        raise ValueError(f"patch_size must be odd (stride 1, same-size padding), got {cfg['patch_size']}")
    cfg["seed"] = require_int(cfg["seed"], "seed", minimum=0)
    cfg["coreset_percentage"] = require_float(cfg["coreset_percentage"], "coreset_percentage", lo=0.0, hi=1.0)
    if cfg["coreset_percentage"] <= 0.0:
        raise ValueError(f"coreset_percentage must be > 0, got {cfg['coreset_percentage']}")
    if cfg["coreset_method"] not in CORESET_METHODS:
        raise ValueError(f"coreset_method must be one of {CORESET_METHODS}, got {cfg['coreset_method']!r}")
    for key in ("reweight", "bn_adapt"):
        if not isinstance(cfg[key], bool):
            raise TypeError(f"{key} must be a bool, got {type(cfg[key]).__name__}")
    cfg["sigma"] = require_float(cfg["sigma"], "sigma", lo=0.0)
    for key in ("mean", "std"):
        val = cfg[key]
        if not isinstance(val, Sequence) or len(val) != 3:
            raise ValueError(f"{key} must be 3 numbers (one per RGB channel), got {val!r}")
        cfg[key] = [require_float(v, f"{key}[{i}]") for i, v in enumerate(val)]
    if cfg["imagesize"] > cfg["resize"]:
        raise ValueError(f"imagesize must be <= resize (centre crop), got {cfg['imagesize']} > {cfg['resize']}")
    return cfg


class PatchCore:
    """PatchCore anomaly detector (Roth et al., CVPR 2022), reference defaults.

    Args:
        backbone: ``"wide_resnet50_2"`` (default), ``"resnet18"``, ``"resnet50"``, ``"resnet101"``,
            or a ViT/DINO/CLIP name (``"timm:<model>"``, ``"open_clip:<arch>"``, ``"dino_vitb8"``...).
        layers: backbone layers to use; the first sets the patch grid (None: the backbone's default).
        weights: torchvision weights name (``"IMAGENET1K_V1"``), checkpoint path, or ``"random"``.
        pretrain_embed_dimension, target_embed_dimension, patch_size: feature aggregation.
        anomaly_scorer_num_nn: k of the kNN patch score.
        coreset_percentage: fraction of the training patches kept in the memory bank.
        coreset_method: ``"approx"`` (reference default), ``"exact"``, or ``"all"`` (no coreset).
        coreset_proj_dim: random projection dimension of the approximate coreset.
        seed: RNG seed (coreset; random backbone init).
        reweight, reweight_b: the paper's image-score re-weighting (off by default), b.
        sigma: Gaussian smoothing of the maps, in pixels (0 disables).
        resize, imagesize, mean, std: preprocessing the model expects (used by the CLI/datasets).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: images per forward pass.
        coreset_backend, knn_backend, aggregate_backend: backends of the ops (``"auto"``).
        progress: show tqdm progress bars.
        num_workers: image-decoding threads for datasets with a ``batches()`` method.
        shots: fit on this many training images picked with ``seed`` (0: all of them).
        scorer: ``"knn"`` (PatchCore's L2 kNN) or ``"fewshot"`` (per-layer max cosine).
        bn_adapt: re-estimate the backbone's BatchNorm statistics on the fit images before
            embedding them (see the module docstring); needs a backbone with BatchNorm.

    Example:
        >>> import numpy as np, warnings
        >>> images = np.random.default_rng(0).standard_normal((6, 3, 64, 64)).astype(np.float32)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the loud random-weights warning
        ...     model = PatchCore(backbone="resnet18", weights="random", resize=80, imagesize=64,
        ...                       device="cpu", progress=False).fit(images[:4])  # or a dataset of dicts
        >>> scores, maps = model.predict(images[4:])
        >>> scores.shape, maps.shape
        ((2,), (2, 64, 64))
        >>> model.save("runs/bottle"); model = PatchCore.load("runs/bottle")  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULTS["backbone"],
        layers: Sequence[str] | None = None,
        weights: Any = DEFAULTS["weights"],
        *,
        pretrain_embed_dimension: int = 1024,
        target_embed_dimension: int = 1024,
        patch_size: int = 3,
        anomaly_scorer_num_nn: int = 1,
        coreset_percentage: float = 0.1,
        coreset_method: str = "approx",
        coreset_proj_dim: int = 128,
        seed: int = 0,
        reweight: bool = False,
        reweight_b: int = 3,
        sigma: float = 4.0,
        resize: int = 256,
        imagesize: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        batch_size: int = 8,
        coreset_backend: str = "auto",
        knn_backend: str = "auto",
        aggregate_backend: str = "auto",
        progress: bool = False,
        num_workers: int = 2,
        shots: int = 0,
        scorer: str = "knn",
        bn_adapt: bool = False,
        _backbone_state: dict | None = None,
    ):
        raw = dict(backbone=backbone, layers=layers, weights=weights,
                   pretrain_embed_dimension=pretrain_embed_dimension,
                   target_embed_dimension=target_embed_dimension, patch_size=patch_size,
                   anomaly_scorer_num_nn=anomaly_scorer_num_nn, coreset_percentage=coreset_percentage,
                   coreset_method=coreset_method, coreset_proj_dim=coreset_proj_dim, seed=seed,
                   reweight=reweight, reweight_b=reweight_b, sigma=sigma, resize=resize,
                   imagesize=imagesize, mean=list(mean), std=list(std), shots=shots, scorer=scorer, bn_adapt=bn_adapt)
        self.config = _check_config(raw)
        self.device = resolve_device(device)
        self.batch_size = require_int(batch_size, "batch_size", minimum=1)
        self.coreset_backend = coreset_backend
        self.knn_backend = knn_backend
        self.aggregate_backend = aggregate_backend
        self.progress = bool(progress)
        self.num_workers = require_int(num_workers, "num_workers", minimum=0)
        self._weights_arg = weights
        self.extractor = _bb.build_extractor(self.config["backbone"], self.config["layers"], weights,
                                             seed=self.config["seed"], state_dict=_backbone_state)
        self.extractor.to(self.device)
        # ResNets run in channels_last (NHWC): oneDNN and cuDNN pick faster convolutions for it
        # (CI machine, 2 threads, 224 px: WRN50 layer2+3 batch 8 469 -> 373 ms, ResNet-18 batch 1
        # 16.7 -> 11.9 ms); the features differ from NCHW only by float32 rounding.
        self._channels_last = _bb._vit(self.config["backbone"]) is None
        if self._channels_last:
            import torch

            self.extractor.to(memory_format=torch.channels_last)
        self.memory_bank = None  # torch [M, D] on self.device after fit/load
        self.layer_banks: list | None = None  # scorer "fewshot": per layer [R_l, C_l] unit rows
        self.feature_grid: tuple[int, int] | None = None  # (h, w) of the fit images' patch grid
        self.fit_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ features
    def _as_batch(self, images: Any):
        import torch

        x = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"images must have a floating dtype (normalised), got {x.dtype}")
        return x.to(self.device, torch.float32)

    def embed(self, images: Any, return_layers: bool = False):
        """Patch features of a batch: ``images [B, 3, H, W]`` -> torch ``[B, h, w, D]`` float32
        (and the raw layer outputs ``[B, C_l, h_l, w_l]`` when ``return_layers``)."""
        import torch

        from ..ops.patch_aggregate import patch_aggregate

        x = self._as_batch(images)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self.extractor(x)
        feats = [f.contiguous() for f in feats]
        h, w = feats[0].shape[2:]
        out = patch_aggregate(
            feats,
            patch_size=self.config["patch_size"],
            pretrain_embed_dimension=self.config["pretrain_embed_dimension"],
            target_embed_dimension=self.config["target_embed_dimension"],
            backend=self.aggregate_backend,
        )
        out = torch.as_tensor(out, device=x.device).reshape(x.shape[0], h, w, -1)
        return (out, feats) if return_layers else out

    def _batches(self, data: Any, desc: str) -> Iterable[dict]:
        """Yield dicts with at least ``image`` from an array ``[N, 3, H, W]`` or a dataset."""
        from tqdm.auto import tqdm

        bs = self.batch_size
        if hasattr(data, "shape") and len(data.shape) == 4:
            n = int(data.shape[0])
            it = ({"image": data[i:i + bs]} for i in range(0, n, bs))
            total = (n + bs - 1) // bs
        elif hasattr(data, "batches"):  # MVTecDataset: threaded decoding, NumPy batches
            it, total = data.batches(bs, num_workers=self.num_workers), (len(data) + bs - 1) // bs
        else:
            import torch

            loader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=False, num_workers=0)
            it, total = loader, len(loader)
        yield from tqdm(it, total=total, desc=desc, unit="batch", disable=not self.progress, leave=False)

    # ----------------------------------------------------------------------- fit
    def fit(self, data: Any) -> PatchCore:
        """Build the memory bank from good images.

        Args:
            data: ``[N, 3, H, W]`` normalised images (NumPy or torch), or a dataset whose items
                are dicts with ``"image"`` (e.g. ``MVTecDataset(..., "train", ...)``).

        Returns:
            ``self``.
        """
        import torch

        from ..ops.kcenter_greedy import kcenter_greedy

        t0 = time.perf_counter()
        cfg = self.config
        shot_info = {}
        if cfg["shots"]:
            idx = _fewshot.select_shots(len(data), cfg["shots"], seed=cfg["seed"])
            data, used = _fewshot.take_shots(data, idx)
            shot_info = {"shots": used, "shot_indices": idx.tolist()}
        if cfg["bn_adapt"]:
            t_bn = time.perf_counter()
            bn = _bb.adapt_batchnorm(self.extractor, (self._as_batch(b["image"])
                                                      for b in self._batches(data, "fit: BatchNorm statistics")))
            shot_info["bn_adapt"] = {**bn, "seconds": round(time.perf_counter() - t_bn, 4)}
        chunks = []
        layer_chunks: list[list] = []
        n_images = 0
        for batch in self._batches(data, "fit: features"):
            feats, raw = self.embed(batch["image"], return_layers=True)
            if cfg["scorer"] == "fewshot":
                layer_chunks = layer_chunks or [[] for _ in raw]
                for c, f in zip(layer_chunks, raw):
                    c.append(_fewshot.normalized_tokens(f))
            n_images += feats.shape[0]
            self.feature_grid = tuple(int(s) for s in feats.shape[1:3])
            chunks.append(feats.reshape(-1, feats.shape[-1]))
        if not chunks:
            raise ValueError("fit needs at least one training image, got an empty dataset")
        features = torch.cat(chunks)
        del chunks
        t_embed = time.perf_counter() - t0
        n_patches = int(features.shape[0])
        self.layer_banks = [torch.cat(c) for c in layer_chunks] if layer_chunks else None
        small_fewshot = cfg["shots"] > 0 and n_patches <= _fewshot.SMALL_BANK
        if cfg["coreset_method"] == "all" or cfg["coreset_percentage"] >= 1.0 or small_fewshot:
            bank = features
        else:
            # n_select >= 1: int(N * percentage) can be 0 for tiny fits; an empty bank scores nothing.
            n_select = max(1, int(n_patches * cfg["coreset_percentage"]))
            idx = kcenter_greedy(features, n_select=n_select, method=cfg["coreset_method"],
                                 proj_dim=cfg["coreset_proj_dim"], seed=cfg["seed"],
                                 backend=self.coreset_backend)
            idx = torch.as_tensor(idx, device=features.device).long()
            bank = features.index_select(0, idx)
        self.memory_bank = bank.contiguous()
        if str(self.device).startswith("cuda"):  # "cuda" or "cuda:N": time the work, not its launch
            torch.cuda.synchronize(torch.device(self.device))
        total = time.perf_counter() - t0
        self.fit_info = {"n_train_images": n_images, "n_patches": n_patches,
                         "n_bank": int(self.memory_bank.shape[0]), "embed_seconds": round(t_embed, 4),
                         "coreset_seconds": round(total - t_embed, 4), "fit_seconds": round(total, 4),
                         **shot_info}
        return self

    # ------------------------------------------------------------------- predict
    def _require_fitted(self) -> None:
        if self.memory_bank is None:
            raise RuntimeError("this PatchCore model has no memory bank yet: call fit() or PatchCore.load()")

    def _score_batch(self, images: Any):
        """``images [B, 3, H, W]`` -> torch (image_scores [B], maps [B, H, W]) on the device."""
        from ..ops.knn_score import knn_score
        from . import scoring

        if self.config["scorer"] == "fewshot":
            return _fewshot.score_batch(self.extractor, images, self.layer_banks, self.config["sigma"])
        feats = self.embed(images)
        b, h, w, d = feats.shape
        flat = feats.reshape(-1, d)
        k = min(self.config["anomaly_scorer_num_nn"], int(self.memory_bank.shape[0]))
        if self.config["reweight"]:
            dist, index = knn_score(flat, self.memory_bank, k=k, return_indices=True, backend=self.knn_backend)
        else:
            dist = knn_score(flat, self.memory_bank, k=k, backend=self.knn_backend)
        patch = scoring.patch_scores_from_distances(dist).reshape(b, h * w)
        if self.config["reweight"]:
            scores = scoring.reweight_image_scores(feats.reshape(b, h * w, d), patch,
                                                   index[:, 0].reshape(b, h * w), self.memory_bank,
                                                   b=self.config["reweight_b"])
        else:
            scores = scoring.image_scores_from_patches(patch)
        maps = scoring.anomaly_maps_torch(patch.reshape(b, h, w), tuple(images.shape[2:]), self.config["sigma"])
        return scores, maps

    def predict(self, images: Any):
        """Score images.

        Args:
            images: ``[B, 3, H, W]`` float images normalised like the training images
                (NumPy or torch); moved to the model's ``device`` batch by batch.

        Returns:
            ``(image_scores [B], maps [B, H, W])`` float32, NumPy for NumPy input, torch tensors on
            the input's device for torch input.
        """
        import torch

        self._require_fitted()
        is_torch = isinstance(images, torch.Tensor)
        x = torch.as_tensor(images)
        if x.ndim != 4:
            raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(x.shape)}")
        scores, maps = [], []
        for batch in self._batches(x, "predict"):
            s, m = self._score_batch(self._as_batch(batch["image"]))
            scores.append(s.float())
            maps.append(m.float())
        if scores:
            scores_t, maps_t = torch.cat(scores), torch.cat(maps)
        else:
            scores_t = torch.zeros(0)
            maps_t = torch.zeros((0, *x.shape[2:]))
        if is_torch:
            return scores_t.to(images.device), maps_t.to(images.device)
        return scores_t.cpu().numpy(), maps_t.cpu().numpy()

    def predict_dataset(self, dataset: Any, keep_images: bool = False) -> dict[str, Any]:
        """Score every item of a dataset of dicts (``image`` and optionally ``mask``, ``label``,
        ``path``, ``defect_type``); returns NumPy arrays/lists under the same names plus
        ``scores [N]``, ``maps [N, H, W]`` and ``seconds`` (model time, image decoding excluded)."""
        import torch

        self._require_fitted()
        out: dict[str, list] = {"scores": [], "maps": []}
        seconds = 0.0
        for batch in self._batches(dataset, "predict"):
            t0 = time.perf_counter()
            s, m = self._score_batch(self._as_batch(batch["image"]))
            out["scores"].append(s.float().cpu().numpy())  # .cpu() waits for the device
            out["maps"].append(m.float().cpu().numpy())
            seconds += time.perf_counter() - t0
            for key in ("mask", "label", "path", "defect_type") + (("image",) if keep_images else ()):
                if key in batch:
                    val = batch[key]
                    val = val.cpu().numpy() if isinstance(val, torch.Tensor) else list(val)
                    out.setdefault(key, []).append(val)
        res: dict[str, Any] = {}
        for key, parts in out.items():
            if parts and isinstance(parts[0], np.ndarray):
                res[key] = np.concatenate(parts)
            else:
                res[key] = [v for part in parts for v in part]
        res["seconds"] = seconds
        return res

    # ------------------------------------------------------------------ save/load
    def _backbone_needs_saving(self) -> bool:
        w = self.config["weights"]
        # Adapted BatchNorm statistics exist nowhere else: saved whatever the weights are.
        return w == _bb.RANDOM_WEIGHTS or _bb.is_checkpoint_path(w) or self.config["bn_adapt"]

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``.

        Refuses a directory that already holds files unless ``overwrite``; files are written to
        temporary names and moved into place, so a failed save leaves no partial model.
        """
        from safetensors.torch import save_file

        from .. import __version__

        self._require_fitted()
        directory = Path(directory)
        prepare_output_dir(directory, overwrite, "model directory",
                           hint="pass overwrite=True (--overwrite) to replace it")
        tensors = {"memory_bank": self.memory_bank.detach().float().cpu().contiguous()}
        for i, lb in enumerate(self.layer_banks or []):
            tensors[f"layer_bank.{i}"] = lb.detach().float().cpu().contiguous()
        saved_backbone = self._backbone_needs_saving()
        if saved_backbone:
            for k, v in self.extractor.state_dict().items():
                tensors[f"backbone.{k}"] = v.detach().cpu().contiguous()
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "ofdb_fast_version": __version__,
            "config": self.config,
            "memory_bank_shape": list(tensors["memory_bank"].shape),
            "feature_grid": list(self.feature_grid) if self.feature_grid else None,
            "backbone_saved": saved_backbone,
            "fit_info": self.fit_info,
        }
        atomic_write(directory / TENSORS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        atomic_write_json(directory / CONFIG_FILE, config, sort_keys=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str = "auto", batch_size: int = 8,
             coreset_backend: str = "auto", knn_backend: str = "auto", aggregate_backend: str = "auto",
             progress: bool = False, num_workers: int = 2) -> PatchCore:
        """Load a model written by :meth:`save`, validating format, version, config and shapes."""
        import torch
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, ten_path = directory / CONFIG_FILE, directory / TENSORS_FILE
        for p in (cfg_path, ten_path):
            if not p.is_file():
                raise OSError(f"{directory} is not a saved PatchCore model: {p.name} is missing")
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{cfg_path} must have format {FORMAT_NAME!r}, got "
                             f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ValueError(f"{cfg_path} format_version must be 1..{FORMAT_VERSION} (this ofdb_fast reads up to "
                             f"{FORMAT_VERSION}; a newer file needs a newer ofdb_fast), got {version!r}")
        cfg = meta.get("config")
        if not isinstance(cfg, dict):
            raise ValueError(f"{cfg_path} must have a 'config' object, got {type(cfg).__name__}")
        cfg = {**_LATER_KEYS, **cfg}
        missing = sorted(set(DEFAULTS) - set(cfg))
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if missing or unknown:
            raise ValueError(f"{cfg_path} config must have exactly the keys {sorted(DEFAULTS)}; "
                             f"missing {missing}, unknown {unknown}")
        cfg = _check_config(cfg)
        try:
            tensors = load_file(str(ten_path), device="cpu")
        except Exception as exc:
            raise ValueError(f"{ten_path} is not a readable safetensors file: {exc}") from exc
        bank = tensors.pop("memory_bank", None)
        if bank is None:
            raise ValueError(f"{ten_path} must contain a 'memory_bank' tensor, got keys {sorted(tensors)[:5]}")
        if bank.dtype != torch.float32 or bank.ndim != 2 or bank.shape[1] != cfg["target_embed_dimension"] \
                or bank.shape[0] < 1 or list(bank.shape) != meta.get("memory_bank_shape"):
            raise ValueError(
                f"{ten_path} memory_bank must be float32 [M, {cfg['target_embed_dimension']}] matching "
                f"memory_bank_shape {meta.get('memory_bank_shape')} in {CONFIG_FILE}, got "
                f"{str(bank.dtype).replace('torch.', '')} {list(bank.shape)}")
        if not bool(torch.isfinite(bank).all()):
            raise ValueError(f"{ten_path} memory_bank must contain only finite values, got NaN or inf")
        layer_banks = _pop_layer_banks(tensors, cfg, ten_path)
        backbone_state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        needs_backbone = (cfg["weights"] == _bb.RANDOM_WEIGHTS or _bb.is_checkpoint_path(cfg["weights"])
                          or cfg["bn_adapt"])
        if (meta.get("backbone_saved") or needs_backbone) and not backbone_state:
            why = "its BatchNorm statistics were adapted" if cfg["bn_adapt"] else "cannot be loaded again by name"
            raise ValueError(f"{ten_path} must contain the backbone.* tensors (weights {cfg['weights']!r}: {why})")
        extra = sorted(k for k in tensors if not k.startswith("backbone."))
        if extra:
            raise ValueError(f"{ten_path} has unexpected tensors: {extra[:5]}")
        kwargs = {k: v for k, v in cfg.items()}
        model = cls(**kwargs, device=device, batch_size=batch_size, coreset_backend=coreset_backend,
                    knn_backend=knn_backend, aggregate_backend=aggregate_backend, progress=progress,
                    num_workers=num_workers, _backbone_state=backbone_state or None)
        model.memory_bank = bank.to(model.device).contiguous()
        model.layer_banks = [lb.to(model.device).contiguous() for lb in layer_banks] if layer_banks else None
        grid = meta.get("feature_grid")
        model.feature_grid = tuple(grid) if grid else None
        model.fit_info = dict(meta.get("fit_info") or {})
        return model


def _pop_layer_banks(tensors: dict, cfg: dict, path: Path) -> list | None:
    """Remove and validate the ``layer_bank.<i>`` tensors (one per layer iff scorer "fewshot")."""
    import torch

    keys = sorted(k for k in tensors if k.startswith("layer_bank."))
    want = [f"layer_bank.{i}" for i in range(len(cfg["layers"]))] if cfg["scorer"] == "fewshot" else []
    if set(keys) != set(want):
        raise ValueError(f"{path} must contain the tensors {want} for scorer {cfg['scorer']!r}, got {keys}")
    banks = [tensors.pop(k) for k in want]
    for k, lb in zip(want, banks):
        if lb.dtype != torch.float32 or lb.ndim != 2 or lb.shape[0] < 1 or not bool(torch.isfinite(lb).all()):
            raise ValueError(f"{path} {k} must be a finite float32 [R, C] tensor with R >= 1, got "
                             f"{str(lb.dtype).replace('torch.', '')} {list(lb.shape)}")
    return banks or None
