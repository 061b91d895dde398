"""Adversarial attacks on toy models with known answers: a model without superposition (W = I)
can be hurt by at most ε²·max(I)/n and the attack finds exactly that; a pentagon (5 features in 2
dimensions) amplifies a push along its shared directions, far beyond that bound."""

import pytest
import torch

from superposition.toy.adversarial import attack, random_gain
from superposition.toy.compare import polygon
from superposition.toy.model import ToyModel


def _model(W: torch.Tensor, b: torch.Tensor, importance: torch.Tensor) -> ToyModel:
    d, n = W.shape
    m = ToyModel(1, n, d, importance.unsqueeze(0))
    with torch.no_grad():
        m.W.copy_(W.unsqueeze(0))
        m.b.copy_(b.unsqueeze(0))
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _inputs(n: int, p: float, count: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    present = torch.rand(count, 1, n, generator=g) < p
    return present * torch.rand(count, 1, n, generator=g)


def test_no_superposition_gives_exactly_the_bound():
    """f(x) = ReLU(x): the best δ of norm ε pushes the most important feature up, ΔL = ε² I_0 / n."""
    importance = torch.tensor([1.0, 0.5, 0.5, 0.5])
    model = _model(torch.eye(4), torch.zeros(4), importance)
    eps = 0.1
    gain, delta = attack(
        model, _inputs(4, 0.3), eps, steps=40, restarts=8, generator=torch.Generator().manual_seed(1)
    )
    bound = eps**2 * 1.0 / 4
    assert gain.max().item() == pytest.approx(bound, rel=1e-3) and gain.max().item() <= bound * (1 + 1e-3)
    # a start with δ_0 < 0 on an absent feature gets no gradient through the ReLU there; restarts
    # find the optimum for almost every example
    assert gain.mean().item() > 0.97 * bound
    assert delta.norm(dim=-1).max().item() <= eps + 1e-6
    assert random_gain(model, _inputs(4, 0.3), eps).mean().item() < 0.5 * gain.mean().item()


def test_a_pentagon_is_more_vulnerable_than_the_bound_without_superposition():
    importance = torch.ones(5)
    pent = _model(polygon(5).float(), torch.full((5,), -0.05), importance)
    eps = 0.1
    gain, _ = attack(
        pent, _inputs(5, 0.05), eps, steps=40, restarts=3, generator=torch.Generator().manual_seed(2)
    )
    assert gain.mean().item() > 2 * eps**2 / 5  # the identity model's bound at this importance
