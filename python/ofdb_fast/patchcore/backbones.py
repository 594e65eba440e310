"""Feature backbones for PatchCore: torchvision ResNets truncated after the last layer used.

Conventions:
- Backbones: ``wide_resnet50_2`` (the reference's default), ``resnet18``, ``resnet50``,
  ``resnet101``. Layers are named as in torchvision (``layer1`` .. ``layer4``); the default is
  ``("layer2", "layer3")``. The order given is kept: the first layer's grid is the patch grid.
- Truncation: the extractor holds the stem and ``layer1`` .. the deepest requested layer only;
  deeper layers, ``avgpool`` and ``fc`` are never built into the forward pass, so no compute is
  spent on them. The extractor is in eval mode (BatchNorm uses running statistics) and
  frozen (``requires_grad=False``).
- Weights (``weights=``):
  * a torchvision weights name of the architecture (``"IMAGENET1K_V1"``, ``"DEFAULT"``, ...):
    loaded from the torch hub cache, downloaded when the machine allows. Without network
    access the error names the URL and how to pass the file instead;
  * a local checkpoint path: ``.safetensors`` (``safetensors.torch.load_file``) or a
    ``.pt``/``.pth``/``.ckpt``/``.bin`` file read with ``torch.load(weights_only=True)`` (never
    unpickling arbitrary objects). A plain state_dict or ``{"state_dict": ...}`` /
    ``{"model": ...}`` is accepted; a ``module.`` prefix (DataParallel/DDP) is stripped.
    Only the parameters of the truncated extractor must match: keys of the dropped modules
    (``layer4``, ``fc``, e.g. a classifier head with another class count) are ignored;
    missing or unexpected keys and shape mismatches are a ``ValueError`` listing a few;
  * ``"random"`` (or ``None``): PyTorch's default initialisation under ``torch.manual_seed``
    of the given seed, with a loud warning (``warnings.warn`` and a line on stderr): anomaly
    detection with random features is only meaningful for tests and ablations.
- BatchNorm adaptation (:func:`adapt_batchnorm`, PatchCore's ``bn_adapt``): AdaBN (Li et al.,
  "Revisiting Batch Normalization For Practical Domain Adaptation", 2016) with PreciseBN's
  aggregation (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): the running mean/var of
  every BatchNorm are replaced by the statistics of its inputs over the given images, while the
  learned affine parameters and all convolutions stay as they are.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BACKBONES = ("wide_resnet50_2", "resnet18", "resnet50", "resnet101")
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_LAYERS = ("layer2", "layer3")
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WEIGHTS = "random"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_STEM = ("conv1", "bn1", "relu", "maxpool")
# Images per forward pass of adapt_batchnorm: fixed, so the statistics do not depend on the
# caller's batch size (only on the images and their order).
BN_ADAPT_CHUNK = 64

# Output channels and stride of each layer (the same for every supported backbone family).
_CHANNELS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "resnet101": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "wide_resnet50_2": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}
LAYER_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def _vit(name: Any):
    """``vit_backbones`` when ``name`` is a ViT/DINO/CLIP backbone name, else None (the hook
    that routes those names; everything else in this module is ResNet-only)."""
    from . import vit_backbones

    return vit_backbones if vit_backbones.is_vit_backbone(name) else None


def check_backbone(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a str, got {type(name).__name__}")
    if _vit(name):
        return _vit(name).check_backbone(name)
    if name not in BACKBONES:
        from .vit_backbones import NAME_HELP

        raise ValueError(f"backbone must be one of {BACKBONES} or {NAME_HELP}, got {name!r}")
    return name


def default_layers(backbone: str) -> tuple[str, ...]:
    """The default layers of ``backbone``: ``layer2, layer3`` for ResNets, see ``vit_backbones``."""
    return _vit(backbone).default_layers(backbone) if _vit(backbone) else DEFAULT_LAYERS


def split_layers(layers: Any) -> tuple[str, ...]:
    """``"layer2,layer3"``, ``"layer2 layer3"`` or a sequence of str -> a tuple of names.

    Shared by every backbone family; the names themselves are checked by the caller.
    """
    if isinstance(layers, str):
        layers = [s for s in layers.replace(",", " ").split() if s]
    if not isinstance(layers, Sequence) or not all(isinstance(s, str) for s in layers):
        raise TypeError(f"layers must be a sequence of layer names, got {layers!r}")
    return tuple(layers)


def require_distinct_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a layer, got {layers}")
    return layers


def check_layers(layers: Any, backbone: str | None = None) -> tuple[str, ...]:
    if backbone is not None and _vit(backbone):
        return _vit(backbone).check_layers(backbone, layers)
    layers = split_layers(layers)
    if not layers:
        raise ValueError(f"layers must name at least one of {LAYER_NAMES}, got ()")
    bad = [s for s in layers if s not in LAYER_NAMES]
    if bad:
        raise ValueError(f"layers must be names from {LAYER_NAMES}, got {bad}")
    return require_distinct_layers(layers)


def layer_channels(backbone: str, layers: Sequence[str]) -> list[int]:
    """Channels of each requested layer's output, e.g. ``[512, 1024]`` for WRN50 layer2+3."""
    table = _CHANNELS[check_backbone(backbone)]
    return [table[s] for s in check_layers(layers)]


