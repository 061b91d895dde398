"""Save and load SAEs: one folder per SAE with `cfg.json` and `sae_weights.safetensors`, the
layout SAELens 6 reads (see formats/saelens.py); `load_sae` also reads sparsify, Gemma Scope and
dictionary_learning files (formats/), hf:// addresses and released SAEs by (release, sae_id)
(releases.py). Never pickle: safetensors, JSON and numpy without pickle.
"""

from __future__ import annotations

from pathlib import Path

import torch

from superposition.sae import SAE, BatchedSAE, as_batched
from superposition.sae.formats import saelens

WEIGHTS = saelens.WEIGHTS
CONFIG = saelens.CONFIG


def load_sae(
    path: str | Path, sae_id: str | None = None, device: str = "cpu", dtype: str | torch.dtype | None = None
) -> SAE:
    """The SAE at `path` (a folder or file of any readable format, or an hf:// address), or with
    `sae_id` the released SAE `sae_id` of release `path` (SAELens's `from_pretrained(release,
    sae_id)`): an `SAE` with SAELens's tensor interface, in eval mode, without gradients."""
    return SAE.from_pretrained(str(path), sae_id, device, dtype)


def save_sae(
    sae: SAE | BatchedSAE, folder: str | Path, instance: int = 0, extra_cfg: dict | None = None
) -> Path:
    """Instance `instance` of `sae` as a folder that this package and SAELens 6 both load."""
    return saelens.write(as_batched(sae), Path(folder), instance, extra_cfg)


def save_instances(
    sae: BatchedSAE, parent: str | Path, names: list[str], extra_cfg: list[dict] | None = None
) -> list[Path]:
    """One folder per instance: parent/<name>/."""
    return [
        save_sae(sae, Path(parent) / n, i, (extra_cfg or [{}] * len(names))[i]) for i, n in enumerate(names)
    ]


__all__ = ["load_sae", "save_sae", "save_instances", "WEIGHTS", "CONFIG"]
