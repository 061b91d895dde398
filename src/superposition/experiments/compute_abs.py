"""`compute-abs`: computing |x| in superposition with y = ReLU(W_out ReLU(W_in x) + b)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import (
    PositiveFloat,
    Probability,
    ToyConfig,
    instance_records,
    log_sweep,
    loss_history,
    train_toy,
)
from superposition.report.html import FigureSpec
from superposition.toy import neurons
from superposition.viz import toy as viz


class ComputeAbsConfig(ToyConfig):
    n_instances: int = Field(6, gt=0)
    n_features: int = Field(100, gt=0)
    d_hidden: int = Field(40, gt=0)
    importance: PositiveFloat | list[PositiveFloat] = 0.8
    steps: int = Field(10_000, gt=0)
    max_probability: float = Field(1.0, gt=0.0, le=1.0, description="densest end of the default sweep")
    min_probability: float = Field(0.001, gt=0.0, le=1.0, description="sparsest end of the default sweep")
    pairs_n_features: int = Field(20, gt=0, description="second setting: features")
    pairs_d_hidden: int = Field(10, gt=0, description="second setting: neurons")
    pairs_feature_probability: Probability = Field(0.5, description="second setting: feature probability")
    pairs_importance: PositiveFloat = Field(
        0.8, description="second setting: importance decay r (feature i has r**i)"
    )
    pairs_replicas: int = Field(4, ge=1, description="second setting: initialisations, lowest loss kept")


@register(
    "compute-abs",
    "a ReLU layer computing |x| for 100 signed features with 40 neurons: +/- neuron pairs when dense, "
    "polysemantic when sparse",
    ComputeAbsConfig,
    quick={
        "n_instances": 4,
        "n_features": 30,
        "d_hidden": 12,
        "min_probability": 0.01,
        "steps": 3000,
        "lr": 1e-2,
        "schedule": "cosine",
    },
)
def run(cfg: ComputeAbsConfig, out: Path) -> Result:
    probs = cfg.probabilities(log_sweep(cfg.max_probability, cfg.min_probability, cfg.n_instances))
    sweep = train_toy(cfg, probs, cfg.importance_vector(), computation=True, desc="compute-abs sweep")
    sweep_records = instance_records(sweep, _analyse(sweep))

    pairs_cfg = cfg.model_copy(
        update={
            "n_instances": 1,
            "n_features": cfg.pairs_n_features,
            "d_hidden": cfg.pairs_d_hidden,
            "importance": cfg.pairs_importance,
            "replicas": cfg.pairs_replicas,
            "feature_probability": cfg.pairs_feature_probability,
        }
    )
    pairs = train_toy(
        pairs_cfg,
        pairs_cfg.probabilities([]),
        pairs_cfg.importance_vector(),
        computation=True,
        desc="compute-abs pairs",
    )
    pairs_record = instance_records(pairs, _analyse(pairs))[0]
    pairs_record["represented_features"] = _represented(pairs)
    pairs_record["every_represented_feature_has_a_pair"] = set(pairs_record["represented_features"]) <= set(
        pairs_record["abs_pair_features"]
    )

    titles = [f"p = {p:.3g}" for p in probs.tolist()]
    W_in_sorted, W_out_sorted = _sorted_by_feature(sweep)
    highlights = {
        f"p = {r['feature_probability']:.3g}": f"{r['n_monosemantic']} of {cfg.d_hidden} neurons "
        "monosemantic, "
        f"{r['n_abs_pairs']} features with a ± neuron pair, {len(r['asymmetric_motifs'])} asymmetric motifs"
        for r in sweep_records
    }
    highlights[
        f"second setting: {cfg.pairs_n_features} features, {cfg.pairs_d_hidden} neurons, p = "
        f"{cfg.pairs_feature_probability}"
    ] = (
        f"features represented {pairs_record['represented_features']}; "
        f"with a ± pair {pairs_record['abs_pair_features']}"
    )
    shown = min(cfg.n_features, 3 * cfg.d_hidden)
    figures = [
        FigureSpec(
            "w_in",
            f"W_in (neurons × the first {shown} features), neurons sorted by the feature they respond to "
            "most. "
            "Dense: each neuron reads one feature, with a positive and a negative neuron for the most "
            "important ones. "
            "Sparse: neurons read many features.",
            viz.weight_heatmaps(W_in_sorted[:, :, :shown], titles, "feature", "neuron", "Input weights W_in"),
        ),
        FigureSpec(
            "w_out",
            "W_outᵀ in the same neuron order: positive output weights turn each half, ReLU(x) and ReLU(−x), "
            "into |x|.",
            viz.weight_heatmaps(
                W_out_sorted.transpose(1, 2)[:, :, :shown],
                titles,
                "feature",
                "neuron",
                "Output weights W_outᵀ",
            ),
        ),
        FigureSpec(
            "pairs_neurons",
            f"Second setting ({cfg.pairs_n_features} features, {cfg.pairs_d_hidden} neurons, p = "
            f"{cfg.pairs_feature_probability}): "
            "each neuron's input weights stacked by feature; a ± pair is two neurons of one colour, one "
            "above "
            ""
            ""
            "and one below zero.",
            viz.neuron_stacked_bars(pairs.W, ["second setting"], neurons.monosemantic_neurons(pairs.W)),
        ),
        FigureSpec("loss", "Training loss per setting.", viz.loss_curves(*sweep.loss_curves(), titles)),
    ]
    explanation = f"""
