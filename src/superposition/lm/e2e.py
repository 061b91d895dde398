"""End-to-end SAEs (Braun et al. 2024): train the SAE so that the model's output is preserved, not
the activation. The SAE's reconstruction replaces the activation at its hook (no error term) and
runs through the rest of the frozen model:

    e2e      loss = sparsity + β · KL(P_clean ‖ P_with_SAE)
    e2e_ds   loss = sparsity + β · KL(P_clean ‖ P_with_SAE) + (γ / H) Σ_h MSE(a_h with SAE, a_h clean)

with the KL averaged over every position of the batch's sequences, P the next-token distribution,
H the downstream hooks (γ split evenly over them) and MSE the mean squared difference per element.
"sparsity" is everything the SAE's own loss has besides its local reconstruction term (an L1 or
L0 penalty, AuxK for the TopK family), so every architecture trains this way.

The trainer still sees shuffled-free activations: `SequenceSource` serves all the non-special
positions of whole sequences and keeps what the objective needs about them (ids, positions, the
clean log-probabilities and downstream activations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from superposition.lm.data import special_mask
from superposition.lm.evals import capture_into, splice_at
from superposition.lm.hooks import HookedModel, sae_inputs
from superposition.sae.base import LossOut


def kl_clean_to_sae(logp_clean: Tensor, logits_sae: Tensor) -> Tensor:
    """Mean over positions of KL(P_clean ‖ P_sae) = Σ_v p_clean (log p_clean − log p_sae):
    logp_clean (..., vocab) log-probabilities, logits_sae (..., vocab) logits."""
    logq = F.log_softmax(logits_sae.float(), -1)
    return (logp_clean.exp() * (logp_clean - logq)).sum(-1).mean()


class SequenceSource:
    """Activations at `hook_name` of whole training sequences (count = batch / context, rounded
    up), in order, with the context the end-to-end objective needs (`self.last`)."""

    def __init__(self, store, hooked: HookedModel, tokenizer, hook_name: str, downstream: list[str]) -> None:
        self.store, self.hooked, self.tokenizer = store, hooked, tokenizer
        self.hook_name, self.downstream = hook_name, downstream
        self.pos = 0
        self.last: dict | None = None

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, out: Tensor | None = None) -> Tensor:
        count = max(1, math.ceil(n / self.store.context_size))
        ids = self.store.sequences(self.pos, count).to(self.store.device)
        self.pos += count
        keep = ~special_mask(self.tokenizer, ids.cpu()).to(ids.device)
        seen: dict[str, Tensor] = {}
        logits = self.hooked.logits(
            ids, {h: capture_into(seen, h) for h in [self.hook_name, *self.downstream]}
        )
        self.last = {
            "ids": ids,
            "keep": keep,
            "logp_clean": F.log_softmax(logits.float(), -1),
            "downstream": {h: sae_inputs(seen[h])[keep].float() for h in self.downstream},
        }
        self.store.model_tokens += ids.numel()
        return sae_inputs(seen[self.hook_name])[keep].float()

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


class EndToEndObjective:
    """Replaces the SAE's local reconstruction term by the end-to-end terms (module docstring)."""

    def __init__(
        self,
        source: SequenceSource,
        kl_coefficient: float,
        downstream_coefficient: float = 0.0,
    ) -> None:
        self.source = source
        self.beta, self.gamma = kl_coefficient, downstream_coefficient
        for p in source.hooked.model.parameters():  # the model is frozen: gradients reach only the SAE
            p.requires_grad_(False)

    def __call__(self, out: LossOut, scale: Tensor) -> LossOut:
        """out: the SAE's loss on this batch (x̂ in normalised units; scale (inst, 1) the factor)."""
        ctx, src = self.source.last, self.source
        x_hat = out.x_hat[:, 0] / scale[0]  # back to the model's units
        seen: dict[str, Tensor] = {}
        hooks = {src.hook_name: splice_at(ctx["keep"], x_hat)}
        hooks.update({h: capture_into(seen, h) for h in src.downstream})
        logits = src.hooked.logits(ctx["ids"], hooks)
        kl = kl_clean_to_sae(ctx["logp_clean"], logits)
        total = out.total - out.local_reconstruction().sum() + self.beta * kl
        terms = {**out.terms, "kl": kl.detach().reshape(1)}
        if src.downstream:
            ds = torch.stack(
                [
                    F.mse_loss(sae_inputs(seen[h])[ctx["keep"]].float(), ctx["downstream"][h])
                    for h in src.downstream
                ]
            )
            total = total + self.gamma * ds.mean()
            terms["downstream_mse"] = ds.mean().detach().reshape(1)
        return LossOut(total, terms, out.z, out.x_hat, out.fired, out.l0)
