"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): nested prefixes of the
dictionary each reconstruct the input on their own, so the first latents learn general features
and later ones refine them instead of absorbing them.

With prefixes m_1 < ... < m_n = d_sae and BatchTopK latents z:
    loss = (1/n) Σ_i ‖x − (z[:, :m_i] W_dec[:m_i] + b_dec)‖² + AuxK
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from superposition.sae.base import architecture
from superposition.sae.batchtopk import BatchTopKSAE
from superposition.sae.sparse import Latents
from superposition.sae.topk import TopKFamilyOptions


class MatryoshkaOptions(TopKFamilyOptions):
    prefixes: list[int] | None = Field(
        None,
        description="matryoshka: nested dictionary sizes, ending at d_sae (default d_sae/16, /8, /4, /2, 1)",
    )


def prefix_sizes(cfg) -> list[int]:
    """The configured prefixes, or doubling sizes d_sae/16, d_sae/8, ..., d_sae (those ≥ 1)."""
    return list(cfg.prefixes) if cfg.prefixes else sorted({max(1, cfg.d_sae >> s) for s in range(4, -1, -1)})


@architecture
class MatryoshkaSAE(BatchTopKSAE):
    name = "matryoshka"
    aliases = ("matryoshka_batchtopk",)  # SAELens
    Options = MatryoshkaOptions

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        pre = prefix_sizes(cfg)
        if sorted(pre) != pre or len(set(pre)) != len(pre) or pre[-1] != cfg.d_sae or pre[0] <= 0:
            raise ValueError(
                f"prefixes: strictly increasing positive sizes ending at d_sae ({cfg.d_sae}), got {pre}"
            )

    def _reconstruct(self, x: Tensor, y: Tensor, latents: Latents) -> tuple[Tensor, dict, Tensor]:
        z = latents.to_dense()  # each prefix reads its own slice of the latents
        partial = self.b_dec.unsqueeze(0).expand_as(y)
        if (s := self.skip(x)) is not None:
            partial = partial + s
        losses = []
        start = 0
        for m in prefix_sizes(self.cfg):  # add each block's contribution, scoring every prefix on the way
            partial = partial + torch.einsum("bis,isd->bid", z[..., start:m], self.W_dec[:, start:m])
            losses.append(self.mse(y, partial))
            start = m
        per_prefix = torch.stack(losses)  # (n_prefixes, inst)
        mse = per_prefix[-1]
        return per_prefix.mean(0), {"mse": mse, "prefix_mse": per_prefix.mean(0)}, partial
