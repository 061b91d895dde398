"""`intro`: five features in two dimensions, from dense (orthogonal pair) to sparse (pentagon)."""

from __future__ import annotations

from pathlib import Path

import torch
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
from superposition.seeding import derive_seed
from superposition.toy import geometry
from superposition.viz import toy as viz


class IntroConfig(ToyConfig):
    n_instances: int = Field(10, gt=0)
    n_features: int = Field(5, gt=0)
    d_hidden: int = Field(2, gt=0)
    importance: PositiveFloat | list[PositiveFloat] = 0.9
    min_probability: float = Field(
        0.02, gt=0.0, le=1.0, description="sparsest end of the default sweep (densest is 1)"
    )


@register(
    "intro",
    "5 features in 2 dimensions, feature probability swept 1 -> 0.02: an orthogonal pair when dense, a "
    "pentagon when sparse",
    IntroConfig,
    quick={"steps": 3000, "lr": 1e-2, "schedule": "cosine"},
)
def run(cfg: IntroConfig, out: Path) -> Result:
    probs = cfg.probabilities(log_sweep(1.0, cfg.min_probability, cfg.n_instances))
    trained = train_toy(cfg, probs, cfg.importance_vector(), desc="intro")
    W = trained.W
    gaps = [
        geometry.polar_angle_gaps(W[i]).tolist() if cfg.d_hidden == 2 else [] for i in range(cfg.n_instances)
    ]
    records = instance_records(trained, [{"polar_angle_gaps": g} for g in gaps])
    titles = [f"p = {p:.3g}" for p in probs.tolist()]
    dense, sparse = records[int(probs.argmax())], records[int(probs.argmin())]
    highlights = {
        "densest instance": _describe(dense),
        "sparsest instance": _describe(sparse),
        "represented features per instance": ", ".join(str(r["n_represented"]) for r in records),
    }
    figures = [
        FigureSpec(
            "superposition_bars",
            "Feature norms, coloured by interference. Dense: only the most important "
            "features get a dimension (black bars); sparse: every feature is represented and they interfere "
            "(yellow).",
            viz.superposition_bars(W, titles),
        ),
        FigureSpec(
            "gram",
            "WᵀW per instance: a diagonal block of 1s is dedicated dimensions; off-diagonal "
            "negative entries are features sharing a dimension in superposition.",
            viz.gram_heatmaps(W, titles),
        ),
        FigureSpec("loss", "Training loss per instance.", viz.loss_curves(*trained.loss_curves(), titles)),
    ]
    if cfg.d_hidden == 2:
        imp = trained.model.importance[trained.keep]
        figures.insert(
            0,
            FigureSpec(
                "directions",
                "Each feature's direction W_i in the 2-D hidden space, from dense (left) to sparse (right); "
                "brighter = more important.",
                viz.feature_directions_2d(W, titles, imp),
            ),
        )
        h, present = _hidden_samples(trained, cfg.seed)
        shown = [i for i in range(len(titles)) if len(present[i])]
        figures.insert(
            1,
            FigureSpec(
                "hidden_states",
                "Hidden states h = W x: arrows are each feature alone (x = e_i, numbered); dots are sampled "
                "inputs, blue with one feature present, orange with two, green with more (all-zero inputs "
                "left out). Dense inputs fill the plane; sparse ones lie on the feature directions, which is "
                "what lets the ReLU read them back despite the overlap.",
                viz.hidden_states_2d(
                    W[shown],
                    [h[i] for i in shown],
                    [present[i] for i in shown],
                    [titles[i] for i in shown],
                ),
            ),
        )
        figures.insert(
            2,
            FigureSpec(
                "directions_interactive",
                "The same, interactive: hover over a feature for its norm and importance.",
                viz.feature_directions_2d_interactive(W, titles, imp),
            ),
        )
    explanation = f"""
<p>A toy model <code>h = W x</code>, <code>x' = ReLU(Wᵀh + b)</code> compresses {cfg.n_features} features into
{cfg.d_hidden} hidden dimensions. Feature <i>i</i> has importance {cfg.importance}<sup>i</sup> (when a single
number)
and every instance sees features present with its own probability <i>p</i>, from 1 (dense) down to
{probs.min().item():.3g} (sparse). Each instance is trained independently, all in one batched pass.</p>
<p><b>What to look for.</b> With dense features the model behaves like PCA: it gives the two most
important features orthogonal directions and ignores the rest, because any interference would cost
loss on every example. As features become sparse, interference rarely matters (two features are
seldom present together, and the ReLU with a negative bias filters small interference), so the model
packs more features than dimensions: first antipodal pairs, then all five features in a regular
pentagon, 72° apart. This is <i>superposition</i>.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "instances": records,
        "dense": {
            "feature_probability": dense["feature_probability"],
            "n_represented": dense["n_represented"],
            "polar_angle_gaps": dense["polar_angle_gaps"],
        },
        "sparse": {
            "feature_probability": sparse["feature_probability"],
            "n_represented": sparse["n_represented"],
            "polar_angle_gaps": sparse["polar_angle_gaps"],
        },
        "history": loss_history(trained),
    }
    return Result(
        "Toy models: superposition in five features and two dimensions",
        explanation,
        summary,
        figures,
        highlights,
    )


def _hidden_samples(trained, seed: int, n: int = 20_000, per_panel: int = 800):
    """Per kept instance, up to `per_panel` hidden states h = W x of sampled inputs with at least one
    feature present, and how many features each has."""
    x = trained.data.sample(n, torch.Generator().manual_seed(derive_seed(seed, "intro-h")))
    with torch.no_grad():
        h = trained.model.hidden(x)[:, trained.keep]  # (batch, setting, hidden)
    count = (x[:, trained.keep] > 0).sum(-1)  # (batch, setting)
    hs, ks = [], []
    for i in range(x.shape[1]):
        rows = (count[:, i] > 0).nonzero().squeeze(1)[:per_panel]
        hs.append(h[rows, i])
        ks.append(count[rows, i])
    return hs, ks


def _describe(rec: dict) -> str:
    gaps = rec["polar_angle_gaps"]
    angles = ", ".join(f"{g:.0f}°" for g in gaps) if gaps else "n/a"
    p = rec["feature_probability"]
    return f"p = {p:.3g}: {rec['n_represented']} features represented; angles between neighbours {angles}"
