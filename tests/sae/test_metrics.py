"""Metrics and ground-truth scores against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from superposition.sae import ground_truth as gt
from superposition.sae import metrics as M


def _bid(rows):
    """(batch, d) -> (batch, 1, d)."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1)


def test_l0_l1_mse_density():
    z = _bid([[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]])
    assert M.l0(z).item() == pytest.approx(1.5)
    assert M.l1(z).item() == pytest.approx(2.0)
    assert M.latent_density(z)[0].tolist() == pytest.approx([0.5, 1.0, 0.0])
    x, xh = _bid([[1.0, 0.0], [0.0, 2.0]]), _bid([[1.0, 1.0], [0.0, 0.0]])
    assert M.mse(x, xh).item() == pytest.approx((1 + 4) / 2)


def test_explained_variance_is_relative_to_the_mean():
    x = _bid([[1.0, 1.0], [3.0, 1.0]])  # mean (2, 1): total variance 1 + 1 = 2
    assert M.explained_variance(x, x).item() == pytest.approx(1.0)
    mean = _bid([[2.0, 1.0], [2.0, 1.0]])
    assert M.explained_variance(x, mean).item() == pytest.approx(0.0)  # predicting the mean explains nothing
    zero = torch.zeros_like(x)
    assert M.explained_variance(x, zero).item() == pytest.approx(
        1 - (2 + 10) / 2
    )  # worse than the mean: negative
    half = _bid([[1.0, 1.0], [2.0, 1.0]])  # residual 1 on one coordinate
    assert M.explained_variance(x, half).item() == pytest.approx(0.5)


def test_shrinkage():
    x = _bid([[1.0, 2.0], [3.0, -1.0]])
    assert M.shrinkage(x, 0.5 * x).item() == pytest.approx(2.0)
    assert M.shrinkage(x, x).item() == pytest.approx(1.0)


def test_accumulator_matches_direct_formulas_and_dead_dense():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, 5, generator=g)
    xh = x + 0.3 * torch.randn(300, 2, 5, generator=g)
    z = torch.relu(torch.randn(300, 2, 50, generator=g) - 1.0)
    z[:, :, :10] = 0.0  # dead
    z[:, :, 10] = 1.0  # fires always: dense
    acc = M.Accumulator()
    for s in range(0, 300, 70):
        acc.add(x[s : s + 70], xh[s : s + 70], z[s : s + 70])
    r = acc.result()
    assert torch.allclose(r["explained_variance"], M.explained_variance(x, xh), atol=1e-5)
    assert torch.allclose(r["mse"], M.mse(x, xh), atol=1e-5)
    assert torch.allclose(r["l0"], M.l0(z), atol=1e-5)
    assert torch.allclose(r["shrinkage"], M.shrinkage(x, xh), atol=1e-5)
    assert r["frac_dead"].tolist() == pytest.approx([10 / 50] * 2)
    # P(N(0,1) > 1) ≈ 0.16 so every live latent but the constant one exceeds 10% density too
    assert r["frac_dense_10pct"][0].item() == pytest.approx(40 / 50, abs=0.04)


def test_hungarian_mcc_on_constructed_dictionary():
    F = torch.eye(3)
    # latents: feature 2 exactly, feature 0 at 60°, a duplicate of feature 2 (negated), feature 1 at cos 0.95
    W = torch.tensor(
        [[0, 0, 1.0], [0.5, math.sqrt(3) / 2, 0], [0, 0, -1.0], [0, 0.95, math.sqrt(1 - 0.95**2)]]
    )
    # best one-to-one matching: latent0-f2 (1), latent3-f1 (0.95), latent1-f0 (0.5) → mean 0.8167
    assert gt.mcc(W, F) == pytest.approx((1 + 0.95 + 0.5) / 3)
    assert gt.recovered_fraction(W, F, 0.9) == pytest.approx(2 / 3)
    assert gt.uniqueness(W, F, 0.9) == pytest.approx(1.0)
    W2 = torch.tensor([[1.0, 0, 0], [0, 1.0, 0.05]])  # one latent close to both? no: distinct
    assert gt.uniqueness(W2, torch.tensor([[1.0, 0, 0], [0.99, 0.141, 0]]), 0.9) == pytest.approx(0.5)


def test_precision_recall():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    presence = torch.tensor([[True, False], [False, False], [False, True], [True, True]])
    p, r = gt.precision_recall(z, presence, np.array([0, 1]), np.array([0, 1]))
    # latent 0 fires on rows 0,1; feature 0 present on rows 0,3 → precision 1/2, recall 1/2
    # latent 1 fires on row 2; feature 1 present on rows 2,3 → precision 1, recall 1/2
    assert p.tolist() == pytest.approx([0.5, 1.0]) and r.tolist() == pytest.approx([0.5, 0.5])
