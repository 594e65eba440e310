"""ViT / DINO / CLIP image encoders as PatchCore feature extractors (timm and open_clip).

Every extractor here has the ResNet extractor's interface (``backbones.py``):
``forward(images [B, 3, H, W]) -> list of [B, C_l, h, w]`` in the requested layer order, frozen,
eval mode, on the CPU until moved; the ``patch_aggregate`` / coreset / ``knn_score`` path and
the few-shot scorer follow unchanged. See shared/reference/other-seeds.md, sections 1, 3, 4, 5.

Backbone names:
- ``timm:<model>``: a timm VisionTransformer (ViT, DeiT, DINO, DINOv2 with registers, CLIP
  ViTs such as ``vit_base_patch16_clip_224``), built with ``pretrained=False``,
  ``num_classes=0`` and ``dynamic_img_size=True`` (any input size that is a multiple of the
  patch size; the position embedding is interpolated by timm).
- ``open_clip:<arch>``: the image tower of an open_clip model (``RN50``, ``RN101``,
  ``RN50x4``, ``ViT-B-16``, ...); needs ``pip install open-clip-torch``.
- Aliases of the references' names: ``dino_vitb8`` / ``dino_vitb16`` / ``dino_vits8`` /
  ``dino_vits16`` (the DINO ViTs of Anomaly-Clustering; their ``*_pretrain.pth`` files use timm's
  key names), ``vit_base`` (Anomaly-Clustering's timm ``vit_base_patch8_224``), ``clip_rn50`` /
  ``clip_rn101`` (the CLIP ResNets of the CLIP-PatchCore seed).

Layers:
- ViTs: ``"blocks.N"``, the output of transformer block N (0-based, before the final norm, as
  a forward hook on ``blocks[N]`` sees it); negative N counts from the end. The default is
  the last two blocks, ``blocks.-2, blocks.-1`` (Anomaly-Clustering's ``blocks.10``,
  ``blocks.11`` on a 12-block ViT). AnomalyGPT-style selections are e.g.
  ``blocks.7,blocks.15,blocks.23,blocks.31``.
- Token to grid: the prefix tokens (CLS and any registers, timm's ``num_prefix_tokens``) are
  dropped and the ``(h*w)`` patch tokens reshaped to ``[B, C, h, w]`` (row-major, as the
  patch embedding's convolution output).
- CLIP ResNets (open_clip ``ModifiedResNet``): ``layer1`` .. ``layer4`` of ``visual``; the
  default is ``layer2, layer3`` (the CLIP-PatchCore seed's hooks; 28x28x512 and 14x14x1024 at
  224 for RN50/RN101).
- Truncation: blocks / layers after the deepest requested one are removed, and so are the
  final norm, pooling and head, so no compute is spent on them.

Weights (``weights=``): ``"random"``/``None`` (seeded ``torch.manual_seed(seed)``, with the
same loud warning as the ResNets), or a LOCAL checkpoint (``.safetensors``/``.pt``/``.pth``/
``.bin``, read with ``backbones.read_checkpoint``: ``weights_only=True``, never arbitrary
pickles). Nothing is downloaded. timm checkpoints go through timm's ``checkpoint_filter_fn``,
which converts open_clip / OpenAI CLIP keys and resamples position embeddings; for open_clip
a full-model state_dict (``visual.*`` keys) or a visual-tower one is accepted. Only keys of the
kept modules must match; keys of removed blocks, norms and heads are ignored.

Normalisation: :func:`normalization` gives the mean/std a backbone was trained with (CLIP's
for CLIP models, ImageNet's otherwise); pass them to ``PatchCore(mean=..., std=...)``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

TIMM_PREFIX = "timm:"
OPEN_CLIP_PREFIX = "open_clip:"
ALIASES = {
    "dino_vitb8": "timm:vit_base_patch8_224",
    "dino_vitb16": "timm:vit_base_patch16_224",
    "dino_vits8": "timm:vit_small_patch8_224",
    "dino_vits16": "timm:vit_small_patch16_224",
    "vit_base": "timm:vit_base_patch8_224",
    "clip_rn50": "open_clip:RN50",
    "clip_rn101": "open_clip:RN101",
}
NAME_HELP = "timm:<vit model>, open_clip:<arch>, or one of " + ", ".join(ALIASES)
VIT_DEFAULT_LAYERS = ("blocks.-2", "blocks.-1")
CLIP_RESNET_DEFAULT_LAYERS = ("layer2", "layer3")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IGNORED_HEAD_KEYS = ("head.", "fc_norm.", "head_drop.", "attn_pool.")
_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_BLOCK_RE = re.compile(r"blocks\.(-?\d+)")


def is_vit_backbone(name: Any) -> bool:
    """True for names this module handles (prefixed names and :data:`ALIASES`)."""
    return isinstance(name, str) and (name in ALIASES or name.startswith((TIMM_PREFIX, OPEN_CLIP_PREFIX)))


def resolve_name(name: str) -> tuple[str, str]:
    """``"dino_vitb8"`` -> ``("timm", "vit_base_patch8_224")``; ``"open_clip:RN50"`` -> ``("open_clip", "RN50")``."""
    full = ALIASES.get(name, name)
    for prefix in (TIMM_PREFIX, OPEN_CLIP_PREFIX):
        if full.startswith(prefix) and len(full) > len(prefix):
            return prefix[:-1], full[len(prefix):]
    raise ValueError(f"backbone must be {NAME_HELP}, got {name!r}")


def check_backbone(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a str, got {type(name).__name__}")
    resolve_name(name)
    return name


def _is_clip_resnet(name: str) -> bool:
    library, model = resolve_name(name)
    return library == "open_clip" and model.upper().startswith("RN")


def default_layers(name: str) -> tuple[str, ...]:
    """The references' layer selection for this backbone (see the module docstring)."""
    return CLIP_RESNET_DEFAULT_LAYERS if _is_clip_resnet(name) else VIT_DEFAULT_LAYERS


