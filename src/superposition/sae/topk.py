"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) SAEs, with the AuxK loss.

TopK keeps each example's k largest ReLU pre-activations. BatchTopK keeps the k·batch largest
over the whole batch (per instance), so examples can use more or fewer latents; at inference it
uses a fixed threshold θ, the running mean of the smallest activation kept in training batches.

AuxK (for dead latents): the residual e = x − x̂ is reconstructed from the `aux_k` largest
pre-activations among the dead latents, ê = z_aux W_dec, and the loss adds
aux_coefficient · min(1, n_dead / aux_k) · ‖e − ê‖² / ‖e − ē‖², so dead latents receive gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superposition.sae.base import BatchedSAE, LossOut, SAEConfig, StepState


def topk_mask(acts: Tensor, k: int) -> Tensor:
    """Keep the k largest entries along the last axis, zero the rest."""
    vals, idx = acts.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(acts).scatter_(-1, idx, vals)


def batch_topk(acts: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """acts (batch, inst, d_sae) ≥ 0: keep the k·batch largest per instance over the batch.
    Returns the kept activations and, per instance, the smallest positive one kept."""
    batch, inst, m = acts.shape
    flat = acts.transpose(0, 1).reshape(inst, batch * m)
    vals, idx = flat.topk(k * batch, dim=-1, sorted=False)
    kept = torch.zeros_like(flat).scatter_(-1, idx, vals)
    smallest = torch.where(vals > 0, vals, torch.full_like(vals, float("inf"))).amin(-1)
    return kept.reshape(inst, batch, m).transpose(0, 1), smallest


class TopKSAE(BatchedSAE):
    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.k = cfg.k
        self.aux_k = min(cfg.aux_k or max(1, cfg.d_in // 2), cfg.d_sae)

    def encode(self, x: Tensor) -> Tensor:
        return topk_mask(torch.relu(self.pre_acts(x)), self.k)

    def _activate(self, pre: Tensor) -> Tensor:
        return topk_mask(torch.relu(pre), self.k)

    def _recon_terms(self, x: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        x_hat = self.decode(z)
        mse = self.mse(x, x_hat)
        return mse, {"mse": mse}, x_hat

    def loss(self, x: Tensor, state: StepState) -> LossOut:
        pre = self.pre_acts(x)
        z = self._activate(pre)
        main, terms, x_hat = self._recon_terms(x, z)
        aux = self._auxk(x, x_hat, pre, state.dead)
        terms["auxk"] = aux
        total = (main + self.cfg.aux_coefficient * aux).sum()
        return LossOut(total, terms, z, x_hat)

    def _auxk(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Tensor:
        zeros = torch.zeros(self.n_instances, device=x.device)
        if dead is None or not bool(dead.any()):
            return zeros
        e = (x - x_hat).detach()
        masked = torch.where(dead.unsqueeze(0), torch.relu(pre), torch.zeros_like(pre))
        z_aux = topk_mask(masked, self.aux_k)
        e_hat = torch.einsum("bis,isd->bid", z_aux, self.W_dec)
        err = (e_hat - e).square().sum((0, 2))
        var = (e - e.mean(0)).square().sum((0, 2)).clamp(min=1e-12)
        scale = (dead.sum(-1).float() / self.aux_k).clamp(max=1.0)
        return scale * err / var


class BatchTopKSAE(TopKSAE):
    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.register_buffer("threshold", torch.zeros(cfg.n_instances))
        self.register_buffer("threshold_count", torch.zeros((), dtype=torch.long))

    def encode(self, x: Tensor) -> Tensor:
        """Inference form: a fixed per-instance threshold, so each example is encoded alone."""
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold.view(1, -1, 1))

    def _activate(self, pre: Tensor) -> Tensor:
        z, smallest = batch_topk(torch.relu(pre), self.k)
        with torch.no_grad():  # running mean of the smallest kept activation
            n = self.threshold_count.item()
            ok = torch.isfinite(smallest)
            self.threshold[ok] = (self.threshold[ok] * n + smallest[ok]) / (n + 1)
            self.threshold_count += 1
        return z
