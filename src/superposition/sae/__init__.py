"""Sparse autoencoders: every architecture, batched over instances, one trainer; `SAE` is one of
them with SAELens's tensor interface (sae/single.py), the object a researcher loads and holds."""

from superposition.sae.base import BatchedSAE, LossOut, StepState
from superposition.sae.config import SAEConfig
from superposition.sae.registry import ARCHITECTURES
from superposition.sae.single import SAE, as_batched


def make_sae(cfg: SAEConfig, generator=None) -> BatchedSAE:
    return ARCHITECTURES[cfg.architecture](cfg, generator)


__all__ = [
    "ARCHITECTURES",
    "SAE",
    "BatchedSAE",
    "LossOut",
    "SAEConfig",
    "StepState",
    "as_batched",
    "make_sae",
]