def check_layers(name: str, layers: Any) -> tuple[str, ...]:
    """Validate layer names for ``name`` (block indices are range-checked at build time)."""
    from .backbones import require_distinct_layers, split_layers

    layers = split_layers(layers)
    if not layers:
        raise ValueError(f"layers must name at least one layer of {name}, got ()")
    if _is_clip_resnet(name):
        bad = [s for s in layers if s not in _RESNET_LAYERS]
        want = f"names from {_RESNET_LAYERS}"
    else:
        bad = [s for s in layers if not _BLOCK_RE.fullmatch(s)]
        want = "'blocks.N' (block N's output, 0-based; negative N counts from the end)"
    if bad:
        raise ValueError(f"layers of {name} must be {want}, got {bad}")
    return require_distinct_layers(layers)


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the backbone expects: CLIP statistics for CLIP models, else ImageNet."""
    library, model = resolve_name(name)
    if library == "open_clip" or "clip" in model.lower():
        return CLIP_MEAN, CLIP_STD
    return IMAGENET_MEAN, IMAGENET_STD


def per_image_layer_norm(features: Any) -> Any:
    """Anomaly-Clustering's per-image standardisation: ``LayerNorm([C, H, W])`` with weight 1,
    bias 0, eps 1e-5 applied to ``features [B, C, H, W]`` (each image over all its values)."""
    import torch.nn.functional as F

    return F.layer_norm(features, tuple(features.shape[1:]), eps=1e-5)


def _block_indices(layers: Sequence[str], depth: int, name: str) -> list[int]:
    out = []
    for s in layers:
        i = int(_BLOCK_RE.fullmatch(s).group(1))
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"layers of {name} must index blocks 0..{depth - 1} (or -{depth}..-1), got {s!r}")
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f"layers must not repeat a block, got {list(layers)} (= blocks {out})")
    return out


def _warn_random(name: str) -> None:
    msg = (f"PatchCore backbone {name} uses RANDOM weights (weights='random'): anomaly scores from "
           f"untrained features are only meaningful for tests; pass a local checkpoint path")
    warnings.warn(msg, UserWarning, stacklevel=3)
    print(f"WARNING: {msg}", file=sys.stderr)


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise RuntimeError("open_clip backbones need the open_clip package, which is not installed: "
                           "pip install open-clip-torch (or use a timm:<model> backbone)") from exc
    return open_clip


def _extractor_classes():
    import torch

    class TimmViTExtractor(torch.nn.Module):
        """A timm VisionTransformer cut after its deepest requested block.

        ``forward(images [B, 3, H, W]) -> [B, C, H/p, W/p]`` per layer, in ``layers`` order.
        """

        def __init__(self, net: Any, blocks: list[int], layer_norm: bool = False):
            super().__init__()
            self.net = net
            self.blocks = blocks
            self.layer_norm = layer_norm
            self._sorted = sorted(blocks)

        def forward(self, images):
            feats = self.net.forward_intermediates(images, indices=self._sorted, norm=False,
                                                   output_fmt="NCHW", intermediates_only=True)
            by_block = dict(zip(self._sorted, feats))
            out = [by_block[i].contiguous() for i in self.blocks]
            return [per_image_layer_norm(f) for f in out] if self.layer_norm else out

    class OpenClipResNetExtractor(torch.nn.Module):
        """The stem and ``layer1`` .. the deepest requested layer of open_clip's ModifiedResNet."""

        def __init__(self, visual: Any, layers: tuple[str, ...], layer_norm: bool = False):
            super().__init__()
            self.layers = layers
            self.layer_norm = layer_norm
            last = max(_RESNET_LAYERS.index(s) for s in layers)
            stem = [n for n in ("conv1", "bn1", "act1", "relu1", "conv2", "bn2", "act2", "relu2", "conv3", "bn3",
                                "act3", "relu3", "avgpool") if isinstance(getattr(visual, n, None), torch.nn.Module)]
            self.kept = tuple(stem) + _RESNET_LAYERS[: last + 1]
            for n in self.kept:
                self.add_module(n, getattr(visual, n))

        def forward(self, images):
            x = images.to(self.conv1.weight.dtype)
            out = {}
            for n in self.kept:
                x = getattr(self, n)(x)
                if n in self.layers:
                    out[n] = x
            feats = [out[s] for s in self.layers]
            return [per_image_layer_norm(f) for f in feats] if self.layer_norm else feats

    class OpenClipViTExtractor(torch.nn.Module):
        """open_clip's VisionTransformer: patch conv, CLS + position embedding (interpolated to
        the input grid), ``ln_pre``, then ``transformer.resblocks[: deepest + 1]``."""

        def __init__(self, visual: Any, blocks: list[int], layer_norm: bool = False):
            super().__init__()
            self.blocks = blocks
            self.layer_norm = layer_norm
            self.conv1 = visual.conv1
            self.class_embedding = visual.class_embedding
            self.positional_embedding = visual.positional_embedding
            self.ln_pre = visual.ln_pre
            self.resblocks = torch.nn.ModuleList(list(visual.transformer.resblocks)[: max(blocks) + 1])
            self.batch_first = bool(getattr(visual.transformer, "batch_first", False))

        def _pos(self, h: int, w: int):
            import torch.nn.functional as F

            pos = self.positional_embedding
            n = pos.shape[0] - 1
            side = int(round(n ** 0.5))
            if (h, w) == (side, side):
                return pos
            grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, -1)])

        def forward(self, images):
            x = self.conv1(images.to(self.conv1.weight.dtype))  # [B, C, h, w]
            b, c, h, w = x.shape
            x = x.reshape(b, c, h * w).transpose(1, 2)
            cls = self.class_embedding.to(x.dtype).expand(b, 1, c)
            x = torch.cat([cls, x], dim=1) + self._pos(h, w).to(x.dtype)
            x = self.ln_pre(x)
            want = set(self.blocks)
            out = {}
            for i, blk in enumerate(self.resblocks):
                x = blk(x) if self.batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
                if i in want:
                    out[i] = x[:, 1:].transpose(1, 2).reshape(b, c, h, w).contiguous()
            feats = [out[i] for i in self.blocks]
            return [per_image_layer_norm(f) for f in feats] if self.layer_norm else feats

    return TimmViTExtractor, OpenClipResNetExtractor, OpenClipViTExtractor


