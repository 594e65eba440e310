"""Batched training augmentation for OFDB pretraining (GPU or CPU), recipe b.1 of OFDB-4AD.

Per sample, in the reference order:
RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3, bilinear) -> horizontal flip (p 0.5)
-> AutoAugment (ImageNet policy) -> ToTensor + Normalize (ImageNet mean/std)
-> RandomErasing (p 0.5, scale 0.02-0.33, ratio 0.3-3.3, value 0).
Per batch: CutMix or MixUp (:func:`mix_batch`).

Conventions:

* Images enter as ``uint8`` ``[B, 3, H, W]`` (or ``[B, H, W, 3]``, detected by the last
  dimension) and leave as ``float32`` ``[B, 3, size, size]``, normalised.
* Randomness: every random number is drawn on the CPU from a seeded ``torch.Generator``
  (float64 uniforms), then moved to the device. The parameters, hence the outputs up to the
  float arithmetic of the device, do not depend on the device, and a generator state
  reproduces a batch. The per-sample sampling rules are torchvision's (RandomResizedCrop:
  10 attempts, then the centre-crop fallback; RandomErasing: 10 attempts, then no-op), with
  Python ``round`` (half to even, like ``torch.round``) and ``int`` truncation as there.
* RandomResizedCrop resamples each crop with PIL's bilinear filter (the reference resizes
  PIL images: crop, then ``resize(BILINEAR)``, a triangle filter widened by the downscale
  factor, clamped to the crop), as two batched matmuls with per-sample weight matrices.
  PIL rounds to uint8 between its horizontal and vertical passes and uses fixed-point
  weights; here both passes run in float32 and only the result is rounded to ``uint8`` (like
  the PIL image the reference hands to AutoAugment), so pixels may differ by one level.
* AutoAugment uses the tensor ops of ``torchvision.transforms.v2.functional`` (nearest
  interpolation, fill 0, as torchvision's ``AutoAugment`` on tensors). The reference applies
  the PIL versions of the same ops (PIL and tensor kernels differ slightly: rotation
  sampling, equalize rounding). Samples are grouped per op slot by (op, signed magnitude), so
  one call serves every sample of a group; slot 0 runs before slot 1 for every sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's AutoAugmentPolicy.IMAGENET (a test checks equality with torchvision's table).
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

_N_ATTEMPTS = 10


@dataclass(frozen=True)
class AugmentConfig:
    """Hyper-parameters of the per-sample pipeline (defaults: recipe b.1)."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    auto_augment: bool = True
    erase_p: float = 0.5
    erase_scale: tuple[float, float] = (0.02, 0.33)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _uniform(gen, *shape):
    import torch

    return torch.rand(*shape, generator=gen, dtype=torch.float64)


# ----------------------------------------------------------------------------- crop boxes
def rrc_boxes_from_uniforms(u_area, u_logr, u_i, u_j, height, width, scale, ratio):
    """torchvision's RandomResizedCrop box rule, vectorised over samples.

    Args:
        u_area, u_logr: ``[B, 10]`` float64 uniforms in [0, 1) for the 10 attempts.
        u_i, u_j: ``[B]`` uniforms for the top-left corner of the accepted box.
        height, width: source image size.
        scale, ratio: the RandomResizedCrop ranges.

    Returns:
        ``[B, 4]`` int64 ``(i, j, h, w)``: the first attempt with ``0 < w <= W`` and
        ``0 < h <= H`` (corner uniform over the valid range), else the centre crop whose
        aspect ratio is clamped to ``ratio``.
    """
    import torch

    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u_logr)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # first True (0 when none; masked below)
    any_ok = ok.any(dim=1)
    rows = torch.arange(w.shape[0])
    w_sel, h_sel = w[rows, first], h[rows, first]
    i = torch.floor(u_i * (height - h_sel + 1).double()).long()
    j = torch.floor(u_j * (width - w_sel + 1).double()).long()

    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fi, fj = (height - fh) // 2, (width - fw) // 2
    fallback = torch.tensor([fi, fj, fh, fw], dtype=torch.long)
    boxes = torch.stack([i, j, h_sel, w_sel], dim=1)
    return torch.where(any_ok[:, None], boxes, fallback[None, :])


