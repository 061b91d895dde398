"""Geometry measures on hand-computed configurations."""

import math

import pytest
import torch

from superposition.toy import geometry as g


def _polygon(n: int, scale: float = 1.0) -> torch.Tensor:
    theta = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    return scale * torch.stack([torch.cos(theta), torch.sin(theta)])  # (2, n)


def test_orthogonal_pair():
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(g.feature_norms(W), torch.ones(2))
    assert torch.allclose(g.interference(W), torch.zeros(2))
    assert torch.allclose(g.feature_dimensionality(W), torch.ones(2))
    assert g.dimensions_per_feature(W).item() == pytest.approx(1.0)
    assert g.angles(W)[0, 1].item() == pytest.approx(90.0)
    assert sorted(g.polar_angle_gaps(W).tolist()) == pytest.approx([90.0, 270.0])


def test_antipodal_pair_in_one_dimension():
    W = torch.tensor([[1.0, -1.0]])
    # (Ŵ_0·W_1)² = 1, so D_0 = 1 / (1 + 1) = 1/2
    assert torch.allclose(g.interference(W), torch.ones(2))
    assert torch.allclose(g.feature_dimensionality(W), torch.full((2,), 0.5))
    assert g.dimensions_per_feature(W).item() == pytest.approx(0.5)
    assert g.angles(W)[0, 1].item() == pytest.approx(180.0)


def test_pentagon():
    W = _polygon(5)
    # Σ_j cos²(θ_ij) = 1 + 2cos²72° + 2cos²144° = 5/2, so D_i = 2/5 and interference = 3/2
    assert torch.allclose(g.feature_dimensionality(W), torch.full((5,), 0.4, dtype=torch.float64))
    assert torch.allclose(g.interference(W), torch.full((5,), 1.5, dtype=torch.float64))
    assert g.dimensions_per_feature(W).item() == pytest.approx(2 / 5)
    assert g.polar_angle_gaps(W).tolist() == pytest.approx([72.0] * 5)


def test_scale_and_unrepresented_feature():
    # norms 2 and 0.5 along the same axis plus a dead feature
    W = torch.tensor([[2.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert g.feature_norms(W).tolist() == pytest.approx([2.0, 0.5, 0.0])
    # Ŵ_0·W_1 = 0.5 → interference_0 = 0.25;  Ŵ_1·W_0 = 2 → interference_1 = 4
    assert g.interference(W).tolist() == pytest.approx([0.25, 4.0, 0.0])
    # D_0 = 4 / (4 + 0.25), D_1 = 0.25 / (0.25 + 4), dead feature 0
    assert g.feature_dimensionality(W).tolist() == pytest.approx([4 / 4.25, 0.25 / 4.25, 0.0])
    assert g.represented(W).tolist() == [True, False, False]
    # m / ‖W‖_F² = 2 / 4.25
    assert g.dimensions_per_feature(W).item() == pytest.approx(2 / 4.25)
    assert math.isnan(g.angles(W)[0, 2].item())


def test_tetrahedron_in_three_dimensions():
    W = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T / math.sqrt(3)
    # cos = -1/3 between vertices: D = 1 / (1 + 3/9) = 3/4
    assert torch.allclose(g.feature_dimensionality(W), torch.full((4,), 0.75, dtype=torch.float64))
    assert g.angles(W)[0, 1].item() == pytest.approx(math.degrees(math.acos(-1 / 3)))


def test_batched_over_instances():
    W = torch.stack([_polygon(5), torch.cat([_polygon(2), torch.zeros(2, 3, dtype=torch.float64)], 1)])
    dims = g.feature_dimensionality(W)
    assert dims.shape == (2, 5)
    assert torch.allclose(dims[0], torch.full((5,), 0.4, dtype=torch.float64))
    assert torch.allclose(dims[1], torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64))
    assert g.in_superposition(W).sum(1).tolist() == [5, 2]
