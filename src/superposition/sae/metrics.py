"""SAE quality metrics, per instance: x and x̂ are (batch, inst, d_in), z is (batch, inst, d_sae).

L0 = E[#{j : z_j ≠ 0}]            L1 = E[Σ_j |z_j|]            MSE = E[‖x − x̂‖²]
explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²   (relative to the mean, not to zero)
density_j = P(z_j ≠ 0); dead: density 0; dense: density above 1% / 10%
shrinkage γ = Σ x̂·x / Σ‖x̂‖², the scale that best maps x̂ onto x (γ > 1: x̂ is shrunk)
"""

from __future__ import annotations

from dataclasses import dataclass

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
            "density": density,
        }
