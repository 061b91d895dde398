"""`neurons`: a privileged hidden basis; monosemantic neurons when dense, polysemantic when sparse."""

from __future__ import annotations

from pathlib import Path

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
from superposition.toy import neurons
from superposition.viz import toy as viz


class NeuronsConfig(ToyConfig):
    n_instances: int = Field(7, gt=0)
    n_features: int = Field(10, gt=0)
    d_hidden: int = Field(5, gt=0)
    importance: PositiveFloat | list[PositiveFloat] = 0.75
    replicas: int = Field(3, ge=1)
    max_probability: float = Field(0.75, gt=0.0, le=1.0, description="densest end of the default sweep")
    min_probability: float = Field(0.01, gt=0.0, le=1.0, description="sparsest end of the default sweep")
    monosemantic_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="a neuron is monosemantic when max|w| / ‖w‖ exceeds this"
    )


@register(
    "neurons",
    "ReLU hidden layer (privileged basis), 10 features in 5 neurons, p 0.75 -> 0.01: monosemantic neurons "
    "when dense, polysemantic when sparse",
    NeuronsConfig,
    quick={"steps": 3000, "lr": 1e-2, "schedule": "cosine"},
)
def run(cfg: NeuronsConfig, out: Path) -> Result:
    probs = cfg.probabilities(log_sweep(cfg.max_probability, cfg.min_probability, cfg.n_instances))
    trained = train_toy(
        cfg, probs, cfg.importance_vector(), hidden_relu=True, desc="neurons", track_active=True
    )
    W = trained.W  # (setting, neuron, feature)
    mono = neurons.monosemantic_neurons(W, cfg.monosemantic_threshold)
    score = neurons.monosemanticity(W)
    dom = neurons.dominant_feature(W)
    extra = [
        {
            "n_monosemantic": int(mono[i].sum()),
            "neuron_monosemanticity": score[i],
            "neuron_dominant_feature": dom[i],
            "monosemantic_features": sorted(set(dom[i][mono[i]].tolist())),
        }
        for i in range(W.shape[0])
    ]
    for e, a in zip(extra, trained.active[1][-1].tolist()):
        e["active_neurons"] = a  # share of neurons > 0 per example at the end of training
    records = instance_records(trained, extra)
    titles = [f"p = {p:.3g}" for p in probs.tolist()]
    highlights = {
        f"p = {r['feature_probability']:.3g}": f"{r['n_monosemantic']} of {cfg.d_hidden} neurons monosemantic"
        + (f" (features {r['monosemantic_features']})" if r["monosemantic_features"] else "")
        + f"; loss {r['final_loss']:.4g}"
        for r in records
    }
    figures = [
        FigureSpec(
            "neuron_bars",
            "Each neuron's input weights stacked by feature (colour). Dense: one colour per neuron, "
            "the most important features each own a neuron. Sparse: neurons mix several features.",
            viz.neuron_stacked_bars(W, titles, mono),
        ),
        FigureSpec(
            "weights",
            "W as neurons × features per instance.",
            viz.weight_heatmaps(W, titles, "feature", "neuron", "Input weights W (neurons × features)"),
        ),
        FigureSpec(
            "active_neurons",
            "Share of the neurons active (> 0) on an example, averaged over a fixed batch, during training. "
            "Sparse inputs switch few neurons on at a time; dense ones most of them.",
            viz.active_fraction_over_training(trained.active[0], trained.active[1], titles),
        ),
        FigureSpec(
            "loss", "Training loss of the kept replicas.", viz.loss_curves(*trained.loss_curves(), titles)
        ),
    ]
    explanation = f"""
<p>The neuron model <code>h = ReLU(W x)</code>, <code>x' = ReLU(Wᵀh + b)</code> puts a ReLU on the hidden
layer,
which makes its basis <i>privileged</i>: each hidden unit is a neuron whose activation can be read on its
own. {cfg.n_features} features with importance {cfg.importance}<sup>i</sup> (when a number) go through
{cfg.d_hidden} neurons at feature probabilities from {probs.max().item():.3g} down to
{probs.min().item():.3g}.
Each setting is trained from {cfg.replicas} initialisation(s) and the lowest-loss one is shown.</p>
<p><b>What to look for.</b> With dense features each of the {cfg.d_hidden} most important features gets a
neuron of its own (monosemantic neurons, one colour per bar). As features become sparse the model packs
more features than neurons, and neurons respond to several features (polysemantic neurons, multi-coloured
bars). A neuron counts as monosemantic when its largest weight carries more than {cfg.monosemantic_threshold}
of its weight vector's norm.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "instances": records,
        "history": loss_history(trained),
    }
    return Result(
        "Toy models: privileged basis and polysemantic neurons", explanation, summary, figures, highlights
    )