def is_checkpoint_path(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return weights.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in weights or Path(weights).exists()


def _import_torch():
    import torch
    import torchvision  # noqa: F401

    return torch


def _extractor_class():
    torch = _import_torch()

    class _FeatureExtractor(torch.nn.Module):
        """The stem and ``layer1`` .. the deepest requested layer of a torchvision ResNet.

        ``forward(images [B, 3, H, W]) -> list of [B, C_l, H/s_l, W/s_l]`` in ``layers`` order.
        """

        def __init__(self, net: Any, layers: tuple[str, ...]):
            super().__init__()
            self.layers = layers
            last = max(LAYER_NAMES.index(s) for s in layers)
            self.kept = _STEM + LAYER_NAMES[: last + 1]
            for name in self.kept:
                self.add_module(name, getattr(net, name))

        def forward(self, images):
            out = {}
            x = images
            for name in self.kept:
                x = getattr(self, name)(x)
                if name in self.layers:
                    out[name] = x
            return [out[s] for s in self.layers]

    return _FeatureExtractor


def _strip_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _unwrap(obj: Any, path: str) -> dict:
    torch = _import_torch()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"weights checkpoint {path} must hold a state_dict (name -> tensor), or "
            f"{{'state_dict': ...}} / {{'model': ...}} wrapping one; got {type(obj).__name__}"
            + (f" with keys {sorted(obj)[:5]}" if isinstance(obj, dict) else "")
        )
    return _strip_prefix(dict(obj))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a local checkpoint into a state_dict (see the module docstring for the formats)."""
    torch = _import_torch()
    path = str(path)
    if not os.path.isfile(path):
        raise OSError(f"weights checkpoint {path} does not exist (or is not a file)")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"weights checkpoint {path} is not a readable safetensors file: {exc}") from exc
        return _unwrap(state, path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncated files
        raise ValueError(
            f"weights checkpoint {path} could not be read with torch.load(weights_only=True) "
            f"(only tensors and plain containers are accepted, never arbitrary pickles): {exc}"
        ) from exc
    return _unwrap(obj, path)


def _few(keys: Sequence[str], n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_into(extractor: Any, state: dict, full_keys: set[str], source: str, backbone: str) -> None:
    """Load ``state`` into the truncated ``extractor``, ignoring keys of dropped modules.

    ``full_keys`` are the keys of the whole architecture: a checkpoint key outside it is
    unexpected (another architecture), one inside it but outside the extractor is ignored.
    """
    own = extractor.state_dict()
    unexpected = [k for k in state if k not in full_keys]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if unexpected or missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (checkpoint vs {backbone}): {_few(mismatched, 3)}")
        raise ValueError(
            f"weights {source} do not match backbone {backbone!r}: " + "; ".join(parts)
            + ". Pick the backbone the checkpoint was trained with (--backbone)."
        )
    kept = {k: v for k, v in state.items() if k in own}
    extractor.load_state_dict(kept, strict=False)


def _torchvision_state(backbone: str, name: str) -> dict:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(backbone)
        weights = enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ["DEFAULT"] + [w.name for w in torchvision.models.get_model_weights(backbone)]
        raise ValueError(
            f"weights must be a torchvision weights name of {backbone} ({names}), a checkpoint path "
            f"({'/'.join(CHECKPOINT_SUFFIXES)}) or 'random', got {name!r}"
        ) from None
    try:
        return weights.get_state_dict(progress=True, check_hash=False)
    except Exception as exc:  # URLError, socket errors, proxies: no network here
        import torch

        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"could not load torchvision weights {type(weights).__name__}.{weights.name} for {backbone}: "
            f"they are not in the torch hub cache ({cache}) and downloading {weights.url} failed "
            f"({type(exc).__name__}: {exc}). This machine probably has no internet access: download "
            f"that file elsewhere and either put it in {cache} or pass its path as the weights "
            f"(--weights /path/to/{os.path.basename(weights.url)})."
        ) from exc


def describe_weights(weights: Any) -> str:
    if weights is None or weights == RANDOM_WEIGHTS:
        return RANDOM_WEIGHTS
    return os.fspath(weights) if is_checkpoint_path(weights) else str(weights)


def build_extractor(
    backbone: str = "wide_resnet50_2",
    layers: Sequence[str] = DEFAULT_LAYERS,
    weights: Any = DEFAULT_WEIGHTS,
    *,
    seed: int = 0,
    state_dict: dict | None = None,
) -> Any:
    """Build a frozen, truncated ResNet feature extractor (``torch.nn.Module``, CPU, eval).

    Args:
        backbone: one of :data:`BACKBONES`; ViT/DINO/CLIP names (``timm:...``,
            ``open_clip:...``, aliases) are built by ``vit_backbones.build_extractor``.
        layers: layer names to return, in this order (the first sets the patch grid).
        weights: a torchvision weights name, a checkpoint path, or ``"random"``/``None``.
        seed: the ``torch.manual_seed`` used for random initialisation.
        state_dict: when given, load these tensors instead of ``weights`` (used by
            ``PatchCore.load``); must match the truncated extractor exactly.

    Returns:
        module with ``forward(images [B, 3, H, W]) -> list of [B, C_l, H_l, W_l]``.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the loud random-weights warning
        ...     net = build_extractor("resnet18", ["layer2", "layer3"], "random")
        >>> [tuple(f.shape) for f in net(torch.zeros(1, 3, 64, 64))]
        [(1, 128, 8, 8), (1, 256, 4, 4)]
    """
    if _vit(backbone):
        return _vit(backbone).build_extractor(backbone, layers, weights, seed=seed, state_dict=state_dict)
    torch = _import_torch()
    import torchvision

    backbone = check_backbone(backbone)
    layers = check_layers(layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = getattr(torchvision.models, backbone)(weights=None)
    full_keys = set(net.state_dict())
    extractor = _extractor_class()(net, layers)
    del net
    if state_dict is not None:
        load_into(extractor, _strip_prefix(dict(state_dict)), full_keys, "in the saved model", backbone)
    elif weights is None or weights == RANDOM_WEIGHTS:
        msg = (f"PatchCore backbone {backbone} uses RANDOM weights (weights='random'): anomaly "
               f"scores from untrained features are only meaningful for tests; pass a torchvision "
               f"weights name such as {DEFAULT_WEIGHTS!r} or a checkpoint path")
        warnings.warn(msg, UserWarning, stacklevel=2)
        print(f"WARNING: {msg}", file=sys.stderr)
    elif is_checkpoint_path(weights):
        path = os.fspath(weights)
        load_into(extractor, read_checkpoint(path), full_keys, f"checkpoint {path}", backbone)
    elif isinstance(weights, str):
        load_into(extractor, _torchvision_state(backbone, weights), full_keys,
                  f"torchvision {weights}", backbone)
    else:
        raise TypeError(f"weights must be a str, a path or None, got {type(weights).__name__}")
    extractor.eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor


def adapt_batchnorm(extractor: Any, batches: Any, chunk: int = BN_ADAPT_CHUNK) -> dict[str, int]:
    """Replace the running statistics of every BatchNorm in ``extractor`` by those of ``batches``.

    The images are regrouped into forward passes of ``chunk`` images (the last one smaller) in
    train mode, so each BatchNorm normalises with the statistics of the current chunk, as in
    training; a pre-hook sums every BatchNorm's input per channel (float64) over all chunks.
    The running mean becomes the mean over all images and positions, the running variance
    the unbiased variance (PyTorch's convention for running stats). With at most ``chunk``
    images this is exactly the population statistics of each layer's input given the adapted
    layers before it. Deterministic for the same images in the same order; affine weights,
    convolutions and ``requires_grad`` are untouched; the extractor is left in eval mode.

    Args:
        extractor: a ``torch.nn.Module`` holding ``BatchNorm1d/2d/3d`` layers.
        batches: iterable of float tensors ``[B, 3, H, W]`` on the extractor's device.
        chunk: images per forward pass.

    Returns:
        ``{"n_images": N, "n_layers": number of BatchNorm layers, "n_chunks": forward passes}``.

    Example:
        >>> adapt_batchnorm(net, [torch.randn(8, 3, 64, 64)])  # doctest: +SKIP
        {'n_images': 8, 'n_layers': 20, 'n_chunks': 1}
    """
    torch = _import_torch()
    bns = [m for m in extractor.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError(f"bn_adapt needs a backbone with BatchNorm layers, got {type(extractor).__name__} "
                         f"without any (ViT backbones use LayerNorm)")
    sums: dict[Any, list] = {}

    def hook(module, inputs):
        x = inputs[0].detach().to(torch.float64)
        dims = [d for d in range(x.ndim) if d != 1]
        s = sums.setdefault(module, [0.0, 0.0, 0])
        s[0] = s[0] + x.sum(dims)
        s[1] = s[1] + (x * x).sum(dims)
        s[2] += x.numel() // x.shape[1]

    handles = [m.register_forward_pre_hook(hook) for m in bns]
    momenta = [m.momentum for m in bns]
    n_images = n_chunks = 0
    try:
        for m in bns:
            m.momentum = 0.0  # running buffers untouched during the pass; set below
        extractor.train()
        with torch.no_grad():
            for x in _rechunk(torch, batches, chunk):
                extractor(x)
                n_images += int(x.shape[0])
                n_chunks += 1
    finally:
        for h in handles:
            h.remove()
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        extractor.eval()
    if not n_images:
        raise ValueError("bn_adapt needs at least one image, got none")
    for m in bns:
        s1, s2, n = sums[m]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0.0) * (n / max(n - 1, 1))
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(n_chunks)
    return {"n_images": n_images, "n_layers": len(bns), "n_chunks": n_chunks}


def _rechunk(torch: Any, batches: Any, chunk: int):
    """Regroup an iterable of ``[B, ...]`` tensors into tensors of exactly ``chunk`` rows (the
    last one may be smaller), so the grouping does not depend on the incoming batch sizes."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    buf: list = []
    held = 0
    for b in batches:
        buf.append(b)
        held += int(b.shape[0])
        while held >= chunk:
            x = torch.cat(buf)
            yield x[:chunk]
            rest = x[chunk:]
            buf, held = ([rest] if rest.shape[0] else []), int(rest.shape[0])
    if held:
        yield torch.cat(buf)
