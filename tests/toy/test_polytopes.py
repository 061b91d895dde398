"""Geometry names on constructed cases: rotated, permuted and slightly perturbed shapes keep their
names (the quick `polytopes` run is tested in tests/experiments)."""

import math

import pytest
import torch

from superposition.toy.compare import polygon as _polygon
from superposition.toy.polytopes import _square_antiprism, components, name_geometry


def _rotated(V: torch.Tensor, seed: int = 0, noise: float = 0.02) -> torch.Tensor:
    """V (d, m) turned by a random rotation, its columns permuted, a little noise, one unrepresented
    feature appended."""
    g = torch.Generator().manual_seed(seed)
    d = V.shape[0]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    W = q @ V[:, torch.randperm(V.shape[1], generator=g)]
    W = W + noise * torch.randn(W.shape, generator=g, dtype=torch.float64)
    return torch.cat([W, 0.05 * torch.randn(d, 1, generator=g, dtype=torch.float64)], 1)


def _in3(V):
    return torch.cat([V, torch.zeros(3 - V.shape[0], V.shape[1], dtype=V.dtype)], 0)


TETRA = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T / math.sqrt(3)
BIPYRAMID = torch.cat(
    [_in3(_polygon(3)), torch.tensor([[0, 0], [0, 0], [1.2, -1.2]], dtype=torch.float64)], 1
)
CASES = {
    "tetrahedron": TETRA,
    "triangular bipyramid": BIPYRAMID,  # poles stronger than the equator: the name ignores norms
    "octahedron": torch.cat([torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64)], 1),
    "square antiprism": _square_antiprism(),
    "triangle": _in3(_polygon(3)),
    "pentagon": _polygon(5),
    "square": _polygon(4),
    "digon": _polygon(2),
    "3 orthogonal features": torch.eye(3, dtype=torch.float64),
}


@pytest.mark.parametrize("name", list(CASES))
def test_constructed_shapes_are_named(name):
    for seed in range(3):
        assert name_geometry(_rotated(CASES[name], seed)) == name


def test_components_and_unknown_shapes():
    W = torch.cat([_in3(_polygon(3))[:, :3], torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64)], 1)
    assert components(W) == [[0, 1, 2], [3]]
    assert name_geometry(W) == "triangle + dedicated dimension"
    skew = torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]], dtype=torch.float64)
    assert name_geometry(skew) == "3 features in 2 dimensions"
    assert name_geometry(torch.zeros(3, 4)) == "no feature represented"