def sample_rrc_boxes(gen, n, height, width, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """``[n, 4]`` int64 ``(i, j, h, w)`` crop boxes drawn from ``gen`` (see the rule above)."""
    u_area, u_logr = _uniform(gen, n, _N_ATTEMPTS), _uniform(gen, n, _N_ATTEMPTS)
    u_i, u_j = _uniform(gen, n), _uniform(gen, n)
    return rrc_boxes_from_uniforms(u_area, u_logr, u_i, u_j, height, width, scale, ratio)


def resample_weights(starts, lengths, in_size: int, out_size: int, device):
    """Per-sample 1-D resampling matrices ``[B, out_size, in_size]`` (float32) that crop
    ``[start, start + length)`` and resize it to ``out_size`` with PIL's bilinear filter:
    output pixel ``o`` is centred at ``(o + 0.5) * scale`` (crop coordinates,
    ``scale = length / out_size``), weights ``max(0, 1 - |x + 0.5 - centre| / max(scale, 1))``
    over the crop's pixels ``x`` (a triangle widened by the downscale factor: antialiasing),
    normalised to sum 1; pixels outside the crop get no weight."""
    import torch

    starts = starts.to(device=device, dtype=torch.float64)
    lengths = lengths.to(device=device, dtype=torch.float64)
    scale = lengths / out_size
    support = torch.clamp(scale, min=1.0)
    centre = (torch.arange(out_size, device=device, dtype=torch.float64)[None, :] + 0.5) * scale[:, None]
    rel = torch.arange(in_size, device=device, dtype=torch.float64)[None, None, :] - starts[:, None, None]
    w = torch.clamp(1.0 - torch.abs((rel + 0.5 - centre[:, :, None]) / support[:, None, None]), min=0.0)
    w = w * ((rel >= 0) & (rel < lengths[:, None, None]))
    return (w / w.sum(dim=-1, keepdim=True)).to(torch.float32)


def resized_crop(images, boxes, size):
    """Crop ``boxes`` (``[B, 4]`` ``(i, j, h, w)``) out of ``images`` (``[B, C, H, W]``) and
    resize each crop to ``size x size`` (PIL-style antialiased bilinear, separable: two
    batched matmuls with :func:`resample_weights`); returns float32 in the input's range."""
    import torch

    x = images.float()
    b = boxes.to(x.device)
    wy = resample_weights(b[:, 0], b[:, 2], x.shape[-2], size, x.device)  # [B, size, H]
    wx = resample_weights(b[:, 1], b[:, 3], x.shape[-1], size, x.device)  # [B, size, W]
    tmp = torch.matmul(x, wx.transpose(1, 2)[:, None])  # [B, C, H, size]
    return torch.matmul(wy[:, None], tmp)  # [B, C, size, size]


# ----------------------------------------------------------------------------- AutoAugment
def _magnitude_table(height: int, width: int) -> dict:
    """Magnitude bins and signedness as torchvision's ``_augmentation_space(10, (H, W))``
    (computed with float32 ``linspace`` like there, so the values match bit for bit)."""
    import torch

    lin = lambda a, b: [float(v) for v in torch.linspace(a, b, 10).tolist()]  # noqa: E731
    post = (8 - (torch.arange(10) / ((10 - 1) / 4)).round().int()).tolist()
    return {
        "ShearX": (lin(0.0, 0.3), True),
        "ShearY": (lin(0.0, 0.3), True),
        "TranslateX": (lin(0.0, 150.0 / 331.0 * width), True),
        "TranslateY": (lin(0.0, 150.0 / 331.0 * height), True),
        "Rotate": (lin(0.0, 30.0), True),
        "Brightness": (lin(0.0, 0.9), True),
        "Color": (lin(0.0, 0.9), True),
        "Contrast": (lin(0.0, 0.9), True),
        "Sharpness": (lin(0.0, 0.9), True),
        "Posterize": ([float(v) for v in post], False),
        "Solarize": (lin(255.0, 0.0), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
        "Invert": (None, False),
    }


def apply_aa_op(images, op_name: str, magnitude: float):
    """One AutoAugment op with one magnitude on a uint8 batch ``[B, C, H, W]`` (torchvision's
    ``_apply_op`` semantics on tensors, through the batched v2 functional ops)."""
    import torchvision.transforms.v2.functional as F
    from torchvision.transforms import InterpolationMode

    near, fill = InterpolationMode.NEAREST, None
    if op_name == "ShearX":
        return F.affine(images, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[math.degrees(math.atan(magnitude)), 0.0], interpolation=near, fill=fill, center=[0, 0])
    if op_name == "ShearY":
        return F.affine(images, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[0.0, math.degrees(math.atan(magnitude))], interpolation=near, fill=fill, center=[0, 0])
    if op_name == "TranslateX":
        return F.affine(images, angle=0.0, translate=[int(magnitude), 0], scale=1.0, shear=[0.0, 0.0],
                        interpolation=near, fill=fill)
    if op_name == "TranslateY":
        return F.affine(images, angle=0.0, translate=[0, int(magnitude)], scale=1.0, shear=[0.0, 0.0],
                        interpolation=near, fill=fill)
    if op_name == "Rotate":
        return F.rotate(images, magnitude, interpolation=near, fill=fill)
    if op_name == "Brightness":
        return F.adjust_brightness(images, 1.0 + magnitude)
    if op_name == "Color":
        return F.adjust_saturation(images, 1.0 + magnitude)
    if op_name == "Contrast":
        return F.adjust_contrast(images, 1.0 + magnitude)
    if op_name == "Sharpness":
        return F.adjust_sharpness(images, 1.0 + magnitude)
    if op_name == "Posterize":
        return F.posterize(images, int(magnitude))
    if op_name == "Solarize":
        return F.solarize(images, magnitude)
    if op_name == "AutoContrast":
        return F.autocontrast(images)
    if op_name == "Equalize":
        return F.equalize(images)
    if op_name == "Invert":
        return F.invert(images)
    raise ValueError(f"op_name must be an AutoAugment op, got {op_name!r}")


def sample_aa_params(gen, n):
    """Per-sample AutoAugment draws: sub-policy ``[n]`` int64, op probabilities ``[n, 2]``
    float64, signs ``[n, 2]`` bool (True = keep the positive magnitude)."""
    import torch

    policy_id = torch.floor(_uniform(gen, n) * len(IMAGENET_POLICY)).long()
    probs = _uniform(gen, n, 2)
    signs = _uniform(gen, n, 2) < 0.5
    return policy_id, probs, signs


def aa_groups(policy_id, probs, signs, height, width):
    """Group samples per slot by (op, signed magnitude) of the ops that fire.

    Returns:
        ``[slot0_groups, slot1_groups]``, each a dict ``(op_name, magnitude) -> [sample ids]``.
    """
    table = _magnitude_table(height, width)
    pid, pr, sg = policy_id.tolist(), probs.tolist(), signs.tolist()  # plain lists: no per-item tensor access
    out = []
    for slot in range(2):
        groups: dict = {}
        for b in range(len(pid)):
            op_name, p, mag_id = IMAGENET_POLICY[pid[b]][slot]
            if not pr[b][slot] <= p:
                continue
            mags, signed = table[op_name]
            mag = mags[mag_id] if mag_id is not None else 0.0
            if signed and not sg[b][slot]:
                mag = -mag
            groups.setdefault((op_name, mag), []).append(b)
        out.append(groups)
    return out


def auto_augment(images, policy_id, probs, signs):
    """Batched AutoAugment (ImageNet policy) of uint8 ``[B, C, H, W]`` with given draws."""
    import torch

    x = images.clone()
    for groups in aa_groups(policy_id, probs, signs, x.shape[-2], x.shape[-1]):
        for (op_name, mag), ids in groups.items():
            idx = torch.tensor(ids, device=x.device)
            x[idx] = apply_aa_op(x[idx], op_name, mag)
    return x


# ----------------------------------------------------------------------------- erasing
def erase_boxes_from_uniforms(u_apply, u_area, u_logr, u_i, u_j, height, width, p, scale, ratio):
    """torchvision's RandomErasing rule, vectorised: ``[B, 4]`` ``(i, j, h, w)`` and ``[B]``
    bool "erase" (applied with prob ``p`` and some attempt had ``h < H and w < W``)."""
    import torch

    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u_logr)
    h = torch.round(torch.sqrt(target * aspect)).long()
    w = torch.round(torch.sqrt(target / aspect)).long()
    ok = (h < height) & (w < width)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    rows = torch.arange(h.shape[0])
    h_sel, w_sel = h[rows, first], w[rows, first]
    i = torch.floor(u_i * (height - h_sel + 1).double()).long()
    j = torch.floor(u_j * (width - w_sel + 1).double()).long()
    erase = (u_apply < p) & ok.any(dim=1)
    return torch.stack([i, j, h_sel, w_sel], dim=1), erase


def box_mask(boxes, active, height, width, device):
    """``[B, 1, H, W]`` bool mask of the ``(i, j, h, w)`` boxes of the active samples."""
    import torch

    b = boxes.to(device)
    ys = torch.arange(height, device=device)[None, :, None]
    xs = torch.arange(width, device=device)[None, None, :]
    i, j, h, w = (b[:, k, None, None] for k in range(4))
    m = (ys >= i) & (ys < i + h) & (xs >= j) & (xs < j + w) & active.to(device)[:, None, None]
    return m[:, None]


# ----------------------------------------------------------------------------- pipeline
class GpuAugment:
    """The per-sample pipeline of recipe b.1, batched.

    Example:
        >>> import torch
        >>> aug = GpuAugment(AugmentConfig(size=32))
        >>> g = torch.Generator().manual_seed(0)
        >>> out = aug(torch.zeros(4, 64, 64, 3, dtype=torch.uint8), g)
        >>> tuple(out.shape), out.dtype
        ((4, 3, 32, 32), torch.float32)
    """

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()

    def __call__(self, images, gen):
        import torch

        cfg = self.config
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ValueError(f"images must be [B, 3, H, W] or [B, H, W, 3], got {tuple(images.shape)}")
        if images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        n, _, height, width = images.shape
        dev = images.device

        boxes = sample_rrc_boxes(gen, n, height, width, cfg.scale, cfg.ratio)
        flip = _uniform(gen, n) < cfg.hflip
        aa = sample_aa_params(gen, n)
        u_er = (_uniform(gen, n), _uniform(gen, n, _N_ATTEMPTS), _uniform(gen, n, _N_ATTEMPTS),
                _uniform(gen, n), _uniform(gen, n))

        x = resized_crop(images, boxes, cfg.size).round_().clamp_(0, 255).to(torch.uint8)
        x = torch.where(flip.to(dev)[:, None, None, None], x.flip(-1), x)
        if cfg.auto_augment:
            x = auto_augment(x, *aa)
        mean = torch.tensor(cfg.mean, device=dev, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(cfg.std, device=dev, dtype=torch.float32)[None, :, None, None]
        x = (x.float() / 255.0 - mean) / std
        if cfg.erase_p > 0:
            er_boxes, erase = erase_boxes_from_uniforms(*u_er, cfg.size, cfg.size, cfg.erase_p, cfg.erase_scale,
                                                        cfg.erase_ratio)
            x = x.masked_fill(box_mask(er_boxes, erase, cfg.size, cfg.size, dev), 0.0)
        return x


# ----------------------------------------------------------------------------- CutMix / MixUp
def cutmix_box(lam: float, u_cx: float, u_cy: float, height: int, width: int):
    """The reference's CutMix box: side ``sqrt(1 - lam) * side`` (truncated), centre uniform,
    clipped to the image. Returns ``(y1, y2, x1, x2)`` and the re-set
    ``lam = 1 - box area / image area``."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(u_cy * height), int(u_cx * width)
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return (y1, y2, x1, x2), 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)


def mix_batch(x, y, gen, *, mix_prob=0.8, cutmix_prob=0.5, alpha=1.0):
    """CutMix or MixUp on a batch, as the reference training loop.

    With probability ``mix_prob`` mix; then CutMix with probability ``cutmix_prob`` else
    MixUp; ``lam ~ Beta(alpha, alpha)``; the partner of sample k is ``perm[k]``.

    Args:
        x: ``[B, C, H, W]`` float batch (normalised).
        y: ``[B]`` int64 labels.
        gen: CPU ``torch.Generator``.

    Returns:
        ``(x_mixed, y_a, y_b, lam)``; the loss is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``
        (``y_b = y_a`` and ``lam = 1`` when no mixing happens).
    """
    import numpy as np
    import torch

    u = _uniform(gen, 5)
    perm = torch.randperm(x.shape[0], generator=gen)
    beta_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    if not float(u[0]) < mix_prob:
        return x, y, y, 1.0
    lam = 1.0 if alpha <= 0 else float(np.random.default_rng(beta_seed).beta(alpha, alpha))
    perm_d = perm.to(x.device)
    if float(u[1]) < cutmix_prob:
        (y1, y2, x1, x2), lam = cutmix_box(lam, float(u[2]), float(u[3]), x.shape[-2], x.shape[-1])
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[perm_d, :, y1:y2, x1:x2]
    else:
        x = lam * x + (1.0 - lam) * x[perm_d]
    return x, y, y[perm_d], lam


def reference_transform(size: int = 224):
    """The reference's per-sample torchvision pipeline on PIL images (for benchmarks and
    distribution checks): RRC -> flip -> AutoAugment -> ToTensor -> Normalize -> RandomErasing."""
    import torchvision.transforms as T

    return T.Compose([
        T.RandomResizedCrop(size),
        T.RandomHorizontalFlip(),
        T.AutoAugment(T.AutoAugmentPolicy.IMAGENET),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.RandomErasing(p=0.5),
    ])
