"""PatchCore: data, backbones, features, memory bank, scoring, metrics, CLI."""
