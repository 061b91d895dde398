"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre ⊙ H(pre − θ), one threshold θ per latent,
trained with a straight-through estimator and an L0 penalty.

The step function H has zero derivative almost everywhere, so θ gets pseudo-derivatives with a
rectangle kernel K(u) = 1[|u| < ½] of bandwidth ε:

    ∂/∂θ JumpReLU_θ(z) = −(θ/ε) K((z − θ)/ε)        ∂/∂θ H(z − θ) = −(1/ε) K((z − θ)/ε)

The pre-activations get the ordinary gradient through the JumpReLU and none through the L0 term.
θ = exp(log θ) keeps it positive. Loss: ‖x − x̂‖² + λ L0, or with `l0_target` λ (L0/target − 1)².
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from superposition.config import Config
from superposition.sae.base import BatchedSAE, LossOut, StepState, architecture, per_instance
from superposition.sae.sparse import Latents

_R2 = 2**0.5  # see standard.L1_SWEEP
L0_SWEEP = [round(0.005 * _R2**i, 5) for i in range(8)]


class JumpReLUOptions(Config):
    l0_coefficient: float | list[float] = per_instance(1.0, "jumprelu: weight λ of the L0 penalty")
    l0_target: float | None = Field(
        None, gt=0.0, description="jumprelu: penalise (L0/target − 1)² instead of L0"
    )
    bandwidth: float = Field(
        0.05, gt=0.0, description="jumprelu: width of the rectangle kernel of the straight-through estimator"
    )
    init_threshold: float = Field(
        0.2, gt=0.0, description="jumprelu: starting threshold (short runs need it near the activation scale)"
    )


def _rect(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


def _log_threshold_grad(grad: Tensor, pre: Tensor, theta: Tensor, eps: float, scale) -> Tensor:
    """Pseudo-gradient −(scale/ε) K((z − θ)/ε) per entry, times θ for the chain rule through
    θ = exp(log θ); scale is θ for the JumpReLU and 1 for the step function. Autograd sums it over
    the axes that log θ was broadcast along (the batch)."""
    return -(scale / eps) * _rect((pre - theta) / eps) * grad * theta


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, log_threshold: Tensor, bandwidth: float) -> Tensor:
        theta = log_threshold.exp()
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta)
        return grad_pre, _log_threshold_grad(grad, pre, theta, ctx.bandwidth, scale=theta), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, log_threshold: Tensor, bandwidth: float) -> Tensor:
        theta = log_threshold.exp()
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        return None, _log_threshold_grad(grad, pre, theta, ctx.bandwidth, scale=1.0), None


@architecture
class JumpReLUSAE(BatchedSAE):
    name = "jumprelu"
    Options = JumpReLUOptions
    penalty_sweep = ("l0_coefficient", L0_SWEEP)
    surrogate_gradients = ("log_threshold",)  # the rectangle-kernel pseudo-gradient

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.log_threshold = nn.Parameter(
            torch.full((cfg.n_instances, cfg.d_sae), math.log(cfg.init_threshold))
        )
        self.register_buffer("l0_coefficient", cfg.per_instance("l0_coefficient"))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold)

    def loss(self, batch: Tensor, state: StepState) -> LossOut:
        x, y = self.split(batch)
        enc = self.encoded(x)
        eps = self.cfg.bandwidth
        with torch.no_grad():  # every latent that is active or inside the kernel's window around θ
            near = enc.pre > self.threshold.unsqueeze(0) - eps / 2
        pre = Latents.pre_activations(enc, near)
        log_threshold = pre.per_latent(self.log_threshold)
        z = pre.map(_JumpReLU.apply(pre.values, log_threshold, eps))
        x_hat = self.reconstruct(z, x)
        mse = self.mse(y, x_hat)
        l0 = pre.mean_sum(_Step.apply(pre.values, log_threshold, eps))
        sparsity = l0 if self.cfg.l0_target is None else (l0 / self.cfg.l0_target - 1).square()
        total = (mse + state.sparsity_scale * self.l0_coefficient * sparsity).sum()
        active_l0, fired = z.l0_and_fired()
        return LossOut(total, {"mse": mse, "l0": l0}, z.dense, x_hat, fired, active_l0)

    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        return {**super().saved_tensors(i), "threshold": self.threshold[i]}

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        super().load_saved(t)
        self.log_threshold.copy_(t["threshold"].clamp(min=1e-12).log().unsqueeze(0))
