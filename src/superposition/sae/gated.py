"""Gated SAE (Rajamanoharan et al. 2024): a gate decides which latents fire, a magnitude path
how strongly, sharing W_enc up to a per-latent rescale exp(r_mag).

    π_gate = (x − b_dec) W_enc + b_gate          f_gate = 1[π_gate > 0]
    π_mag  = ((x − b_dec) W_enc) ⊙ exp(r_mag) + b_mag
    z = f_gate ⊙ ReLU(π_mag),   x̂ = z W_dec + b_dec
    loss = ‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate) W_dec + b_dec)_frozen‖²

The auxiliary term reconstructs through the gate path with W_dec and b_dec frozen, which gives
the gate's encoder weights a reconstruction signal despite the step function. b_enc is b_gate
(saved as `b_gate`, with `r_mag` and `b_mag`, as SAELens names them).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from superposition.sae.base import BatchedSAE, LossOut, StepState, architecture
from superposition.sae.standard import L1_SWEEP, L1Options


@architecture
class GatedSAE(BatchedSAE):
    name = "gated"
    Options = L1Options
    penalty_sweep = ("l1_coefficient", L1_SWEEP)
    surrogate_gradients = ("W_dec", "b_dec")  # the auxiliary term holds them fixed

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.r_mag = nn.Parameter(torch.zeros(cfg.n_instances, cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.n_instances, cfg.d_sae))
        self.register_buffer("l1_coefficient", cfg.per_instance("l1_coefficient"))

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor]:
        proj = torch.einsum("bid,ids->bis", self.encoder_input(x), self.encoder_weight())
        return proj + self.b_enc, proj * self.r_mag.exp() + self.b_mag

    def encode(self, x: Tensor) -> Tensor:
        gate, mag = self._paths(x)
        return (gate > 0) * torch.relu(mag)

    def loss(self, batch: Tensor, state: StepState) -> LossOut:
        x, y = self.split(batch)
        gate, mag = self._paths(x)
        z = (gate > 0) * torch.relu(mag)
        x_hat = self.decode(z, x)
        mse = self.mse(y, x_hat)
        gate_act = torch.relu(gate)
        l1 = gate_act.sum(-1).mean(0)
        x_gate = torch.einsum("bis,isd->bid", gate_act, self.W_dec.detach()) + self.b_dec.detach()
        if (s := self.skip(x)) is not None:  # a skip transcoder's linear path is learned by both terms
            x_gate = x_gate + s
        aux = self.mse(y, x_gate)
        total = (mse + state.sparsity_scale * self.l1_coefficient * l1 + aux).sum()
        return LossOut(total, {"mse": mse, "l1": l1, "aux": aux}, z, x_hat)

    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        t = super().saved_tensors(i)
        t["b_gate"] = t.pop("b_enc")
        return {**t, "r_mag": self.r_mag[i], "b_mag": self.b_mag[i]}

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        super().load_saved({**t, "b_enc": t["b_gate"]})
        self.r_mag.copy_(t["r_mag"].unsqueeze(0))
        self.b_mag.copy_(t["b_mag"].unsqueeze(0))