def _strip(state: dict, prefix: str) -> dict:
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _load_checked(extractor: Any, state: dict, full_keys: set[str], source: str, name: str) -> None:
    from .backbones import load_into

    load_into(extractor, state, full_keys, source, name)


def _build_timm(name: str, model_name: str, layers: tuple[str, ...], weights: Any, seed: int,
                state_dict: dict | None, layer_norm: bool) -> Any:
    import timm
    import torch

    from .backbones import RANDOM_WEIGHTS, read_checkpoint

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = timm.create_model(model_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"backbone {name!r}: timm cannot build {model_name!r}: {exc}") from exc
    except TypeError as exc:  # not a VisionTransformer-like model (no dynamic_img_size)
        raise ValueError(f"backbone {name!r}: {model_name!r} is not a timm VisionTransformer ({exc})") from exc
    if not hasattr(net, "forward_intermediates") or not hasattr(net, "blocks"):
        raise ValueError(f"backbone {name!r}: {model_name!r} is not a timm VisionTransformer (no blocks)")
    blocks = _block_indices(layers, len(net.blocks), name)
    full_keys = {f"net.{k}" for k in net.state_dict()}
    checkpoint = None
    if state_dict is None and weights is not None and weights != RANDOM_WEIGHTS:
        from timm.models.vision_transformer import checkpoint_filter_fn

        path = os.fspath(weights)
        raw = read_checkpoint(path)
        raw = {k: v for k, v in raw.items() if not k.startswith(_IGNORED_HEAD_KEYS)}
        try:
            checkpoint = checkpoint_filter_fn(raw, net)  # CLIP key conversion, pos-embed resampling
        except Exception as exc:  # timm raises assorted errors on foreign layouts
            raise ValueError(f"weights checkpoint {path} could not be converted for {model_name}: {exc}") from exc
        # Classifier / projection heads (CLIP's proj becomes head.weight) are never used.
        checkpoint = {f"net.{k}": v for k, v in checkpoint.items() if not k.startswith(_IGNORED_HEAD_KEYS)}
    net.prune_intermediate_layers(blocks, prune_norm=True, prune_head=True)
    extractor = _extractor_classes()[0](net, blocks, layer_norm)
    if state_dict is not None:
        _load_checked(extractor, dict(state_dict), full_keys, "in the saved model", name)
    elif checkpoint is not None:
        # Keys of blocks past the deepest requested one belong to the architecture but not to
        # the cut model: ignored, like layer4/fc for the ResNets.
        _load_checked(extractor, checkpoint, full_keys, f"checkpoint {os.fspath(weights)}", name)
    else:
        _warn_random(name)
    return extractor


