"""`geometry`: hundreds of features in tens of dimensions; features stick to fractions of a dimension."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    PositiveFloat,
    ToyConfig,
    instance_records,
    log_sweep,
    loss_history,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.toy import geometry
from superposition.toy.polytopes import FRACTIONS, census, feature_groups, kind_of_each_feature
from superposition.viz import toy as viz


class GeometryConfig(ToyConfig):
    n_instances: int = Field(20, gt=0)
    n_features: int = Field(400, gt=0)
    d_hidden: int = Field(30, gt=0)
    steps: int = Field(5000, gt=0)
    lr: PositiveFloat = 3e-3
    schedule: Literal["constant", "linear", "cosine"] = (
        "cosine"  # decaying lr lets features settle on the polytopes
    )
    max_inv_sparsity: float = Field(100.0, ge=1.0, description="largest 1/(1-S) of the default sweep")
    group_link: float = Field(
        0.25, gt=0.0, lt=1.0, description="features whose |cos| exceeds this are in one group (one polytope)"
    )
    group_tolerance: float = Field(
        0.15, gt=0.0, lt=1.0, description="a group is named a shape when its sorted cosines are this close"
    )


@register(
    "geometry",
    "400 features in 30 dimensions over 20 sparsities: dimensions per feature stick to 1, 3/4, 2/3, 1/2, "
    "2/5, 3/8; the features' groups named by the polytope they form (digon, triangle, pentagon, ...)",
    GeometryConfig,
    quick={"n_instances": 12, "n_features": 200, "d_hidden": 20, "steps": 3000},
)
def run(cfg: GeometryConfig, out: Path) -> Result:
    probs = cfg.probabilities(1.0 / log_sweep(1.0, cfg.max_inv_sparsity, cfg.n_instances))
    trained = train_toy(cfg, probs, cfg.importance_vector(), desc="geometry")
    W = trained.W
    inv_s = (1.0 / probs.clamp(min=1e-12)).numpy()
    dpf = geometry.dimensions_per_feature(W).numpy()
    fdims = geometry.feature_dimensionality(W).numpy()
    records = instance_records(trained, [{"inv_sparsity": float(v)} for v in inv_s])
    near, chance, n_counted = geometry.sticky_share(fdims)
    groups = [feature_groups(w, link=cfg.group_link, tol=cfg.group_tolerance) for w in W]
    counts = census(W, link=cfg.group_link, tol=cfg.group_tolerance)
    for rec, c in zip(records, counts):
        rec["polytopes"] = c["kinds"]
    kinds = [kind_of_each_feature(g, W.shape[-1]) for g in groups]
    # the instance drawn kind by kind: the one with the most kinds of polytope
    shown = max(range(len(groups)), key=lambda i: (len({g.kind for g in groups[i]} - {"other"}), -i))
    totals = _totals(counts)
    highlights = {
        "dimensions per feature, densest → sparsest": f"{dpf[0]:.3f} → {dpf[-1]:.3f}",
        "represented features, densest → sparsest": f"{records[0]['n_represented']} → "
        f"{records[-1]['n_represented']} of {cfg.n_features}",
        "features with D_i ≥ 0.3 within ±0.03 of a sticky fraction": f"{near:.1%} of {n_counted} (uniformly "
        f"spread values would give {chance:.1%})",
        **{
            f"{k}s (all instances)": v
            for k, v in totals.items()
            if k in FRACTIONS and k != "dedicated dimension"
        },
    }
    figures = [
        FigureSpec(
            "dimensions_per_feature",
            "Dimensions per feature (line) and each feature's dimensionality D_i (dots) "
            "against 1/(1−S). Dotted lines mark 1, 3/4, 2/3, 1/2, 2/5, 3/8.",
            viz.dimensions_per_feature(inv_s, dpf, fdims),
        ),
        FigureSpec(
            "dimensions_per_feature_interactive",
            "The same, interactive.",
            viz.dimensions_per_feature_interactive(inv_s, dpf, fdims),
        ),
        FigureSpec(
            "feature_dimensionality",
            "Feature dimensionality per instance (left) and its histogram over all "
            "instances, D_i ≥ 0.3 (right): peaks at the sticky fractions.",
            viz.feature_dimensionality_scatter(inv_s, fdims),
        ),
        FigureSpec(
            "dimensionality_by_polytope",
            "Each feature's dimensionality against 1/(1−S), coloured by the polytope its group forms (the "
            "represented features split into groups that interfere with each other and not with the rest, "
            'each named by its size and angles; "other" when no shape fits). A "dedicated dimension" has no '
            "represented partner; where its D_i is under 1, it shares its dimension with weak, unrepresented "
            "features.",
            lambda: viz.dimensionality_by_kind(inv_s, fdims, kinds),
        ),
        FigureSpec(
            "polytope_census",
            "Per instance: the features in groups of each kind (left) and the hidden dimensions each kind "
            "takes (right).",
            lambda: viz.polytope_census(inv_s, [c["kinds"] for c in counts]),
        ),
        FigureSpec(
            "polytopes",
            f"The instance at 1/(1−S) = {inv_s[shown]:.3g}: one group of each kind drawn in its own "
            "subspace.",
            lambda: viz.polytopes_in_subspaces(W[shown], groups[shown], f"1/(1−S) = {inv_s[shown]:.3g}"),
        ),
        FigureSpec(
            "loss",
            "Training loss per instance.",
            viz.loss_curves(*trained.loss_curves(), [f"{v:.3g}" for v in inv_s]),
        ),
    ]
    explanation = f"""
