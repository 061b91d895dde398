"""`correlated`: pairs of correlated, anticorrelated and uncorrelated features."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    Probability,
    ToyConfig,
    instance_records,
    loss_history,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.toy import geometry
from superposition.toy.data import Group
from superposition.viz import toy as viz

KINDS = ("correlated", "anticorrelated", "uncorrelated")


class CorrelatedConfig(ToyConfig):
    """One setting per kind in `kinds` (so n_instances must equal len(kinds)); features are
    grouped in consecutive groups of `group_size` of that kind. Each kind is trained from
    `replicas` initialisations: single runs often stop in a local minimum (a correlated pair
    collapsed onto one direction, say), and the lowest-loss replica is the one reported."""

    n_instances: int = Field(3, gt=0)
    n_features: int = Field(4, gt=0)
    d_hidden: int = Field(2, gt=0)
    feature_probability: Probability | list[Probability] | None = 0.25
    replicas: int = Field(8, ge=1)
    group_size: int = Field(2, ge=2, description="features per correlated / anticorrelated group")
    kinds: list[Literal["correlated", "anticorrelated", "uncorrelated"]] = Field(
        default_factory=lambda: list(KINDS), description="the kind of grouping of each instance"
    )

    @model_validator(mode="after")
    def _groups_fit(self):
        if self.n_features % self.group_size:
            raise ValueError(
                f"n_features ({self.n_features}) must be a multiple of group_size ({self.group_size})"
            )
        if len(self.kinds) != self.n_instances:
            raise ValueError(
                f"kinds: one kind per instance (n_instances={self.n_instances}), got {len(self.kinds)}"
            )
        return self


@register(
    "correlated",
    "correlated pairs form local orthogonal bases, anticorrelated pairs sit antipodal, uncorrelated ones "
    "anywhere",
    CorrelatedConfig,
    quick={"steps": 3000, "lr": 1e-2, "schedule": "cosine"},
)
def run(cfg: CorrelatedConfig, out: Path) -> Result:
    kinds = list(cfg.kinds)
    feature_groups = [tuple(range(s, s + cfg.group_size)) for s in range(0, cfg.n_features, cfg.group_size)]
    groups = [[Group(k, g) for g in feature_groups] if k != "uncorrelated" else [] for k in kinds]
    probs = cfg.probabilities([cfg.feature_probability or 0.25] * cfg.n_instances)
    trained = train_toy(cfg, probs, cfg.importance_vector(), groups=groups, desc="correlated")
    W_all = trained.model.W.detach()
    ang_all = geometry.angles(W_all)
    within_all = [_mean_within_group_angle(ang_all[i], feature_groups) for i in range(W_all.shape[0])]
    reps = cfg.replicas
    extra = [
        {
            "correlation": k,
            "groups": [list(g) for g in feature_groups],
            "within_group_angle": within_all[i],
            "replica_within_group_angles": within_all[s * reps : (s + 1) * reps],
            "angles": ang_all[i],
        }
        for s, (k, i) in enumerate(zip(kinds, trained.keep))
    ]
    records = instance_records(trained, extra)
    W = trained.W
    titles = [f"{k} (best of {reps})" for k in kinds]
    highlights = {
        f"{r['correlation']} (lowest-loss replica)": f"angle within groups {r['within_group_angle']:.1f}°, "
        f"loss {r['final_loss']:.4g}; "
        f"all replicas: {', '.join(f'{w:.0f}°' for w in r['replica_within_group_angles'])}"
        for r in records
    }
    figures = [
        FigureSpec(
            "gram",
            "WᵀW of each kind's best replica; features are ordered so that each group is a consecutive "
            "block.",
            viz.gram_heatmaps(W, titles),
        ),
        FigureSpec(
            "data_vs_model",
            "The data's feature correlation matrix (top) beside the model's WᵀW (bottom), per kind: "
            "correlated groups (positive blocks in the data) are kept apart inside the model, "
            "anticorrelated ones (negative blocks) are allowed to overlap.",
            viz.correlation_beside_gram(_data_correlation(trained), W, titles),
        ),
        FigureSpec(
            "superposition_bars", "Feature norms coloured by interference.", viz.superposition_bars(W, titles)
        ),
        FigureSpec(
            "loss", "Training loss of the kept replicas.", viz.loss_curves(*trained.loss_curves(), titles)
        ),
    ]
    if cfg.d_hidden == 2:
        figures.insert(
            0,
            FigureSpec(
                "directions",
                "Feature directions in the hidden plane, coloured by group ("
                + ", ".join(str(list(g)) for g in feature_groups)
                + ").",
                viz.feature_directions_2d(W, titles, _group_colour(cfg.n_features, feature_groups)),
            ),
        )
        replica_titles = [
            f"{k} #{r}" + (" (kept)" if s * reps + r in trained.keep else "")
            for s, k in enumerate(kinds)
            for r in range(reps)
        ]
        figures.insert(
            1,
            FigureSpec(
                "directions_all_replicas",
                "Every replica, with its kind; the kept ones have the lowest loss of their kind.",
                viz.feature_directions_2d(
                    W_all, replica_titles, _group_colour(cfg.n_features, feature_groups)
                ),
            ),
        )
    explanation = f"""
<p>{cfg.n_features} features in {cfg.d_hidden} dimensions, grouped as
{", ".join(str(list(g)) for g in feature_groups)},
each feature present with probability {probs[0].item():.3g}. In <b>correlated</b> instances the members of a
group
are present together; in <b>anticorrelated</b> ones at most one member of a group is present; in
<b>uncorrelated</b> ones features are independent. Every feature keeps the same marginal probability.</p>
<p><b>What to look for.</b> Correlated features are often present at the same time, so interference between
them would hurt: the model places a correlated group on mutually <i>orthogonal</i> directions (a local
orthogonal basis, about 90° apart) and lets different groups overlap. Anticorrelated features are never
present
together, so interference between them is free: the model puts them <i>antipodal</i> (180°), which the
ReLU cleanly separates. Each kind is trained from {reps} initialisations; some stop in a local
minimum (a correlated pair collapsed onto one direction, an anticorrelated pair at 90°), and these
have visibly higher loss, so the table reports the lowest-loss replica of each kind.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "groups": [list(g) for g in feature_groups],
        "within_group_angle": {r["correlation"]: r["within_group_angle"] for r in records},
        "instances": records,
        "history": loss_history(trained),
    }
    return Result(
        "Toy models: correlated and anticorrelated features", explanation, summary, figures, highlights
    )


def _data_correlation(trained, samples: int = 50_000) -> torch.Tensor:
    """Pearson correlation between the features' values in the data of each kept instance,
    (inst, feat, feat)."""
    x = trained.data.sample(samples, torch.Generator().manual_seed(0))[:, trained.keep]  # (n, inst, feat)
    xc = x - x.mean(0)
    cov = torch.einsum("nif,nig->ifg", xc, xc) / samples
    sd = cov.diagonal(dim1=1, dim2=2).clamp(min=1e-12).sqrt()
    return cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))


def _mean_within_group_angle(ang: torch.Tensor, groups: list[tuple[int, ...]]) -> float:
    vals = [ang[a, b].item() for g in groups for ai, a in enumerate(g) for b in g[ai + 1 :]]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _group_colour(n_features: int, groups: list[tuple[int, ...]]) -> torch.Tensor:
    colour = torch.zeros(n_features)
    for gi, g in enumerate(groups):
        colour[list(g)] = float(gi)
    return colour
