"""Standard SAE: z = ReLU((x − b_dec) W_enc + b_enc), x̂ = z W_dec + b_dec.

Loss per instance: ‖x − x̂‖² + λ Σ_j z_j (or λ Σ_j z_j ‖W_dec,j‖ with `weighted_l1`, which then
drops the unit-norm decoder constraint). `tied` uses W_enc = W_decᵀ.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from superposition.config import Config
from superposition.sae.base import BatchedSAE, LossOut, StepState, architecture, per_instance
from superposition.sae.sparse import Latents

# Coefficients calibrated on the synthetic dictionary (activations of unit scale), a factor of √2
# apart so that some instance lands within ~20% of a target L0.
_R2 = 2**0.5
L1_SWEEP = [round(0.16 * _R2**i, 4) for i in range(8)]


class L1Options(Config):
    l1_coefficient: float | list[float] = per_instance(1.0, "standard, gated: weight λ of the L1 penalty")


class StandardOptions(L1Options):
    tied: bool = Field(False, description="standard: encoder W_enc = W_decᵀ")
    weighted_l1: bool = Field(
        False, description="standard: L1 weighted by decoder row norms, no unit-norm constraint"
    )


@architecture
class StandardSAE(BatchedSAE):
    name = "standard"
    Options = StandardOptions
    penalty_sweep = ("l1_coefficient", L1_SWEEP)

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.unit_norm_decoder = not cfg.weighted_l1
        if cfg.tied:
            del self.W_enc  # the encoder is the decoder's transpose
        self.register_buffer("l1_coefficient", cfg.per_instance("l1_coefficient"))

    def encoder_weight(self) -> Tensor:
        return self.W_dec.transpose(1, 2) if self.cfg.tied else self.W_enc

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.pre_acts(x))

    def loss(self, batch: Tensor, state: StepState) -> LossOut:
        x, y = self.split(batch)
        enc = self.encoded(x)
        with torch.no_grad():
            positive = enc.pre > 0
        pre = Latents.pre_activations(enc, positive)  # the products after the encoder's run on these pairs
        z = pre.map(torch.relu(pre.values))
        x_hat = self.reconstruct(z, x)
        mse = self.mse(y, x_hat)
        if self.cfg.weighted_l1:
            l1 = z.mean_sum(z.values * z.per_latent(self.W_dec.norm(dim=-1)))
        else:
            l1 = z.mean_sum()
        total = (mse + state.sparsity_scale * self.l1_coefficient * l1).sum()
        active_l0, fired = z.l0_and_fired()
        return LossOut(total, {"mse": mse, "l1": l1}, z.dense, x_hat, fired, active_l0)

    @property
    def optional_tensors(self) -> tuple[str, ...]:
        return ("W_enc",) if self.cfg.tied else ()  # a tied encoder is W_decᵀ: nothing to read
