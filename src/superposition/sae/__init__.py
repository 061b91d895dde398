"""Sparse autoencoders: every architecture, batched over instances, one trainer."""

from superposition.sae.base import BatchedSAE, SAEConfig, StepState
from superposition.sae.gated import GatedSAE
from superposition.sae.jumprelu import JumpReLUSAE
from superposition.sae.matryoshka import MatryoshkaSAE
from superposition.sae.standard import StandardSAE
from superposition.sae.topk import BatchTopKSAE, TopKSAE

ARCHITECTURES: dict[str, type[BatchedSAE]] = {
    "standard": StandardSAE,
    "gated": GatedSAE,
    "jumprelu": JumpReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "matryoshka": MatryoshkaSAE,
}


def make_sae(cfg: SAEConfig, generator=None) -> BatchedSAE:
    return ARCHITECTURES[cfg.architecture](cfg, generator)


__all__ = ["ARCHITECTURES", "BatchedSAE", "SAEConfig", "StepState", "make_sae"]
