"""Sparse autoencoders: every architecture, batched over instances, one trainer."""

from superposition.sae.base import BatchedSAE, LossOut, StepState
from superposition.sae.config import SAEConfig
from superposition.sae.registry import ARCHITECTURES


def make_sae(cfg: SAEConfig, generator=None) -> BatchedSAE:
    return ARCHITECTURES[cfg.architecture](cfg, generator)


__all__ = ["ARCHITECTURES", "BatchedSAE", "LossOut", "SAEConfig", "StepState", "make_sae"]
