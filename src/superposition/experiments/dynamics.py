"""`dynamics`: how feature geometry forms during training: plateaus and sudden jumps."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    PositiveFloat,
    Probability,
    ToyConfig,
    instance_records,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.toy import geometry
from superposition.viz import toy as viz


class DynamicsConfig(ToyConfig):
    n_instances: int = Field(1, gt=0)
    n_features: int = Field(200, gt=0)
    d_hidden: int = Field(20, gt=0)
    feature_probability: Probability | list[Probability] | None = 0.25
    steps: int = Field(8000, gt=0)
    lr: PositiveFloat = 3e-3
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    snapshot_every: int = Field(40, gt=0, description="steps between snapshots of the geometry")


def plateau_transitions(dims: np.ndarray, steps: np.ndarray, tol: float = 0.03) -> list[dict]:
    """Moves of a feature's dimensionality from one plateau to another.

    A plateau is 0 or a sticky fraction (within `tol`). dims is (snapshot, feature). A transition
    runs from the last snapshot on one plateau to the first on a different one; its duration in
    steps measures how sudden the change was.
    """
    levels = np.array((0.0,) + geometry.STICKY_FRACTIONS)
    dist = np.abs(dims[..., None] - levels)
    state = np.where(dist.min(-1) <= tol, dist.argmin(-1), -1)  # (snapshot, feature)
    out = []
    for f in range(dims.shape[1]):
        last, left = None, None
        for t in range(dims.shape[0]):
            s = int(state[t, f])
            if s < 0:
                continue
            if last is not None and s != last:
                out.append(
                    {
                        "feature": f,
                        "from": float(levels[last]),
                        "to": float(levels[s]),
                        "left_step": int(steps[left]),
                        "arrived_step": int(steps[t]),
                        "duration": int(steps[t] - steps[left]),
                    }
                )
            last, left = s, t
    return out


@register(
    "dynamics",
    "snapshots of the geometry experiment during training: per-feature dimensionality jumps between plateaus",
    DynamicsConfig,
    quick={"n_features": 100, "d_hidden": 10, "steps": 3000, "snapshot_every": 30},
)
def run(cfg: DynamicsConfig, out: Path) -> Result:
    snaps: list[tuple[int, np.ndarray]] = []

    def snapshot(step, model):
        snaps.append((step, geometry.feature_dimensionality(model.W.detach()).numpy().copy()))

    probs = cfg.probabilities([0.25] * cfg.n_instances)
    trained = train_toy(
        cfg,
        probs,
        cfg.importance_vector(),
        desc="dynamics",
        callback=snapshot,
        callback_every=cfg.snapshot_every,
        log_every=cfg.snapshot_every,
    )
    steps = np.array([s for s, _ in snaps])
    hist_steps, hist_losses = trained.loss_curves()
    loss_at = dict(zip(hist_steps, hist_losses[:, 0]))
    losses = np.array([loss_at[s] for s in steps])
    k = trained.keep[0]
    dims = np.stack([d[k] for _, d in snaps])  # (snapshot, feature), first setting's kept replica
    transitions = plateau_transitions(dims, steps)
    durations = np.array([t["duration"] for t in transitions])
    median_duration = float(np.median(durations)) if durations.size else float("nan")
    late = dims[len(dims) // 2 :]
    share, chance, _ = geometry.sticky_share(late.reshape(-1))
    record = instance_records(trained)
    highlights = {
        "setting": f"{cfg.n_features} features in {cfg.d_hidden} dimensions, p = {probs[0].item():.3g}, "
        f"{cfg.steps} steps",
        "transitions between plateaus (0 or a sticky fraction, ±0.03)": f"{len(transitions)}, median transit "
        f"{median_duration:.0f} steps "
        f"({median_duration / cfg.steps:.1%} of training)",
        "second half of training, D_i ≥ 0.3 within ±0.03 of a sticky fraction": f"{share:.1%} (chance "
        f"{chance:.1%})",
        "final dimensions per feature": f"{record[0]['dimensions_per_feature']:.3f}",
    }
    figures = [
        FigureSpec(
            "dimensionality_over_time",
            "Each line is one feature's dimensionality through training; the loss below.",
            viz.dimensionality_over_time(steps, dims, losses),
        ),
        FigureSpec(
            "dimensionality_slider",
            "Interactive: drag the slider (or press play) to watch features settle on the fractions.",
            viz.dimensionality_slider(steps, dims, losses),
        ),
    ]
    explanation = f"""
<p>The geometry experiment at one sparsity ({cfg.n_features} features, {cfg.d_hidden} dimensions, each
present with
probability {probs[0].item():.3g}), with the dimensionality D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² of every feature
recorded every {cfg.snapshot_every} steps.</p>
<p><b>What to look for.</b> Features do not drift smoothly into their final arrangement. A feature's
dimensionality sits on a plateau, often at one of the fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8, and then jumps
quickly to another as the feature joins or leaves a polytope. The loss falls in steps at the same moments,
like a sequence of small phase changes.</p>
"""
    summary = {
        "instances": record,
        "snapshot_steps": steps,
        "snapshot_loss": losses,
        "feature_dimensionality": dims,
        "transitions": transitions,
        "median_transition_steps": median_duration,
        "late_sticky_share": {"share": share, "chance": chance},
    }
    return Result("Toy models: learning dynamics of superposition", explanation, summary, figures, highlights)
