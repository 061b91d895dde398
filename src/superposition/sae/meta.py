"""Meta-SAEs (Bussmann et al. 2024): a BatchTopK SAE trained on the decoder directions of another
SAE, so that each base latent is explained as a sparse sum of a few meta-latents. The base
decoder rows are unit-normalised; the meta-SAE's fraction of variance explained (FVE) says how
compositional the base dictionary is: rows built from a few shared atoms give FVE near 1, rows
with no shared structure (Gaussian) do not."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from superposition.sae import SAEConfig, make_sae
from superposition.sae.base import BatchedSAE
from superposition.sae.train import SAETrainConfig, SAETrainer


class RowSampler:
    """Batches of rows drawn uniformly with replacement (the trainer's source interface)."""

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def sample(self, n: int, generator: torch.Generator | None = None, out: Tensor | None = None) -> Tensor:
        return self.rows[torch.randint(self.rows.shape[0], (n,), generator=generator)]


@dataclass
class MetaSAE:
    sae: BatchedSAE
    rows: Tensor  # the unit-normalised base decoder rows it was trained on
    z: Tensor  # (n_base, width) meta-latent activations of every base latent
    fve: float
    l0: float
    frac_dead: float


def unit_rows(W_dec: Tensor) -> Tensor:
    return W_dec / W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def train_meta_sae(
    W_dec: Tensor,
    width: int,
    k: int = 4,
    steps: int = 2000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
) -> MetaSAE:
    """Train a BatchTopK meta-SAE of `width` latents and (mean) L0 `k` on the rows of W_dec
    (n_base, d), and score it on all of them with its inference encoder."""
    rows = unit_rows(W_dec.detach().float().cpu())
    cfg = SAEConfig(architecture="batchtopk", d_in=rows.shape[1], d_sae=width, k=k)
    sae = make_sae(cfg, torch.Generator().manual_seed(seed))
    train = SAETrainConfig(
        steps=steps,
        batch_size=min(batch_size, rows.shape[0]),
        lr=lr,
        lr_decay_steps=steps // 5,
        b_dec_init="mean",
        dead_feature_window=max(1, steps // 10),
        seed=seed,
    )
    SAETrainer(sae, RowSampler(rows), train).train()
    sae.eval()
    with torch.no_grad():
        x = rows.unsqueeze(1)
        z = sae.encode(x)
        x_hat = sae.decode(z, x)[:, 0]
        z = z[:, 0]
    return MetaSAE(sae, rows, z, *score(rows, x_hat, z))


def score(rows: Tensor, x_hat: Tensor, z: Tensor) -> tuple[float, float, float]:
    """(FVE = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², mean L0, fraction of meta-latents that never fire)."""
    fve = 1.0 - float((rows - x_hat).square().sum() / (rows - rows.mean(0)).square().sum().clamp(min=1e-30))
    fired = z != 0
    return fve, float(fired.sum(1).float().mean()), float((~fired.any(0)).float().mean())


def meta_latents_of(z: Tensor, top: int = 8) -> list[list[tuple[int, float]]]:
    """Per base latent, its active meta-latents with their activations, largest first."""
    out = []
    for row in z:
        idx = row.nonzero().squeeze(1)
        order = row[idx].argsort(descending=True)[:top]
        out.append([(int(idx[i]), float(row[idx[i]])) for i in order])
    return out


def base_latents_by_meta(z: Tensor) -> dict[int, list[int]]:
    """Per meta-latent, the base latents it is active on, by activation, largest first."""
    out = {}
    for j in range(z.shape[1]):
        col = z[:, j]
        idx = col.nonzero().squeeze(1)
        out[j] = idx[col[idx].argsort(descending=True)].tolist()
    return out
