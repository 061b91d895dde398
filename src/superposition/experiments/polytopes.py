"""`polytopes`: uniform superposition (equal importance) of a few features in 3 hidden dimensions,
and in 2, across sparsity; each solution named by its geometry (toy/polytopes.py), with its feature
dimensionalities and norms, and an interactive 3-D figure of the feature directions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    PositiveFloat,
    ToyConfig,
    instance_records,
    log_sweep,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.toy.polytopes import name_geometry
from superposition.viz import toy as viz


class PolytopesConfig(ToyConfig):
    n_instances: int = Field(8, gt=0, description="sparsities of the sweep (per setting)")
    n_features: int = Field(8, gt=0, description="features of the 3-D setting")
    d_hidden: int = Field(3, gt=0, description="hidden dimensions of the first setting")
    plane_features: int = Field(6, gt=0, description="features of the 2-D setting")
    importance: PositiveFloat | list[PositiveFloat] = 1.0
    replicas: int = Field(3, ge=1, description="initialisations per setting, the lowest loss kept")
    steps: int = Field(10_000, gt=0)
    lr: PositiveFloat = 1e-2
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    max_probability: float = Field(1.0, gt=0.0, le=1.0, description="densest end of the sweep")
    min_probability: float = Field(0.01, gt=0.0, le=1.0, description="sparsest end of the sweep")


@register(
    "polytopes",
    "a few equally important features in 3 dimensions (and in 2) over sparsity: solutions named by their "
    "geometry (digon, triangle, tetrahedron, triangular bipyramid, octahedron, square antiprism, ...)",
    PolytopesConfig,
    quick={"steps": 3000, "n_instances": 6, "replicas": 2},
)
def run(cfg: PolytopesConfig, out: Path) -> Result:
    probs = cfg.probabilities(log_sweep(cfg.max_probability, cfg.min_probability, cfg.n_instances))
    titles = [f"p = {p:.3g}" for p in probs.tolist()]
    settings = {}
    for label, n, d in (("3d", cfg.n_features, cfg.d_hidden), ("2d", cfg.plane_features, 2)):
        scfg = cfg.model_copy(update={"n_features": n, "d_hidden": d, "importance": 1.0})
        trained = train_toy(scfg, probs, scfg.importance_vector(), desc=f"polytopes {label}")
        extra = [
            {"geometry": name_geometry(W)} for W in trained.W
        ]  # norms and dimensionalities: in the records
        settings[label] = (n, d, trained, instance_records(trained, extra))
    n3, d3, t3, rec3 = settings["3d"]
    n2, _, t2, rec2 = settings["2d"]
    figures = [
        FigureSpec(
            "directions_3d",
            f"{n3} features in {d3} dimensions: each feature's direction (column of W) from the origin, one "
            "panel per sparsity, named by its geometry. Drag to rotate.",
            viz.feature_directions_3d(t3.W, [f"{t}: {r['geometry']}" for t, r in zip(titles, rec3)]),
        )
        if d3 == 3
        else None,
        FigureSpec(
            "norms_3d",
            f"{n3} features in {d3} dimensions: feature norms, coloured by interference. In shapes like "
            "the triangular bipyramid the features are not all equally strong.",
            viz.superposition_bars(t3.W, [f"{t}: {r['geometry']}" for t, r in zip(titles, rec3)]),
        ),
        FigureSpec(
            "directions_2d",
            f"{n2} features in 2 dimensions: regular polygons as features get sparser.",
            viz.feature_directions_2d(t2.W, [f"{t}: {r['geometry']}" for t, r in zip(titles, rec2)]),
        ),
    ]
    figures = [f for f in figures if f is not None]
    highlights = {f"{n3} in {d3}, {t}": r["geometry"] for t, r in zip(titles, rec3)}
    highlights.update({f"{n2} in 2, {t}": r["geometry"] for t, r in zip(titles, rec2)})
    seen = Counter(r["geometry"] for r in rec3 + rec2)
    explanation = f"""
<p>Uniform superposition: {n3} equally important features in {d3} hidden dimensions, and {n2} in 2, each
trained at {cfg.n_instances} feature probabilities from {cfg.max_probability} to {cfg.min_probability}
(lowest loss of {cfg.replicas} initialisations). The represented features (norm above 0.5) are split into
groups that interfere (|cos| > 0.1), which live in orthogonal subspaces; each group is named by comparing
its pairwise cosines with those of reference shapes, and the whole from its groups (a triangle and a digon
in orthogonal subspaces of 3 dimensions form a triangular bipyramid; three orthogonal digons an
octahedron). Found: {", ".join(f"{k} ({v})" for k, v in seen.most_common())}.</p>
<p>As the paper cautions, the name says nothing about the norms: in a triangular bipyramid the two poles
and the three equatorial features need not be equally strong, so the norms are drawn beside the shapes and
recorded per instance in summary.json (with each feature's dimensionality).</p>
"""
    summary = {"setting_3d": {"n_features": n3, "d_hidden": d3, "instances": rec3},
               "setting_2d": {"n_features": n2, "d_hidden": 2, "instances": rec2}}  # fmt: skip
    return Result("Toy models: polytopes in 3-D and 2-D", explanation, summary, figures, highlights)
