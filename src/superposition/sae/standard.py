"""Standard SAE: z = ReLU((x − b_dec) W_enc + b_enc), x̂ = z W_dec + b_dec.

Loss per instance: ‖x − x̂‖² + λ Σ_j z_j (or λ Σ_j z_j ‖W_dec,j‖ with `weighted_l1`, which then
drops the unit-norm decoder constraint). `tied` uses W_enc = W_decᵀ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superposition.sae.base import BatchedSAE, LossOut, SAEConfig, StepState


class StandardSAE(BatchedSAE):
    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.unit_norm_decoder = not cfg.weighted_l1
        if cfg.tied:
            del self.W_enc  # the encoder is the decoder's transpose
        self.register_buffer("l1_coefficient", cfg.per_instance("l1_coefficient"))

    def encoder_weight(self) -> Tensor:
        return self.W_dec.transpose(1, 2) if self.cfg.tied else self.W_enc

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.pre_acts(x))

    def loss(self, x: Tensor, state: StepState) -> LossOut:
        z = self.encode(x)
        x_hat = self.decode(z)
        mse = self.mse(x, x_hat)
        if self.cfg.weighted_l1:
            l1 = (z * self.W_dec.norm(dim=-1)).sum(-1).mean(0)
        else:
            l1 = z.sum(-1).mean(0)
        total = (mse + state.sparsity_scale * self.l1_coefficient * l1).sum()
        return LossOut(total, {"mse": mse, "l1": l1}, z, x_hat)
