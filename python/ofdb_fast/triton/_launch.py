"""Launch helpers shared by the Triton kernels."""

from __future__ import annotations

import contextlib

import torch


def device_of_launch(device: torch.device):
    """Context making ``device`` current for a Triton launch: Triton launches on the current
    device and that device's current stream, not on the device of the tensors it is given
    (a tensor on ``cuda:1`` while ``cuda:0`` is current would be read from the wrong GPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