<p>A one-layer ReLU network <code>y = ReLU(W_out ReLU(W_in x) + b)</code> with {cfg.d_hidden} neurons is
trained to
output |x| for {cfg.n_features} signed features (present with probability p, value uniform in [−1, 1],
importance
{cfg.importance}<sup>i</sup> when a number). This is computation, not just storage: |x| = ReLU(x) + ReLU(−x)
needs one neuron per sign.</p>
<p><b>What to look for.</b> When features are dense, the model spends two neurons on each of its most
important
features, one with a positive and one with a negative input weight, both with positive output weight: a
<i>± pair</i>, monosemantic neurons. When features are sparse it computes |x| for more features than it has
neuron pairs, so neurons become polysemantic. Some neurons carry two features with very unequal weights;
we flag these as <i>asymmetric superposition</i> candidates: the top two input weights of a neuron come from
different features, differ by at least 2×, and the weaker still carries a quarter of the weight norm.
In the second setting ({cfg.pairs_n_features} features, {cfg.pairs_d_hidden} neurons, p =
{cfg.pairs_feature_probability},
importance {cfg.pairs_importance}<sup>i</sup>), every feature the model represents gets its own ± pair: each
neuron
buys the same loss reduction whether it completes a pair or starts a new feature, so decaying importance
breaks the tie in favour of pairs on the most important features. (With equal importance the model mixes
pairs and single halves.) The lowest-loss of {cfg.pairs_replicas} initialisations is shown.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "instances": sweep_records,
        "pairs_setting": pairs_record,
        "history": loss_history(sweep),
    }
    return Result("Toy models: computation in superposition (|x|)", explanation, summary, figures, highlights)


def _analyse(trained) -> list[dict]:
    W_in = trained.W
    W_out = trained.model.W_out.detach()[trained.keep]
    mono = neurons.monosemantic_neurons(W_in)
    pairs = neurons.abs_pairs(W_in, W_out)
    return [
        {
            "n_monosemantic": int(mono[i].sum()),
            "n_polysemantic": int(((W_in[i].norm(dim=-1) > 0.1) & ~mono[i]).sum()),
            "n_abs_pairs": int(pairs[i].sum()),
            "abs_pair_features": pairs[i].nonzero().squeeze(1).tolist(),
            "asymmetric_motifs": [asdict(m) for m in neurons.asymmetric_motifs(W_in[i])],
        }
        for i in range(W_in.shape[0])
    ]


def _represented(trained, threshold: float = 0.5) -> list[int]:
    """Features that some neuron reads strongly (|W_in| above threshold)."""
    return (trained.W[0].abs() > threshold).any(0).nonzero().squeeze(1).tolist()


def _sorted_by_feature(trained) -> tuple[torch.Tensor, torch.Tensor]:
    """W_in and W_out with neurons ordered by (dominant feature, sign), for readable heat maps."""
    W_in = trained.W
    W_out = trained.model.W_out.detach()[trained.keep]
    dom = neurons.dominant_feature(W_in)
    sign = torch.gather(W_in, -1, dom.unsqueeze(-1)).squeeze(-1).sign()
    order = (dom * 2 + (sign < 0)).argsort(dim=-1)
    W_in_s = torch.gather(W_in, 1, order.unsqueeze(-1).expand_as(W_in))
    W_out_s = torch.gather(W_out, 2, order.unsqueeze(1).expand_as(W_out))
    return W_in_s, W_out_s
