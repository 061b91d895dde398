"""Names for the geometry a toy model's features form: digon, triangle, pentagon, tetrahedron,
triangular bipyramid, octahedron, square antiprism, ... in a tiny model (`name_geometry`), and in a
large one (400 features in 30 dimensions) the census of the polytopes its features form
(`feature_groups`, `census`): how many digons, triangles, tetrahedra, pentagons and square antiprisms,
the share of the features in each and the dimensions each takes.

The represented features (‖W_i‖ above a threshold) are split into *components*: groups joined by
non-zero interference (|cos| > 0.1), which live in mutually orthogonal subspaces. Each component
is named by comparing its sorted pairwise cosines with those of reference shapes of the same size
and rank; the whole is then named from its components (a triangle and a digon in orthogonal
subspaces of 3 dimensions form a triangular bipyramid; three orthogonal digons an octahedron).
Feature norms are not part of the name: in shapes like the triangular bipyramid the features are
not all equally strong, so the norms are reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from superposition.toy.compare import polygon

_POLYGONS = {2: "digon", 3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon"}
TOL = 0.15  # largest difference between sorted cosines and the reference's
# In a large model, the |cos| that joins two features into one group: between the interference that
# trained weights leave between polytopes (mostly under 0.2 in the 400-in-30 model) and the smallest
# |cos| that holds a polytope together (the tetrahedron's 1/3; a pentagon or square antiprism stays
# joined by its larger cosines). A tiny model's solution is named whole, with 0.1 (`components`).
LINK = 0.25


def _unit(V: Tensor) -> Tensor:
    return V / V.norm(dim=0, keepdim=True)


def _square_antiprism() -> Tensor:
    """Two squares on the unit sphere, one turned by 45°, at heights ±z with all edges equal."""

    def vertices(z: float) -> Tensor:
        r = math.sqrt(1 - z * z)
        a = torch.arange(4, dtype=torch.float64) * math.pi / 2
        top = torch.stack([r * a.cos(), r * a.sin(), torch.full((4,), z, dtype=torch.float64)])
        bot = torch.stack(
            [
                r * (a + math.pi / 4).cos(),
                r * (a + math.pi / 4).sin(),
                torch.full((4,), -z, dtype=torch.float64),
            ]
        )
        return torch.cat([top, bot], 1)

    lo, hi = 0.0, 0.99
    for _ in range(60):  # bisect on z: the square's edge against the edge between the squares
        z = (lo + hi) / 2
        V = vertices(z)
        side, cross = (V[:, 0] - V[:, 1]).norm(), (V[:, 0] - V[:, 4]).norm()
        lo, hi = (z, hi) if cross < side else (lo, z)
    return vertices((lo + hi) / 2)


@cache
def references() -> list[tuple[str, int, int, Tensor]]:
    """(name, features, rank, sorted off-diagonal cosines) of every reference component shape."""
    shapes: list[tuple[str, Tensor]] = [(n, polygon(m)) for m, n in _POLYGONS.items() if m != 4]
    tetra = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64).T
    cube = torch.tensor([[x, y, z] for x in (1, -1) for y in (1, -1) for z in (1, -1)], dtype=torch.float64).T
    phi = (1 + 5**0.5) / 2
    ico = []
    for a in (1, -1):
        for b in (phi, -phi):
            ico += [[0, a, b], [a, b, 0], [b, 0, a]]
    shapes += [
        ("tetrahedron", tetra),
        ("cube", cube),
        ("square antiprism", _square_antiprism()),
        ("icosahedron", torch.tensor(ico, dtype=torch.float64).T),
    ]
    out = []
    for name, V in shapes:
        U = _unit(V)
        out.append((name, U.shape[1], _rank(U), _sorted_cosines(U)))
    return out


def _rank(U: Tensor) -> int:
    """Dimensions the directions U span, ignoring what is under a fifth of the largest singular value
    (trained weights are never exactly degenerate)."""
    return int(torch.linalg.matrix_rank(U, rtol=0.2))


def _sorted_cosines(U: Tensor) -> Tensor:
    C = U.T @ U
    return C[torch.triu(torch.ones_like(C, dtype=torch.bool), 1)].sort().values


def components(W: Tensor, threshold: float = 0.5, link: float = 0.1) -> list[list[int]]:
    """The represented features of W (d, n), grouped by interference (|cos| > link)."""
    W = W.detach().double()
    rep = (W.norm(dim=0) > threshold).nonzero().squeeze(1).tolist()
    if not rep:
        return []
    U = _unit(W[:, rep])
    adj = (U.T @ U).abs() > link
    groups, seen = [], set()
    for start in range(len(rep)):
        if start in seen:
            continue
        stack, group = [start], []
        seen.add(start)
        while stack:
            i = stack.pop()
            group.append(rep[i])
            for j in adj[i].nonzero().squeeze(1).tolist():
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        groups.append(sorted(group))
    return sorted(groups, key=lambda g: (-len(g), g))


def name_component(U: Tensor, tol: float = TOL) -> str:
    """The name of one interfering group of unit directions U (d, m): the reference shape of the
    same size whose sorted pairwise cosines are all within `tol` of U's. The cosines fix the shape;
    the rank is not asked to match, since a slightly sagging triangle (cosines −0.45 rather than
    −0.5) already spans 3 dimensions by any threshold that trained weights need."""
    m = U.shape[1]
    if m == 1:
        return "dedicated dimension"
    rank = _rank(U)
    cos = _sorted_cosines(U)
    for name, size, _, ref in references():
        if size == m and float((cos - ref).abs().max()) < tol:
            return name
    return f"{m} features in {rank} dimensions"


_WHOLES = {
    (("digon", "digon"), 2): "square",
    (("digon", "digon", "digon"), 3): "octahedron",
    (("digon", "triangle"), 3): "triangular bipyramid",
    (("digon", "pentagon"), 3): "pentagonal bipyramid",
    (("digon", "square"), 3): "octahedron",
}


def name_geometry(W: Tensor, threshold: float = 0.5) -> str:
    """The geometry of W's represented features (W: (d, n), column i feature i's direction)."""
    groups = components(W, threshold)
    if not groups:
        return "no feature represented"
    W = W.detach().double()
    names = [name_component(_unit(W[:, g])) for g in groups]
    rank = _rank(_unit(W[:, [i for g in groups for i in g]]))
    whole = _WHOLES.get((tuple(sorted(names)), rank))
    if whole:
        return whole
    if all(n == "dedicated dimension" for n in names):
        return f"{len(names)} orthogonal features"
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return " + ".join(f"{c} {n}s" if c > 1 else n for n, c in counts.items())


# ---------------------------------------------------------------------- groups inside a large model
# The kinds a group of features is counted as; a group that fits none of the reference shapes is "other".
KINDS = ("dedicated dimension", "digon", "triangle", "tetrahedron", "pentagon", "square antiprism", "hexagon",
         "heptagon", "octagon", "cube", "icosahedron", "other")  # fmt: skip
# the dimensionality each feature of a uniform polytope has (the paper's sticky fractions)
FRACTIONS = {"dedicated dimension": 1.0, "digon": 1 / 2, "triangle": 2 / 3, "tetrahedron": 3 / 4,
             "pentagon": 2 / 5, "square antiprism": 3 / 8}  # fmt: skip


@dataclass
class FeatureGroup:
    """Features that interfere with each other and with no other represented feature: they share a
    subspace of `rank` dimensions, orthogonal to every other group's."""

    features: list[int]
    kind: str  # one of KINDS
    name: str  # name_component's ("pentagon", "5 features in 3 dimensions")
    rank: int
    dimensionality: list[float]  # each feature's D_i (toy/geometry.feature_dimensionality)

    def as_dict(self) -> dict:
        return {"features": self.features, "kind": self.kind, "name": self.name, "rank": self.rank,
                "dimensionality": [round(v, 4) for v in self.dimensionality]}  # fmt: skip


