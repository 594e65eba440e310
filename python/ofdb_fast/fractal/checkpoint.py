"""Safe checkpoints for ``ofdb-fast pretrain`` and the backbone export PatchCore loads.

Format (one ``.safetensors`` file, no pickle anywhere):

* tensors: ``model.<name>`` (the unwrapped model's state_dict), ``optim.<param_id>.<key>``
  (per-parameter optimiser state such as ``momentum_buffer``), ``grad.<name>`` (only when a
  gradient-accumulation window was open), ``rng.<name>`` (RNG state byte tensors);
* header metadata (strings): ``format = "ofdb_fast.checkpoint"``, ``version = "1"``,
  ``state`` (JSON: step/epoch counters, config, scheduler, data-source description) and
  ``optim`` (JSON: ``param_groups`` and non-tensor per-parameter state).

Files are written to a temporary name in the target directory, fsynced and moved into place
with ``os.replace`` so a crash never leaves a truncated checkpoint.

Backbone export: ``model.*`` minus the classifier (``fc.*``), keys as torchvision's ResNet,
header metadata ``{"format": "ofdb_fast.backbone", "version": "1", "arch": <name>}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .._io import atomic_write, refuse_overwrite

CHECKPOINT_FORMAT = "ofdb_fast.checkpoint"
BACKBONE_FORMAT = "ofdb_fast.backbone"
FORMAT_VERSION = 1
HEAD_PREFIX = "fc."


@dataclass
class Checkpoint:
    model: dict
    optim: dict | None
    state: dict
    rng: dict = field(default_factory=dict)
    grads: dict = field(default_factory=dict)


def _cpu(t):
    return t.detach().to("cpu").contiguous().clone()


def atomic_save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict) -> None:
    """Write ``tensors`` + string ``metadata`` to ``path`` atomically and fsynced (:mod:`ofdb_fast._io`)."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), fsync=True, makedirs=True)


def save_checkpoint(path, *, model_state: dict, optim_state: dict | None, state: dict, rng: dict | None = None,
                    grads: dict | None = None) -> None:
    """Save a training checkpoint (see the module docstring for the layout)."""
    import torch

    tensors = {f"model.{k}": _cpu(v) for k, v in model_state.items()}
    optim_json = None
    if optim_state is not None:
        per_param: dict = {}
        for pid, entry in optim_state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = _cpu(value)
                else:
                    per_param.setdefault(str(pid), {})[key] = value
        optim_json = {"param_groups": optim_state["param_groups"], "state": per_param}
    for k, v in (rng or {}).items():
        tensors[f"rng.{k}"] = _cpu(v)
    for k, v in (grads or {}).items():
        tensors[f"grad.{k}"] = _cpu(v)
    metadata = {"format": CHECKPOINT_FORMAT, "version": str(FORMAT_VERSION), "state": json.dumps(state)}
    if optim_json is not None:
        metadata["optim"] = json.dumps(optim_json)
    atomic_save_safetensors(tensors, path, metadata)


def _open(path, expected_format: str):
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"checkpoint {path} does not exist")
    try:
        handle = safe_open(path, framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    meta = handle.metadata() or {}
    if meta.get("format") != expected_format:
        raise ValueError(f"checkpoint {path} must have format {expected_format!r}, got {meta.get('format')!r}")
    if meta.get("version") != str(FORMAT_VERSION):
        raise ValueError(f"checkpoint {path} must have version {FORMAT_VERSION}, got {meta.get('version')!r}")
    return handle, meta


def load_checkpoint(path) -> Checkpoint:
    """Load and validate a checkpoint written by :func:`save_checkpoint`."""
    handle, meta = _open(path, CHECKPOINT_FORMAT)
    try:
        state = json.loads(meta["state"])
        optim_json = json.loads(meta["optim"]) if "optim" in meta else None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path} has malformed metadata: {exc}") from exc
    model, rng, grads, optim_tensors = {}, {}, {}, {}
    for key in handle.keys():
        kind, _, rest = key.partition(".")
        t = handle.get_tensor(key)
        if kind == "model":
            model[rest] = t
        elif kind == "rng":
            rng[rest] = t
        elif kind == "grad":
            grads[rest] = t
        elif kind == "optim":
            pid, _, name = rest.partition(".")
            optim_tensors.setdefault(int(pid), {})[name] = t
        else:
            raise ValueError(f"checkpoint {path} has an unknown tensor group {kind!r} (key {key!r})")
    if not model:
        raise ValueError(f"checkpoint {path} must contain model.* tensors, got none")
    optim = None
    if optim_json is not None:
        per_param = {int(k): dict(v) for k, v in optim_json.get("state", {}).items()}
        for pid, entry in optim_tensors.items():
            per_param.setdefault(pid, {}).update(entry)
        optim = {"state": per_param, "param_groups": optim_json["param_groups"]}
    return Checkpoint(model=model, optim=optim, state=state, rng=rng, grads=grads)


