"""Worst-case input perturbations of toy models (the paper's "superposition and adversarial
examples"): for inputs x and a budget ‖δ‖₂ ≤ ε, projected gradient ascent with random restarts on

    ΔL(δ) = L(x + δ; target x) − L(x; target x),   L = mean_i I_i (x_i − f(x)_i)²,

i.e. how much a perturbation of the input can spoil the model's reconstruction of the clean input.
Every instance of a batched model is attacked at once (its own δ), each example on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _losses(model, x: Tensor, target: Tensor) -> Tensor:
    """(batch, inst): importance-weighted squared error per example, mean over features."""
    return ((model(x) - target).square() * model.importance.unsqueeze(0)).mean(-1)


def _project(delta: Tensor, eps: float) -> Tensor:
    norm = delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return delta * (eps / norm).clamp(max=1.0)


def attack(
    model, x: Tensor, eps: float, steps: int = 40, restarts: int = 3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Projected gradient ascent: (the best loss increase found per example, (batch, inst); the
    matching perturbations δ, shaped as x (batch, inst, feat)). Steps are normalised gradients of
    length 2.5·ε/steps (so a run can cross the ball), each start a random point on the sphere."""
    with torch.no_grad():
        clean = _losses(model, x, x)
    best = torch.full_like(clean, -float("inf"))
    best_delta = torch.zeros_like(x)
    step = 2.5 * eps / steps
    for _ in range(restarts):
        delta = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        delta = (delta / delta.norm(dim=-1, keepdim=True) * eps).requires_grad_(True)
        for _ in range(steps):
            gain = _losses(model, x + delta, x).sum()
            (g,) = torch.autograd.grad(gain, delta)
            with torch.no_grad():
                delta += step * g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                delta.copy_(_project(delta, eps))
        with torch.no_grad():
            gain = _losses(model, x + delta, x) - clean
            better = gain > best
            best = torch.where(better, gain, best)
            best_delta = torch.where(better.unsqueeze(-1), delta.detach(), best_delta)
    return best, best_delta


@torch.no_grad()
def random_gain(
    model, x: Tensor, eps: float, draws: int = 8, generator: torch.Generator | None = None
) -> Tensor:
    """(batch, inst): the mean loss increase over random perturbations of norm ε (the baseline an
    attack is compared with)."""
    clean = _losses(model, x, x)
    total = torch.zeros_like(clean)
    for _ in range(draws):
        delta = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        total += _losses(model, x + delta / delta.norm(dim=-1, keepdim=True) * eps, x) - clean
    return total / draws