def feature_groups(
    W: Tensor, threshold: float = 0.5, link: float = LINK, tol: float = TOL
) -> list[FeatureGroup]:
    """The represented features of W (d, n) split into groups that interfere (|cos| > `link`: the
    components of that graph) and each group named by its geometry: its size, the rank of its
    directions, and its sorted pairwise cosines against those of the reference shapes (within
    `tol`)."""
    from superposition.toy.geometry import feature_dimensionality

    W = W.detach().double()
    dims = feature_dimensionality(W)
    out = []
    for g in components(W, threshold, link):
        U = _unit(W[:, g])
        name = name_component(U, tol)
        out.append(FeatureGroup(g, name if name in KINDS else "other", name, _rank(U), dims[g].tolist()))
    return out


def census(W: Tensor, threshold: float = 0.5, link: float = LINK, tol: float = TOL) -> list[dict]:
    """Per instance of W (inst, d, n): its groups, and per kind how many groups, how many features,
    their share of the represented features and the dimensions they take: the sum of their features'
    dimensionalities D_i (a polytope alone in its subspace takes its rank: a tetrahedron 4 × 3/4; over
    all features the sum never exceeds d, since Σ_i D_i ≤ rank W)."""
    out = []
    for w in W:
        groups = feature_groups(w, threshold, link, tol)
        n_rep = sum(len(g.features) for g in groups)
        kinds: dict[str, dict] = {}
        for g in groups:
            k = kinds.setdefault(g.kind, {"groups": 0, "features": 0, "dimensions": 0.0})
            k["groups"] += 1
            k["features"] += len(g.features)
            k["dimensions"] += sum(g.dimensionality)
        for k in kinds.values():
            k["share"] = k["features"] / n_rep if n_rep else 0.0
            k["dimensions"] = round(k["dimensions"], 3)
        out.append({"kinds": dict(sorted(kinds.items(), key=lambda kv: KINDS.index(kv[0]))),
                    "groups": [g.as_dict() for g in groups], "n_represented": n_rep})  # fmt: skip
    return out


def kind_of_each_feature(groups: list[FeatureGroup], n: int) -> list[str]:
    """The kind of the group each of n features is in ("not represented" for the others)."""
    kinds = ["not represented"] * n
    for g in groups:
        for i in g.features:
            kinds[i] = g.kind
    return kinds