<p>{cfg.n_features} equally important features in {cfg.d_hidden} dimensions, each instance trained at its own
sparsity, with 1/(1−S) from {inv_s.min():.3g} to {inv_s.max():.3g}. Two measures of how features share the
space:
<i>dimensions per feature</i> D* = m / ‖W‖²_F (about the number of dimensions divided by the number of
represented features), and each feature's <i>dimensionality</i> D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², the
fraction of a dimension that feature i has to itself.</p>
<p><b>What to look for.</b> D* falls as sparsity grows, but not smoothly: it lingers at 1 (dedicated
dimensions) and near 1/2 (antipodal pairs), with plateaus at other fractions. Individual feature
dimensionalities cluster at 1, 3/4, 2/3, 1/2, 2/5 and 3/8, the signatures of features arranged as
uniform polytopes: digons (1/2), triangles (2/3), tetrahedra (3/4), pentagons (2/5), square antiprisms
(3/8).</p>
<p><b>Which polytopes.</b> The represented features (‖W_i‖ &gt; 0.5) of each instance are split into groups
that interfere with each other and not with the rest (components of the graph |cos(W_i, W_j)| &gt;
{cfg.group_link}): each group lives in a subspace orthogonal to the others'. A group is named by its size,
the rank of its directions and its sorted pairwise cosines against those of a reference shape (all within
{cfg.group_tolerance}); "other" when none fits. Over all instances: {_sentence(totals)}.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "inv_sparsity": inv_s,
        "dimensions_per_feature": dpf,
        "sticky_share": {
            "share": near,
            "chance": chance,
            "n_features_counted": n_counted,
            "tolerance": 0.03,
            "min_dimensionality": 0.3,
        },
        "instances": records,
        "polytopes": {
            "link": cfg.group_link,
            "tolerance": cfg.group_tolerance,
            "totals": totals,
            "groups": [c["groups"] for c in counts],
        },
        "history": loss_history(trained),
    }
    return Result("Toy models: the geometry of superposition", explanation, summary, figures, highlights)


def _totals(counts: list[dict]) -> dict[str, int]:
    """Groups of each kind over every instance, commonest first."""
    out: dict[str, int] = {}
    for c in counts:
        for kind, k in c["kinds"].items():
            out[kind] = out.get(kind, 0) + k["groups"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _sentence(totals: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in totals.items()) or "no group"
