"""SAE quality metrics, per instance: x and x̂ are (batch, inst, d_in), z is (batch, inst, d_sae).

L0 = E[#{j : z_j ≠ 0}]            L1 = E[Σ_j |z_j|]            MSE = E[‖x − x̂‖²]
explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²   (relative to the mean, not to zero)
density_j = P(z_j ≠ 0); dead: density 0; dense: density above 1% / 10%
shrinkage γ = Σ x̂·x / Σ‖x̂‖², the scale that best maps x̂ onto x (γ > 1: x̂ is shrunk)
cossim = E[cos(x, x̂)]            relative_norm = E[‖x̂‖ / ‖x‖]   (SAEBench's l2_ratio)
explained_variance_per_token = E_t[1 − ‖x_t − x̂_t‖² / ‖x_t − x̄_batch‖²]   (SAEBench's legacy EV: per
    token, against the mean of its batch; pooled `explained_variance` is the one to compare SAEs by)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def l0(z: Tensor) -> Tensor:
    return (z != 0).sum(-1).float().mean(0)


def l1(z: Tensor) -> Tensor:
    return z.abs().sum(-1).mean(0)


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    return (x_hat - x).square().sum(-1).mean(0)


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    resid = (x - x_hat).square().sum((0, 2))
    total = (x - x.mean(0, keepdim=True)).square().sum((0, 2))
    return 1 - resid / total.clamp(min=1e-12)


def latent_density(z: Tensor) -> Tensor:
    """Float[Tensor, "inst d_sae"]: fraction of examples on which each latent fires."""
    return (z != 0).float().mean(0)


def shrinkage(x: Tensor, x_hat: Tensor) -> Tensor:
    return (x_hat * x).sum((0, 2)) / x_hat.square().sum((0, 2)).clamp(min=1e-12)


def _nonzero(v: Tensor) -> Tensor:
    """v with values below 1e-4 in size replaced by 1 (SAEBench's guard for a zero norm)."""
    return torch.where(v.abs() < 1e-4, torch.ones_like(v), v)


def _cos(x: Tensor, x_hat: Tensor) -> Tensor:
    return (x * x_hat).sum(-1) / _nonzero(x.norm(dim=-1) * x_hat.norm(dim=-1))


@dataclass
class Accumulator:
    """Streams batches and returns every metric per instance, with density over all examples."""

    n: int = 0
    sums: dict | None = None

    def add(self, x: Tensor, x_hat: Tensor, z: Tensor) -> None:
        b = x.shape[0]
        part = {
            "sq_err": (x - x_hat).square().sum((0, 2)),
            "x_sum": x.sum(0),
            "x_sq": x.square().sum((0, 2)),
            "l0": (z != 0).sum((0, 2)).float(),
            "l1": z.abs().sum((0, 2)),
            "fires": (z != 0).float().sum(0),
            "dot": (x_hat * x).sum((0, 2)),
            "xhat_sq": x_hat.square().sum((0, 2)),
            "cos": _cos(x, x_hat).sum(0),
            "norm_ratio": (x_hat.norm(dim=-1) / _nonzero(x.norm(dim=-1))).sum(0),
            "ev_token": (
                1 - (x - x_hat).square().sum(-1) / _nonzero((x - x.mean(0, keepdim=True)).square().sum(-1))
            ).sum(0),
        }
        self.sums = part if self.sums is None else {k: self.sums[k] + v for k, v in part.items()}
        self.n += b

    def result(self) -> dict[str, Tensor]:
        s, n = self.sums, self.n
        total_var = s["x_sq"] - s["x_sum"].square().sum(-1) / n
        density = s["fires"] / n
        return {
            "l0": s["l0"] / n,
            "l1": s["l1"] / n,
            "mse": s["sq_err"] / n,
            "explained_variance": 1 - s["sq_err"] / total_var.clamp(min=1e-12),
            "frac_dead": (density == 0).float().mean(-1),
            "frac_dense_1pct": (density > 0.01).float().mean(-1),
            "frac_dense_10pct": (density > 0.10).float().mean(-1),
            "shrinkage": s["dot"] / s["xhat_sq"].clamp(min=1e-12),
            "cossim": s["cos"] / n,
            "relative_norm": s["norm_ratio"] / n,
            "explained_variance_per_token": s["ev_token"] / n,
            "density": density,
        }
