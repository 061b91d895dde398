"""BatchTopK SAE (Bussmann et al. 2024): keep the k·batch largest ReLU pre-activations over the
whole batch (per instance), so examples can use more or fewer latents than k.

At inference it uses a fixed threshold θ, the running mean over training batches of the smallest
activation kept: z = pre ⊙ 1[pre > θ], so each example is encoded alone. Saved as a `threshold`
[d_sae] (θ repeated), the JumpReLU form that SAELens reads. Loss: ‖x − x̂‖² + AuxK (see topk.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from superposition.sae.base import LossOut, StepState, architecture
from superposition.sae.topk import TopKFamily


def batch_topk(acts: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """acts (batch, inst, d_sae) ≥ 0: keep the k·batch largest per instance over the batch.
    Returns the kept activations and, per instance, the smallest positive one kept."""
    batch, inst, m = acts.shape
    flat = acts.transpose(0, 1).reshape(inst, batch * m)
    vals, idx = flat.topk(k * batch, dim=-1, sorted=False)
    kept = torch.zeros_like(flat).scatter_(-1, idx, vals)
    smallest = torch.where(vals > 0, vals, torch.full_like(vals, float("inf"))).amin(-1)
    return kept.reshape(inst, batch, m).transpose(0, 1), smallest


@architecture
class BatchTopKSAE(TopKFamily):
    name = "batchtopk"
    optional_tensors = ("threshold",)  # a TopK file read as BatchTopK keeps θ = 0 until trained

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.register_buffer("threshold", torch.zeros(cfg.n_instances))
        self.register_buffer("threshold_count", torch.zeros((), dtype=torch.long))

    def encode(self, x: Tensor) -> Tensor:
        """Inference form: a fixed per-instance threshold, so each example is encoded alone."""
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold.view(1, -1, 1))

    def loss(self, x: Tensor, state: StepState) -> LossOut:
        z = self._activate(self.pre_acts(x))
        main, terms, x_hat = self._recon_terms(x, z)
        terms["auxk"] = self._auxk(x, x_hat, state.dead)
        return LossOut((main + self.cfg.aux_coefficient * terms["auxk"]).sum(), terms, z, x_hat)

    def _activate(self, pre: Tensor) -> Tensor:
        z, smallest = batch_topk(torch.relu(pre), self.k)
        with torch.no_grad():  # running mean of the smallest kept activation
            n = self.threshold_count.item()
            ok = torch.isfinite(smallest)
            self.threshold[ok] = (self.threshold[ok] * n + smallest[ok]) / (n + 1)
            self.threshold_count += 1
        return z

    def _recon_terms(self, x: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(the reconstruction loss per instance, the terms to log, x̂)."""
        x_hat = self.decode(z)
        mse = self.mse(x, x_hat)
        return mse, {"mse": mse}, x_hat

    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        return {**super().saved_tensors(i), "threshold": self.threshold[i].expand(self.cfg.d_sae)}

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        super().load_saved(t)
        if "threshold" in t:
            self.threshold.copy_(t["threshold"].reshape(-1)[:1])
