"""Anomaly clustering of one MVTec-format category: embed, weight, cluster, evaluate.

Protocol (the reproduction's, other-seeds.md 1a/1c):
- The images to cluster are ``test/<type>/*`` of one category; the folder name is the label.
  ``good`` is a class of its own unless ``include_good=False`` (the paper figure's
  defective-only setting, our flag).
- ``combined`` images (MVTec's mixed-defect folder) take part in the unsupervised alpha pool
  but are neither clustered nor scored, and do not count towards K.
- Supervised mode: the normal bank is ``min(int(train_ratio * N_test), N_train)`` images of
  ``train/good``, drawn with ``seed`` (:func:`ofdb_fast.cluster.alpha.select_normal_images`;
  the reproduction draws them unseeded).
- K: ``"labels"`` (default, the reproduction: the number of label folders, ``combined``
  excluded), an int, or ``"estimate"`` (our extension: best mean silhouette of the Ward cuts,
  :mod:`ofdb_fast.cluster.algorithm`).
- The patch distances of a mode are computed once for all taus.
- Ground truth, when the category has masks (:mod:`ofdb_fast.cluster.localisation`): every run
  also reports ``alpha_on_defect`` / ``defect_cell_share`` (where its weights went), and the
  extra mode ``"mask"`` weights the patches by their ground-truth defect coverage -- a
  diagnostic that reads the labels (the best case of the weighting, so its NMI measures the
  backbone's embeddings alone), not a clustering method.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .alpha import MODES, cluster_alpha, select_normal_images, weighted_embeddings
from .algorithm import DEFAULT_K_MAX, cluster_embeddings
from .localisation import alpha_localisation, defect_coverage, mask_alpha
from .metrics import clustering_metrics

COMBINED = "combined"
MASK = "mask"
PIPELINE_MODES = (*MODES, MASK)


@dataclasses.dataclass
class ClusterRun:
    """One (mode, tau) clustering of the category's images."""

    mode: str
    tau: float
    clusters: np.ndarray  # [N] int64; -1 for images left out of the clustering (combined)
    n_clusters: int
    estimated: bool
    metrics: dict[str, float]  # nmi, ari, f1
    silhouette: dict[int, float]
    localisation: dict[str, Any] | None = None  # alpha_on_defect, defect_cell_share, n_localised


@dataclasses.dataclass
class ClusterResult:
    paths: list[str]
    defect_types: list[str]
    runs: list[ClusterRun]
    info: dict[str, Any]


def _check_modes(modes: Sequence[str]) -> list[str]:
    modes = [modes] if isinstance(modes, str) else list(modes)
    bad = [m for m in modes if m not in PIPELINE_MODES]
    if not modes or bad:
        raise ValueError(f"modes must be a non-empty list of {PIPELINE_MODES}, got {modes}")
    return list(dict.fromkeys(modes))


