"""How an SAE trained on one model transfers to another (Kissane et al. 2024, "SAEs (usually)
transfer between base and chat models"): the same SAE at the same hook on the same held-out
tokens of both models.

Per model: L0; explained variance pooled over tokens, 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² (this project's
`explained_variance`), and the mean of per-token ratios 1 − ‖x − x̂‖² / ‖x − x̄‖² (the form Kissane
et al. report; a few badly reconstructed tokens weigh more in it); each latent's activation
frequency and largest activation. Between models: the Pearson correlation over latents (those
that fire in either model) of frequencies and of largest activations. As they do, positions whose
activation norm is an outlier are left out (here: above `outlier` × the median norm in either
model, besides special tokens such as BOS), and how many were is reported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.lm.data import special_mask
from superposition.lm.hooks import HookedModel, sae_inputs


def same_tokenizer(
    a, b, name_a: str, name_b: str, field: str = "model", why: str = "a transfer compares the same tokens"
) -> None:
    if a.get_vocab() != b.get_vocab():
        raise SuperpositionError(f"{field}: {name_b} has another tokenizer than {name_a}; {why}")


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).clamp(min=1e-30)
    return float((a * b).sum() / den)


@torch.no_grad()
def transfer_table(
    models: dict[str, HookedModel], tokenizer, sae, hook: str, seqs: Tensor, batch_size: int = 8,
    outlier: float = 10.0, device: str = "cpu",
) -> dict:  # fmt: skip
    """{model name: its record} for each of the two models, and the correlations between them."""
    names = list(models)
    xs: dict[str, list[Tensor]] = {n: [] for n in names}
    for ids in seqs.split(batch_size):
        ids = ids.to(device)
        keep = ~special_mask(tokenizer, ids.cpu()).to(device)
        acts = {n: sae_inputs(models[n].run_with_cache(ids, [hook])[hook]).float() for n in names}
        for n in names:
            xs[n].append(acts[n][keep])
    x = {n: torch.cat(v) for n, v in xs.items()}
    norms = {n: x[n].norm(dim=-1) for n in names}
    ok = torch.ones(len(norms[names[0]]), dtype=torch.bool)
    for n in names:
        ok &= norms[n] <= outlier * norms[n].median()
    out: dict = {
        "excluded_outlier_positions": int((~ok).sum()),
        "positions": int(ok.sum()),
        "outlier_factor": outlier,
    }
    stats = {}
    for n in names:
        xn = x[n][ok]
        z = sae.encode(xn)
        x_hat = sae.decode(z, xn)
        err = (xn - x_hat).square().sum(-1)
        dev = (xn - xn.mean(0)).square().sum(-1)
        stats[n] = {"freq": (z > 0).float().mean(0), "max": z.max(0).values}
        out[n] = {
            "l0": float((z > 0).float().sum(-1).mean()),
            "explained_variance": float(1 - err.sum() / dev.sum().clamp(min=1e-30)),
            "explained_variance_per_token": float((1 - err / dev.clamp(min=1e-30)).mean()),
            "frac_alive": float((stats[n]["freq"] > 0).float().mean()),
        }
    a, b = names
    alive = (stats[a]["freq"] > 0) | (stats[b]["freq"] > 0)
    out["freq_correlation"] = _pearson(stats[a]["freq"][alive], stats[b]["freq"][alive])
    out["max_activation_correlation"] = _pearson(stats[a]["max"][alive], stats[b]["max"][alive])
    return out