# ----------------------------------------------------------------------------- export
def check_arch_state(arch: str, state: dict, source: str, *, with_head: bool) -> None:
    """Raise ``ValueError`` naming the first mismatches when ``state`` is not ``arch``'s."""
    import torchvision

    ctor = getattr(torchvision.models, arch, None)
    if ctor is None:
        raise ValueError(f"arch must be a torchvision model name, got {arch!r}")
    ref = {k: tuple(v.shape) for k, v in ctor(weights=None).state_dict().items()
           if with_head or not k.startswith(HEAD_PREFIX)}
    got = {k: tuple(v.shape) for k, v in state.items() if with_head or not k.startswith(HEAD_PREFIX)}
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    bad = sorted(k for k in set(ref) & set(got) if ref[k] != got[k] and not (with_head and k.startswith(HEAD_PREFIX)))
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if extra:
            parts.append(f"unexpected {extra[:3]}")
        if bad:
            parts.append(f"shape mismatch {[(k, got[k], ref[k]) for k in bad[:3]]}")
        raise ValueError(f"{source} does not hold a {arch} model: {'; '.join(parts)}")


def export_backbone(ckpt_path, out_path, *, arch: str | None = None, overwrite: bool = False) -> dict:
    """Write the backbone (everything before ``fc``) of a training checkpoint.

    Args:
        ckpt_path: checkpoint written by ``ofdb-fast pretrain``.
        out_path: ``.safetensors`` output; refused when it exists unless ``overwrite``.
        arch: expected architecture (default: the checkpoint's); a mismatch is a ValueError.

    Returns:
        The header metadata written.
    """
    out_path = os.fspath(out_path)
    if not out_path.endswith(".safetensors"):
        raise ValueError(f"export output must end with .safetensors, got {out_path}")
    refuse_overwrite(out_path, overwrite, "export output")
    ckpt = load_checkpoint(ckpt_path)
    ckpt_arch = ckpt.state.get("config", {}).get("arch")
    if arch is not None and ckpt_arch is not None and arch != ckpt_arch:
        raise ValueError(f"--arch {arch} does not match the checkpoint's arch {ckpt_arch} ({ckpt_path})")
    arch = arch or ckpt_arch
    if arch is None:
        raise ValueError(f"checkpoint {ckpt_path} does not record its arch; pass --arch")
    check_arch_state(arch, ckpt.model, f"checkpoint {ckpt_path}", with_head=True)
    backbone = {k: v for k, v in ckpt.model.items() if not k.startswith(HEAD_PREFIX)}
    meta = {"format": BACKBONE_FORMAT, "version": str(FORMAT_VERSION), "arch": arch,
            "num_classes_pretrained": str(ckpt.state.get("num_classes", "")),
            "global_step": str(ckpt.state.get("global_step", ""))}
    atomic_save_safetensors({k: v.contiguous() for k, v in backbone.items()}, out_path, meta)
    return meta


def load_backbone(path, arch: str | None = None):
    """Read an exported backbone: ``(state_dict, metadata)``, validated against ``arch``
    (default: the file's own). Load with ``model.load_state_dict(state, strict=False)``;
    only ``fc.*`` is then missing."""
    handle, meta = _open(path, BACKBONE_FORMAT)
    if arch is not None and meta.get("arch") != arch:
        raise ValueError(f"backbone {path} was exported for {meta.get('arch')!r}, not {arch!r}")
    state = {k: handle.get_tensor(k) for k in handle.keys()}
    check_arch_state(meta.get("arch"), state, f"backbone {path}", with_head=False)
    return state, meta
