"""Save and load SAEs: one folder per SAE with `cfg.json` and `sae_weights.safetensors`, the
layout SAELens 6 reads (see formats/saelens.py); `load_sae` also reads sparsify, Gemma Scope and
dictionary_learning files (formats/). Never pickle: safetensors, JSON and numpy without pickle.
"""

from __future__ import annotations

from pathlib import Path

from superposition.sae import BatchedSAE
from superposition.sae.formats import load as load_sae
from superposition.sae.formats import saelens

WEIGHTS = saelens.WEIGHTS
CONFIG = saelens.CONFIG


def save_sae(sae: BatchedSAE, folder: str | Path, instance: int = 0, extra_cfg: dict | None = None) -> Path:
    """Instance `instance` of `sae` as a folder that this package and SAELens 6 both load."""
    return saelens.write(sae, Path(folder), instance, extra_cfg)


def save_instances(
    sae: BatchedSAE, parent: str | Path, names: list[str], extra_cfg: list[dict] | None = None
) -> list[Path]:
    """One folder per instance: parent/<name>/."""
    return [
        save_sae(sae, Path(parent) / n, i, (extra_cfg or [{}] * len(names))[i]) for i, n in enumerate(names)
    ]


__all__ = ["load_sae", "save_sae", "save_instances", "WEIGHTS", "CONFIG"]
