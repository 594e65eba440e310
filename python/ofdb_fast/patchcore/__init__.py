"""PatchCore: data, backbones, features, memory bank, scoring, metrics, CLI."""

from .model import PatchCore

__all__ = ["PatchCore"]
