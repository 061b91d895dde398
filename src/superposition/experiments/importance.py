"""`importance`: many features, few dimensions, decaying importance, swept over sparsity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    PositiveFloat,
    ToyConfig,
    instance_records,
    loss_history,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.viz import toy as viz

SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999)  # the paper's sweep


class ImportanceConfig(ToyConfig):
    n_instances: int = Field(len(SPARSITIES), gt=0)
    n_features: int = Field(20, gt=0)
    d_hidden: int = Field(5, gt=0)
    importance: PositiveFloat | list[PositiveFloat] = 0.7


@register(
    "importance",
    "20 features in 5 dimensions with importance 0.7^i, swept over sparsity: which features get dedicated "
    "dimensions and which share",
    ImportanceConfig,
    quick={
        "steps": 3000,
        "lr": 1e-2,
        "schedule": "cosine",
        "n_instances": 5,
        "feature_probability": [1.0, 0.3, 0.1, 0.03, 0.01],
    },
)
def run(cfg: ImportanceConfig, out: Path) -> Result:
    default = (
        [1 - s for s in SPARSITIES]
        if cfg.n_instances == len(SPARSITIES)
        else np.geomspace(1, 1e-3, cfg.n_instances)
    )
    probs = cfg.probabilities(default)
    trained = train_toy(cfg, probs, cfg.importance_vector(), desc="importance")
    W = trained.W
    records = instance_records(trained)
    titles = [f"1−S = {p:.3g}" for p in probs.tolist()]
    highlights = {
        f"1−S = {r['feature_probability']:.3g}": f"{r['n_represented']} of {cfg.n_features} features "
        "represented, "
        f"{r['n_in_superposition']} in superposition; {r['dimensions_per_feature']:.3f} dimensions per "
        f"feature; loss {r['final_loss']:.4g}"
        for r in records
    }
    figures = [
        FigureSpec(
            "superposition_bars",
            "Feature norms ‖W_i‖ (most important at the top), coloured by interference "
            "Σ_{j≠i}(Ŵ_i·W_j)²: black bars have a dimension to themselves, yellow ones share.",
            viz.superposition_bars(W, titles),
        ),
        FigureSpec(
            "gram",
            "WᵀW per instance. Dense: an identity block for the 5 most important features. "
            "Sparse: off-diagonal structure as more features share the 5 dimensions.",
            viz.gram_heatmaps(W, titles),
        ),
        FigureSpec("loss", "Training loss per instance.", viz.loss_curves(*trained.loss_curves(), titles)),
    ]
    explanation = f"""
<p>{cfg.n_features} features, {cfg.d_hidden} hidden dimensions, feature <i>i</i> with importance
{cfg.importance}<sup>i</sup> when a single number. Each column of the figures is an instance trained at one
sparsity S (features present with probability 1−S).</p>
<p><b>What to look for.</b> Dense (1−S = 1), the model keeps exactly {cfg.d_hidden} features, the most
important
ones, each in a dedicated dimension (black bars, an identity block in WᵀW), and drops the rest. As sparsity
grows, less important features enter in superposition (yellow bars): the model trades a little interference
for representing more features. At high sparsity nearly all features are represented and share the space.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "instances": records,
        "history": loss_history(trained),
    }
    return Result(
        "Toy models: importance and sparsity decide which features are in superposition",
        explanation,
        summary,
        figures,
        highlights,
    )
