"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): nested prefixes of the
dictionary each reconstruct the input on their own, so the first latents learn general features
and later ones refine them instead of absorbing them.

With prefixes m_1 < ... < m_n = d_sae and BatchTopK latents z:
    loss = (1/n) Σ_i ‖x − (z[:, :m_i] W_dec[:m_i] + b_dec)‖² + AuxK
"""

from __future__ import annotations

import torch
from torch import Tensor

from superposition.sae.topk import BatchTopKSAE


class MatryoshkaSAE(BatchTopKSAE):
    def _recon_terms(self, x: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        prefixes = self.cfg.prefix_sizes()
        partial = self.b_dec.unsqueeze(0).expand_as(x)
        losses = []
        start = 0
        for m in prefixes:  # add each block's contribution, scoring every prefix on the way
            partial = partial + torch.einsum("bis,isd->bid", z[..., start:m], self.W_dec[:, start:m])
            losses.append(self.mse(x, partial))
            start = m
        per_prefix = torch.stack(losses)  # (n_prefixes, inst)
        mse = per_prefix[-1]
        return per_prefix.mean(0), {"mse": mse, "prefix_mse": per_prefix.mean(0)}, partial