def cluster_category(
    category_dir: str,
    *,
    modes: Sequence[str] = ("unsupervised",),
    taus: Sequence[float] = (2.0,),
    train_ratio: float = 1.0,
    n_clusters: int | str = "labels",
    k_max: int = DEFAULT_K_MAX,
    include_good: bool = True,
    layer_norm: bool = True,
    seed: int = 0,
    knn_backend: str = "auto",
    bn_adapt: bool = False,
    model: Any = None,
    progress: bool = False,
    **model_kwargs: Any,
) -> ClusterResult:
    """Cluster the test images of one MVTec-format category by defect type.

    Args:
        category_dir: ``<root>/<category>`` with ``test/<type>/`` (and ``train/good`` for the
            supervised mode).
        modes: any of ``"unsupervised"``, ``"supervised"``, ``"average"``, and ``"mask"`` (the
            ground-truth weighting, a diagnostic; needs a mask for every defective image).
        taus: softmax temperatures (>= 0); the distances are reused across them.
        train_ratio: supervised bank size relative to the test count (capped by train/good).
        n_clusters: ``"labels"``, an int, or ``"estimate"``.
        k_max: the largest K the estimator tries.
        include_good: cluster ``test/good`` as a class.
        layer_norm: the reproduction's per-image LayerNorm of the layer maps.
        seed: normal-image draw (and random backbone weights).
        knn_backend: backend of the patch distances (``cluster_alpha``'s).
        bn_adapt: first re-estimate the backbone's BatchNorm statistics on all ``train/good``
            images (AdaBN, as PatchCore's ``bn_adapt``; test images are never used). Changes
            ``model`` in place when one is passed.
        model: a :func:`ofdb_fast.cluster.embed.build_model` result; built from
            ``model_kwargs`` (``backbone``, ``layers``, ``weights``, ``device``, ...) if None.
        progress: progress bars.

    Returns:
        :class:`ClusterResult` with one :class:`ClusterRun` per (mode, tau), modes outer.

    Example:
        >>> res = cluster_category("synth/plate", weights="random", backbone="resnet18")  # doctest: +SKIP
        >>> res.runs[0].metrics["nmi"]  # doctest: +SKIP
    """
    from ..patchcore.data import GOOD, list_samples
    from .embed import adapt_to_normals, build_model, embed_paths

    modes = _check_modes(modes)
    taus = [float(t) for t in ([taus] if isinstance(taus, (int, float)) else taus)]
    if not taus or min(taus) < 0:
        raise ValueError(f"taus must be a non-empty list of numbers >= 0, got {taus}")
    samples = list_samples(category_dir, "test", require_masks=False)
    if not include_good:
        samples = [s for s in samples if s.defect_type != GOOD]
    if not samples:
        raise ValueError(f"{category_dir}/test has no images to cluster")
    paths = [s.path for s in samples]
    types = [s.defect_type for s in samples]
    scored = np.array([t != COMBINED for t in types])
    label_names = sorted(set(t for t in types if t != COMBINED))
    if not scored.any():
        raise ValueError(f"{category_dir}/test has only '{COMBINED}' images; nothing to cluster")
    if n_clusters == "labels":
        k: int | str = len(label_names)
    elif isinstance(n_clusters, str) and n_clusters != "estimate":
        raise ValueError(f"n_clusters must be 'labels', 'estimate' or an int >= 1, got {n_clusters!r}")
    else:
        k = n_clusters
    if isinstance(k, int) and not 1 <= k <= int(scored.sum()):
        raise ValueError(f"n_clusters must be between 1 and the {int(scored.sum())} images to cluster, got {k}")
    if model is None:
        model = build_model(seed=seed, **model_kwargs)
    t0 = time.perf_counter()
    train = list_samples(category_dir, "train", require_masks=False) if bn_adapt or "supervised" in modes else []
    bn_info = None
    if bn_adapt:
        if not train:
            raise ValueError(f"bn_adapt needs normal images in {category_dir}/train/good, found none")
        bn_info = adapt_to_normals(model, [s.path for s in train], progress=progress)
    z = embed_paths(model, paths, layer_norm=layer_norm, progress=progress, desc="embed test")
    if MASK in modes:
        unmasked = [s.path for s in samples if s.defect_type != GOOD and s.mask_path is None]
        if unmasked:
            raise ValueError(f"mode '{MASK}' needs a ground-truth mask for every defective image; "
                             f"{len(unmasked)} have none, e.g. {unmasked[0]}")
    coverage = None
    if any(s.mask_path is not None for s in samples):
        from ..patchcore.data import Preprocess

        c = model.config
        pre = Preprocess(resize=c["resize"], imagesize=c["imagesize"], mean=tuple(c["mean"]), std=tuple(c["std"]))
        coverage = defect_coverage([s.mask_path for s in samples], pre, int(z.shape[1]))
    localised = scored & np.array([t != GOOD for t in types])
    normals = None
    n_normal_used = 0
    if "supervised" in modes:
        idx = select_normal_images(len(train), len(paths), train_ratio, seed)
        n_normal_used = len(idx)
        normals = embed_paths(model, [train[i].path for i in idx], layer_norm=layer_norm, progress=progress,
                              desc="embed normals")
    t_embed = time.perf_counter() - t0
    runs: list[ClusterRun] = []
    t_alpha = t_cluster = 0.0
    truth = [t for t, s in zip(types, scored) if s]
    for mode in modes:
        t1 = time.perf_counter()
        if mode == MASK:
            import torch

            cov = coverage if coverage is not None else np.zeros(tuple(z.shape[:2]))  # no defects: uniform
            alphas = [torch.as_tensor(mask_alpha(cov), device=z.device)] * len(taus)
        else:
            alphas = cluster_alpha(z, mode, taus, normal_embeddings=normals if mode == "supervised" else None,
                                   backend=knn_backend)
        x_all = [weighted_embeddings(z, a).cpu().numpy() for a in alphas]
        t2 = time.perf_counter()
        t_alpha += t2 - t1
        for tau, x, a in zip(taus, x_all, alphas):
            labels, cinfo = cluster_embeddings(x[scored], k, k_max=k_max)
            clusters = np.full(len(paths), -1, np.int64)
            clusters[scored] = labels
            loc = None if coverage is None else alpha_localisation(a.cpu().numpy(), coverage, localised)
            runs.append(ClusterRun(mode, tau, clusters, cinfo["n_clusters"], cinfo["estimated"],
                                   clustering_metrics(truth, labels), cinfo["silhouette"], loc))
        t_cluster += time.perf_counter() - t2
    info = {
        "category": str(category_dir), "n_images": len(paths), "n_scored": int(scored.sum()),
        "labels": label_names, "n_normal_images": n_normal_used, "train_ratio": train_ratio,
        "include_good": include_good, "layer_norm": layer_norm, "seed": seed, "device": model.device,
        "knn_backend": knn_backend, "bn_adapt": bn_info, "n_patches": int(z.shape[1]), "dim": int(z.shape[2]),
        "model": dict(model.config), "seconds": {"embed": round(t_embed, 4), "alpha": round(t_alpha, 4),
                                                 "cluster": round(t_cluster, 4)},
    }
    return ClusterResult(paths, types, runs, info)
