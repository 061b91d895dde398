"""Scores against known true features (one instance at a time).

W_dec: (d_sae, d) decoder rows; F: (n, d) true feature directions.

    cos_ij = Ŵ_i · F̂_j
    MCC: mean |cos| over the one-to-one matching of latents to features that maximises it
         (Hungarian algorithm), over min(d_sae, n) pairs
    recovered: fraction of true features with max_i |cos_ij| ≥ threshold
    uniqueness: distinct best-matching latents / recovered features (1 = no duplicates)
    precision / recall of a matched pair (i, j): P(feature j present | latent i fires) and
         P(latent i fires | feature j present)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def cosine_matrix(W_dec: Tensor, F: Tensor) -> Tensor:
    """Float[Tensor, "d_sae n"]."""
    a = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    b = F / F.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return a @ b.T


def hungarian_matching(W_dec: Tensor, F: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent indices, feature indices and |cos| of the optimal one-to-one matching."""
    c = cosine_matrix(W_dec, F).abs().detach().cpu().double().numpy()
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(c, maximize=True)
    return rows, cols, c[rows, cols]


def mcc(W_dec: Tensor, F: Tensor) -> float:
    return float(hungarian_matching(W_dec, F)[2].mean())


def recovered_fraction(W_dec: Tensor, F: Tensor, threshold: float = 0.9) -> float:
    return float((cosine_matrix(W_dec, F).abs().amax(0) >= threshold).float().mean())


def uniqueness(W_dec: Tensor, F: Tensor, threshold: float = 0.9) -> float:
    c = cosine_matrix(W_dec, F).abs()
    best, arg = c.max(0)
    rec = best >= threshold
    if not bool(rec.any()):
        return 0.0
    return float(arg[rec].unique().numel() / rec.sum().item())


def precision_recall(
    z: Tensor, presence: Tensor, latents: np.ndarray, features: np.ndarray
) -> tuple[Tensor, Tensor]:
    """z (batch, d_sae), presence (batch, n) bool; per matched pair (latents[k], features[k])."""
    fires = z[:, torch.as_tensor(latents)] != 0
    present = presence[:, torch.as_tensor(features)]
    both = (fires & present).float().sum(0)
    precision = both / fires.float().sum(0).clamp(min=1)
    recall = both / present.float().sum(0).clamp(min=1)
    return precision, recall


def score(
    W_dec: Tensor, F: Tensor, z: Tensor | None = None, presence: Tensor | None = None, threshold: float = 0.9
) -> dict:
    """Every ground-truth metric for one SAE."""
    rows, cols, cos = hungarian_matching(W_dec, F)
    out = {
        "mcc": float(cos.mean()),
        "recovered": recovered_fraction(W_dec, F, threshold),
        "uniqueness": uniqueness(W_dec, F, threshold),
    }
    if z is not None and presence is not None:
        good = cos >= threshold
        if good.any():
            p, r = precision_recall(z, presence, rows[good], cols[good])
            out["precision"] = float(p.mean())
            out["recall"] = float(r.mean())
        else:
            out["precision"] = out["recall"] = 0.0
    return out


def best_matches(W_dec: Tensor, F: Tensor) -> tuple[Tensor, Tensor]:
    """For each latent, the true feature its decoder row is most aligned with, and that |cos|."""
    cos = cosine_matrix(W_dec, F).abs()
    best = cos.max(dim=1)
    return best.indices, best.values
