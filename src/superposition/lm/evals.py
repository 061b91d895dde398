"""Evaluate an SAE spliced into its language model, on held-out sequences.

    ce_loss_clean           next-token cross-entropy of the unmodified model
    ce_loss_with_sae        ... with the activation at the hook replaced by the SAE's reconstruction
    ce_loss_zero_ablation   ... with the activation replaced by zeros
    ce_loss_recovered       (ce_zero − ce_sae) / (ce_zero − ce_clean): 1 for a perfect
                            reconstruction, 0 when the SAE is no better than zero-ablation
    kl_div                  mean over positions of KL(clean next-token distribution ‖ with SAE)

For a transcoder (hook `blocks.L.mlp`) the same metrics are by substitution: its prediction from
the MLP's input replaces the MLP's output, zero-ablation zeroes the MLP's output, and the
reconstruction metrics (`fvu` = 1 − explained variance, of the MLP output) compare ŷ with y.

Replacement (SAE or zeros) happens at the positions the SAE is trained on, i.e. not at special
tokens such as BOS, whose activations are outliers the SAE never sees. Reconstruction metrics
(L0, MSE, explained variance, densities) are over the same positions; frac_dead counts latents
whose density is at most `dead_threshold`, frac_dense those firing on more than 10% of tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from superposition.lm.data import special_mask
from superposition.lm.hooks import HookedModel, read_names, sae_inputs
from superposition.sae.base import BatchedSAE
from superposition.sae.metrics import Accumulator


def ce_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Summed next-token cross-entropy over the batch: logits (b, pos, vocab), ids (b, pos)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")


def ce_loss_recovered(clean: float, with_sae: float, zero: float) -> float:
    return (zero - with_sae) / (zero - clean) if zero != clean else float("nan")


def capture_into(store: dict, key: str):
    """A hook that records the activation in store[key] and leaves it unchanged."""

    def fn(a: Tensor) -> None:
        store[key] = a

    return fn


def splice_at(keep: Tensor, values: Tensor):
    """A hook that writes `values` (n, d) into the activation at the positions `keep` (b, pos)."""

    def fn(a: Tensor) -> Tensor:
        out = sae_inputs(a).clone()
        out[keep] = values.to(out.dtype)
        return out.view(a.shape)

    return fn


@torch.no_grad()
def evaluate_sae(
    hooked: HookedModel,
    tokenizer,
    sae: BatchedSAE,
    hook_name: str,
    seqs: Tensor,
    batch_size: int = 8,
    dead_threshold: float = 1e-8,
    device: str = "cpu",
) -> dict:
    """Every metric of the module docstring, for one SAE or transcoder (n_instances = 1) on
    sequences (n, ctx)."""
    acc = Accumulator()
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    kl_sum, n_pred = 0.0, 0
    names = read_names(hook_name)
    read, write = names[0], names[-1]  # the same hook for an SAE; MLP input and output for a transcoder
    for ids in seqs.split(batch_size):
        ids = ids.to(device)
        keep = ~special_mask(tokenizer, ids.cpu()).to(device)
        seen: dict[str, Tensor] = {}
        clean = hooked.logits(ids, {n: capture_into(seen, n) for n in names})
        x = sae_inputs(seen[read])[keep].float()
        y = sae_inputs(seen[write])[keep].float()
        z = sae.encode(x.unsqueeze(1))
        y_hat = sae.decode(z, x.unsqueeze(1))[:, 0]
        acc.add(y.unsqueeze(1), y_hat.unsqueeze(1), z)
        with_sae = hooked.logits(ids, {write: splice_at(keep, y_hat)})
        zero = hooked.logits(ids, {write: splice_at(keep, torch.zeros_like(y_hat))})
        ce["clean"] += ce_loss(clean, ids).item()
        ce["sae"] += ce_loss(with_sae, ids).item()
        ce["zero"] += ce_loss(zero, ids).item()
        logp, logq = F.log_softmax(clean[:, :-1].float(), -1), F.log_softmax(with_sae[:, :-1].float(), -1)
        kl_sum += (logp.exp() * (logp - logq)).sum().item()
        n_pred += ids[:, 1:].numel()
    m = acc.result()
    density = m["density"][0]
    clean_ce, sae_ce, zero_ce = (ce[k] / n_pred for k in ("clean", "sae", "zero"))
    return {
        "l0": m["l0"].item(),
        "l1": m["l1"].item(),
        "mse": m["mse"].item(),
        "explained_variance": m["explained_variance"].item(),
        "fvu": 1 - m["explained_variance"].item(),
        "shrinkage": m["shrinkage"].item(),
        "ce_loss_clean": clean_ce,
        "ce_loss_with_sae": sae_ce,
        "ce_loss_zero_ablation": zero_ce,
        "ce_loss_recovered": ce_loss_recovered(clean_ce, sae_ce, zero_ce),
        "kl_div": kl_sum / n_pred,
        "frac_dead": (density <= dead_threshold).float().mean().item(),
        "frac_dense": (density > 0.10).float().mean().item(),
        "frac_dense_1pct": (density > 0.01).float().mean().item(),
        "eval_tokens": acc.n,
        "eval_predictions": n_pred,
        "density": density.tolist(),
    }
