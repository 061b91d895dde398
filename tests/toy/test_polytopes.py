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


# ---------------------------------------------------------------------- polytopes inside a large model
def _orthogonal_blocks(shapes, d: int, seed: int, noise: float, extra: int = 6):
    """The shapes' directions in mutually orthogonal subspaces of a d-dimensional space, turned by one
    random rotation, the features shuffled, noise of norm about `noise` added to each, and `extra`
    unrepresented features: W (d, n) and the true groups as sets of columns."""
    g = torch.Generator().manual_seed(seed)
    blocks, start = [], 0
    for V in shapes:
        r, m = V.shape
        block = torch.zeros(d, m, dtype=torch.float64)
        block[start : start + r] = V / V.norm(dim=0, keepdim=True)
        blocks.append(block)
        start += r
    W = torch.cat([*blocks, 0.05 * torch.randn(d, extra, generator=g, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    perm = torch.randperm(W.shape[1], generator=g)
    W = (q @ W)[:, perm]
    W = W + noise / math.sqrt(d) * torch.randn(W.shape, generator=g, dtype=torch.float64)  # |noise| ≈ noise
    where = {int(old): new for new, old in enumerate(perm.tolist())}
    truth, at = [], 0
    for V in shapes:
        truth.append(sorted(where[at + j] for j in range(V.shape[1])))
        at += V.shape[1]
    return W, truth


BLOCKS = {"digon": _polygon(2), "triangle": _polygon(3), "tetrahedron": TETRA, "pentagon": _polygon(5)}


@pytest.mark.parametrize("seed", range(5))
def test_a_model_of_orthogonal_polytopes_is_split_and_named_exactly(seed):
    from superposition.toy.polytopes import census, feature_groups

    W, truth = _orthogonal_blocks(list(BLOCKS.values()), d=10, seed=seed, noise=0.02)
    groups = feature_groups(W)
    assert sorted((g.kind, g.features) for g in groups) == sorted(zip(BLOCKS, truth))
    for g in groups:  # each feature's dimensionality is its polytope's fraction
        frac = {"digon": 1 / 2, "triangle": 2 / 3, "tetrahedron": 3 / 4, "pentagon": 2 / 5}[g.kind]
        assert all(abs(v - frac) < 0.06 for v in g.dimensionality), (g.kind, g.dimensionality)
    c = census(W.unsqueeze(0))[0]
    assert c["n_represented"] == 14 and {k: v["groups"] for k, v in c["kinds"].items()} == dict.fromkeys(
        BLOCKS, 1
    )
    dims = {k: v["dimensions"] for k, v in c["kinds"].items()}
    assert dims == pytest.approx({"digon": 1, "triangle": 2, "tetrahedron": 3, "pentagon": 2}, abs=0.15)
    assert c["kinds"]["pentagon"]["share"] == pytest.approx(5 / 14)


def test_the_naming_holds_up_to_a_noise_and_fails_loudly_beyond_it():
    """A sweep of the perturbation (noise of norm `noise` on unit directions, 8 seeds each): every
    group is split and named right up to 0.1; from 0.15 the cosines leave the naming tolerance (and by
    0.3 cross-group cosines pass the link and groups merge), so by 0.3 none is right; and at no noise
    is a group given a wrong polytope's name: what cannot be named is "other"."""
    from superposition.toy.polytopes import feature_groups

    right, wrongly_named = {}, 0
    for noise in (0.0, 0.02, 0.05, 0.1, 0.15, 0.3, 0.5):
        ok = 0
        for seed in range(8):
            W, truth = _orthogonal_blocks(list(BLOCKS.values()), d=10, seed=seed, noise=noise)
            groups = feature_groups(W)
            ok += sorted((g.kind, g.features) for g in groups) == sorted(zip(BLOCKS, truth))
            true = set(zip(BLOCKS, map(tuple, truth)))
            wrongly_named += sum(
                g.kind != "other" and (g.kind, tuple(g.features)) not in true for g in groups
            )
        right[noise] = ok / 8
    assert right[0.0] == right[0.02] == right[0.05] == right[0.1] == 1.0, right
    assert right[0.15] < 1.0 and right[0.3] == right[0.5] == 0.0, right
    assert wrongly_named == 0


def test_the_tolerances_sweep_shows_where_naming_breaks():
    """At noise 0.05, the naming tolerance (largest gap between sorted cosines and a reference's) works
    from 0.1 up and breaks below 0.05 (groups become "other"); the link (the |cos| that joins two
    features) works from 0.1 up to 0.3, below the tetrahedron's 1/3, and below 0.1 the noise joins
    the groups."""
    from superposition.toy.polytopes import feature_groups

    def right(**kw):
        ok = 0
        for seed in range(8):
            W, truth = _orthogonal_blocks(list(BLOCKS.values()), d=10, seed=seed, noise=0.05)
            ok += sorted((g.kind, g.features) for g in feature_groups(W, **kw)) == sorted(zip(BLOCKS, truth))
        return ok / 8

    assert [right(tol=t) for t in (0.1, 0.15, 0.3, 0.6)] == [1.0] * 4
    assert right(tol=0.01) == right(tol=0.02) == 0.0
    assert [right(link=k) for k in (0.1, 0.2, 0.3)] == [1.0] * 3
    assert right(link=0.05) == 0.0 and right(link=0.4) < 1.0


def test_the_dimensions_kinds_take_never_exceed_the_hidden_dimensions():
    """Σ_i D_i ≤ rank W for any W (Cauchy–Schwarz on ‖W_i‖⁴ against (WWᵀ)^{±1/2}), so the census never
    hands out more dimensions than the model has, however the groups come out; a tight frame (the
    tetrahedron, the pentagon) reaches it, and the equal-edged square antiprism, not quite tight, nearly."""
    from superposition.toy.polytopes import census

    g = torch.Generator().manual_seed(0)
    for d, n in ((5, 40), (10, 30), (30, 400), (8, 8)):
        W = torch.randn(3, d, n, generator=g, dtype=torch.float64) * torch.rand(
            3, 1, n, generator=g, dtype=torch.float64
        )
        for c in census(W, threshold=0.0):
            assert sum(k["dimensions"] for k in c["kinds"].values()) <= d + 1e-6
    for V, tol in ((TETRA, 1e-3), (_polygon(5), 1e-3), (_square_antiprism(), 0.1)):
        (c,) = census(V.unsqueeze(0))
        assert sum(k["dimensions"] for k in c["kinds"].values()) == pytest.approx(V.shape[0], abs=tol)