def _build_open_clip(name: str, arch: str, layers: tuple[str, ...], weights: Any, seed: int,
                     state_dict: dict | None, layer_norm: bool) -> Any:
    import torch

    from .backbones import RANDOM_WEIGHTS, read_checkpoint

    open_clip = _import_open_clip()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = open_clip.create_model(arch, pretrained=None)
    except RuntimeError as exc:
        raise ValueError(f"backbone {name!r}: open_clip cannot build {arch!r}: {exc}") from exc
    visual = model.visual.float()
    del model
    full_keys = set(visual.state_dict())
    resnet_cls, vit_cls = _extractor_classes()[1:]
    if _is_clip_resnet(name):
        extractor = resnet_cls(visual, layers, layer_norm)
    else:
        if not hasattr(visual, "transformer"):
            raise ValueError(f"backbone {name!r}: open_clip {arch} has neither layer1..4 nor transformer blocks")
        blocks = _block_indices(layers, len(visual.transformer.resblocks), name)
        extractor = vit_cls(visual, blocks, layer_norm)
        full_keys = {k.replace("transformer.resblocks.", "resblocks.") for k in full_keys}
    if state_dict is not None:
        _load_checked(extractor, dict(state_dict), full_keys, "in the saved model", name)
    elif weights is not None and weights != RANDOM_WEIGHTS:
        path = os.fspath(weights)
        state = _strip(read_checkpoint(path), "visual.")
        if not _is_clip_resnet(name):
            state = {k.replace("transformer.resblocks.", "resblocks."): v for k, v in state.items()}
        _load_checked(extractor, state, full_keys, f"checkpoint {path}", name)
    else:
        _warn_random(name)
    return extractor


def build_extractor(
    backbone: str,
    layers: Sequence[str] | None = None,
    weights: Any = "random",
    *,
    seed: int = 0,
    state_dict: dict | None = None,
    layer_norm: bool = False,
) -> Any:
    """Build a frozen, truncated ViT/DINO/CLIP feature extractor (``torch.nn.Module``, CPU, eval).

    Args:
        backbone: ``timm:<model>``, ``open_clip:<arch>`` or an alias (see the module docstring).
        layers: ``"blocks.N"`` names (ViTs) or ``layer1..4`` (CLIP ResNets); ``None`` = default.
        weights: ``"random"``/``None`` or a local checkpoint path (nothing is downloaded).
        seed: ``torch.manual_seed`` of the random initialisation.
        state_dict: tensors of this extractor (``PatchCore.load``), instead of ``weights``.
        layer_norm: apply :func:`per_image_layer_norm` to every output (Anomaly-Clustering).

    Returns:
        module with ``forward(images [B, 3, H, W]) -> list of [B, C, h, w]``.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the loud random-weights warning
        ...     net = build_extractor("timm:vit_tiny_patch16_224", ["blocks.10", "blocks.11"], "random")
        >>> [tuple(f.shape) for f in net(torch.zeros(1, 3, 64, 96))]
        [(1, 192, 4, 6), (1, 192, 4, 6)]
    """
    from .backbones import is_checkpoint_path

    check_backbone(backbone)
    layers = check_layers(backbone, default_layers(backbone) if layers is None else layers)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a str, a path or None, got {type(weights).__name__}")
    if state_dict is None and weights not in (None, "random") and not is_checkpoint_path(weights):
        raise ValueError(f"weights of {backbone} must be 'random' or a LOCAL checkpoint path "
                         f"(.safetensors/.pt/.pth/.bin; nothing is downloaded), got {weights!r}")
    library, model = resolve_name(backbone)
    build = _build_timm if library == "timm" else _build_open_clip
    extractor = build(backbone, model, layers, weights, seed, state_dict, layer_norm)
    extractor.eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor
