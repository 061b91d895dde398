"""`phase-diagram`: when does an extra feature get a dimension, share one, or get dropped?"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import PositiveFloat, ToyConfig, loss_history, train_toy
from superposition.report.html import FigureSpec
from superposition.toy import geometry
from superposition.viz import phase_diagram as viz

SETUPS = ((2, 1), (3, 2))  # (features, hidden dimensions); the last feature is the extra one


class PhaseDiagramConfig(ToyConfig):
    """The grid is `grid_size` × `grid_size` cells per setup (n_instances, n_features, d_hidden and
    feature_probability are set by the grid); each cell trains `replicas` initialisations."""

    grid_size: int = Field(16, ge=2, description="cells per side of each diagram")
    replicas: int = Field(3, ge=1)
    min_density: float = Field(0.01, gt=0.0, lt=1.0, description="sparsest feature probability on the grid")
    min_relative_importance: float = Field(0.1, gt=0.0, lt=1.0, description="grid spans [this, 1/this]")
    steps: int = Field(6000, gt=0)
    lr: PositiveFloat = 3e-3
    schedule: Literal["constant", "linear", "cosine"] = "cosine"


@register(
    "phase-diagram",
    "1 extra feature against 1 (and 2) others in 1 (and 2) dimensions, over relative importance x sparsity: "
    "not represented / dedicated / superposition",
    PhaseDiagramConfig,
    quick={"grid_size": 7, "replicas": 2, "steps": 2000, "lr": 1e-2},
)
def run(cfg: PhaseDiagramConfig, out: Path) -> Result:
    g = cfg.grid_size
    density = np.geomspace(1.0, cfg.min_density, g)  # columns
    rel_imp = np.geomspace(cfg.min_relative_importance, 1 / cfg.min_relative_importance, g)  # rows
    figures, setups, highlights = [], [], {}
    for n_feat, d_hidden in SETUPS:
        # cell (row r = importance, column c = density) is setting r·g + c
        probs = torch.tensor(np.tile(density, g))
        importance = torch.ones(g * g, n_feat)
        importance[:, -1] = torch.tensor(np.repeat(rel_imp, g), dtype=torch.float32)
        sub = cfg.model_copy(
            update={
                "n_instances": g * g,
                "n_features": n_feat,
                "d_hidden": d_hidden,
                "feature_probability": None,
                "importance": 1.0,
            }
        )
        trained = train_toy(sub, probs, importance, desc=f"phase diagram {n_feat}x{d_hidden}")
        W = trained.W
        phase = geometry.classify_feature(W, -1).reshape(g, g).numpy()
        norm = geometry.feature_norms(W)[:, -1].reshape(g, g).numpy()
        name = f"{n_feat} features in {d_hidden} dimension{'s' if d_hidden > 1 else ''}"
        setups.append(
            {
                "n_features": n_feat,
                "d_hidden": d_hidden,
                "feature_probability": density,
                "relative_importance": rel_imp,
                "phase": phase,
                "phase_names": list(geometry.PHASES),
                "extra_feature_norm": norm,
                "final_loss": trained.final_loss.reshape(g, g),
                "W": W.reshape(g, g, d_hidden, n_feat),
                "history": loss_history(trained),
            }
        )
        counts = {p: int((phase == k).sum()) for k, p in enumerate(geometry.PHASES)}
        highlights[name] = ", ".join(f"{v} cells {k}" for k, v in counts.items())
        figures.append(
            FigureSpec(
                f"phase_{n_feat}x{d_hidden}",
                f"{name}: the phase of the extra (last) feature in each cell, and its norm ‖W_extra‖.",
                viz.phase_figure(phase, norm, density, rel_imp, name),
            )
        )
    explanation = f"""
<p>The smallest models with a choice to make. <b>{SETUPS[0][0]} features in {SETUPS[0][1]} dimension</b>: one
feature of
importance 1 and an extra feature of relative importance r. <b>{SETUPS[1][0]} features in {SETUPS[1][1]}
dimensions</b>: two
features of importance 1 and an extra one. Every cell of the {g}×{g} grid is a model trained at its own
relative importance r (from {rel_imp.min():.3g} to {rel_imp.max():.3g}) and feature density 1 − S (all
features
present with the same probability, from 1 to {cfg.min_density}), keeping the lowest-loss of {cfg.replicas}
initialisations. The extra feature is classified as <i>not represented</i> (‖W‖ ≤ 0.5), having a
<i>dedicated dimension</i> (represented, interference ≤ 0.1), or in <i>superposition</i> (represented and
sharing).</p>
<p><b>What to look for.</b> Dense features: the more important feature takes the dimension and the other is
dropped, a sharp boundary at r = 1. Sparse features: both are kept in superposition (antipodal in 1-D), over a
region that grows with sparsity. The boundaries are sharp: a phase change, as in the paper's figure.</p>
"""
    summary = {"setups": setups}
    return Result("Toy models: phase diagrams of superposition", explanation, summary, figures, highlights)
