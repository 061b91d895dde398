"""`double-descent`: finite data, from memorising data points to generalising features.

After "Superposition, Memorization, and Double Descent" (Henighan et al. 2023): many sparse
features, 2 hidden dimensions, inputs scaled to unit length, a fixed training set of T points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from superposition.errors import SuperpositionError
from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import PositiveFloat, Probability, ToyConfig
from superposition.memory import FLOAT
from superposition.report.html import FigureSpec
from superposition.seeding import derive_seed
from superposition.toy import geometry
from superposition.toy.data import FeatureDistribution, FixedDataset, Normalized
from superposition.toy.model import ToyModel
from superposition.toy.train import evaluate_losses, train_toy_model
from superposition.viz import double_descent as viz

DEFAULT_SIZES = [3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000, 3000, 5000, 8000]


class DoubleDescentConfig(ToyConfig):
    """`dataset_sizes` is the sweep over T; each T trains `replicas` models on their own datasets
    and keeps the one with the lowest *training* loss (choosing by test loss would peek)."""

    n_features: int = Field(500, gt=0)
    d_hidden: int = Field(2, gt=0)
    feature_probability: Probability | list[Probability] | None = 0.006
    dataset_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_SIZES),
        min_length=1,
        description="the sweep over T, the size of the fixed training set",
    )
    replicas: int = Field(3, ge=1)
    steps: int = Field(5000, gt=0)
    lr: PositiveFloat = 1e-2
    warmup_steps: int = Field(250, ge=0)
    weight_decay: float = Field(1e-2, ge=0.0, description="AdamW weight decay")
    normalize: bool = Field(True, description="scale every input to unit length")
    test_points: int = Field(8192, gt=0, description="fresh points for the test loss")

    def memory_needed(self) -> int:
        """The largest fixed training set and the test set, each about six float32 copies."""
        rows = max(max(self.dataset_sizes), self.test_points)
        return FLOAT * self.replicas * self.n_features * (6 * rows + 6 * self.d_hidden)


@register(
    "double-descent",
    "finite data: 500 sparse features in 2 dimensions, dataset size T from 3 to 8000: test loss peaks "
    "between "
    ""
    ""
    "memorising and generalising",
    DoubleDescentConfig,
    quick={
        "n_features": 200,
        "feature_probability": 0.015,
        "dataset_sizes": [3, 6, 12, 25, 50, 100, 200, 400, 800, 1600, 3200],
        "replicas": 2,
        "steps": 2500,
    },
)
def run(cfg: DoubleDescentConfig, out: Path) -> Result:
    if not isinstance(cfg.feature_probability, float):
        raise SuperpositionError(
            "feature_probability: double-descent takes one probability for every feature"
        )
    p = cfg.feature_probability
    reps = cfg.replicas
    source = (
        Normalized(FeatureDistribution(torch.full((reps, cfg.n_features), p)))
        if cfg.normalize
        else FeatureDistribution(torch.full((reps, cfg.n_features), p))
    )
    records = [_train_at(cfg, source, T) for T in sorted(cfg.dataset_sizes)]
    sizes = np.array([r["T"] for r in records])
    test = np.array([r["test_loss"] for r in records])
    train = np.array([r["train_loss"] for r in records])
    peak = int(np.argmax(test))
    highlights = {
        "setting": f"{cfg.n_features} features, {cfg.d_hidden} hidden dimensions, p = {p}, inputs "
        f"{'unit-normalised' if cfg.normalize else 'raw'}, "
        f"{cfg.steps} full-batch AdamW steps (weight decay {cfg.weight_decay}), best of {reps} per T",
        "test loss peak": f"T = {sizes[peak]} (test {test[peak]:.4g}; at the smallest T {test[0]:.4g}, at "
        "the "
        ""
        ""
        f"largest {test[-1]:.4g})",
        "data-point dimensionality at the smallest T": f"{records[0]['mean_data_dimensionality']:.3f} (2/T = "
        f"{2 / sizes[0]:.3f})",
    }
    figures = [
        FigureSpec(
            "loss_vs_T",
            "Train and test loss against dataset size T. Test loss rises to a peak between the memorising "
            "and generalising regimes, then falls again: double descent.",
            viz.loss_vs_dataset_size(sizes, train, test),
        ),
        FigureSpec(
            "hidden_geometry",
            "For each T, the hidden vectors of the training points (dots) and the feature directions "
            "W_i (lines, the 20 longest): small T stores data points, large T stores features.",
            viz.hidden_geometry(records),
        ),
        FigureSpec(
            "dimensionality",
            "Dimensionality of each training point's hidden vector and of each feature's direction against "
            "T, "
            ""
            ""
            ""
            "with the curve 2/T (T points evenly spread in 2 dimensions).",
            viz.dimensionality_vs_dataset_size(records),
        ),
    ]
    explanation = f"""
<p>{cfg.n_features} features, each present with probability {p} (so a point has about
{cfg.n_features * p:.3g} active features),
compressed into {cfg.d_hidden} hidden dimensions, with every input scaled to unit length. Instead of fresh
samples
each step, each model sees one fixed training set of T points, trained full-batch with AdamW (weight decay
{cfg.weight_decay}), warm-up and cosine decay. Test loss is measured on {cfg.test_points} fresh points.</p>
<p><b>What to look for.</b> With few points, the model <i>memorises</i>: it stores the training points
themselves
as directions in the hidden plane, spread like a regular T-gon (each point's dimensionality ≈ 2/T), and the
features are a blur. With many points it <i>generalises</i>: it stores features in superposition and the data
points
follow them. In between, neither strategy works well, and the test loss peaks: double descent.</p>
"""
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "feature_probability": p,
        "per_T": records,
        "peak_T": int(sizes[peak]),
    }
    return Result(
        "Toy models: superposition, memorisation and double descent",
        explanation,
        summary,
        figures,
        highlights,
    )


def _train_at(cfg: DoubleDescentConfig, source, T: int) -> dict:
    """`replicas` models, each on its own T fixed points; the record of the lowest training loss."""
    data_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, f"double-descent-data-T{T}"))
    train = FixedDataset.draw(source, T, data_gen)  # each replica its own T points
    init_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, f"double-descent-init-T{T}"))
    model = ToyModel(cfg.replicas, cfg.n_features, cfg.d_hidden, generator=init_gen)
    train_toy_model(
        model,
        train,
        steps=cfg.steps,
        batch_size=T,
        lr=cfg.lr,
        schedule="cosine",
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        seed=derive_seed(cfg.seed, f"double-descent-train-T{T}"),
        log_every=max(1, cfg.steps // 10),
        desc=f"double descent T={T}",
    )
    with torch.no_grad():
        train_loss = model.instance_losses(train.x)
    test_loss = evaluate_losses(
        model, source, n_rows=cfg.test_points, seed=derive_seed(cfg.seed, "double-descent-test")
    )
    best = int(train_loss.argmin())
    W = model.W.detach()[best]  # (hidden, feat)
    H = model.hidden(train.x).detach()[:, best].T  # (hidden, point): each training point's hidden vector
    data_dims = geometry.feature_dimensionality(H)
    feat_norms = geometry.feature_norms(W)
    strong = feat_norms >= 0.1 * feat_norms.max()
    feat_dims = geometry.feature_dimensionality(W)
    return {
        "T": T,
        "train_loss": train_loss[best].item(),
        "test_loss": test_loss[best].item(),
        "replica_train_losses": train_loss.tolist(),
        "replica_test_losses": test_loss.tolist(),
        "mean_data_dimensionality": data_dims.mean().item(),
        "mean_feature_dimensionality": feat_dims[strong].mean().item(),
        "data_dimensionality": data_dims,
        "feature_dimensionality": feat_dims,
        "W": W,
        "b": model.b.detach()[best],
        "hidden_vectors": H.T,  # [T][d_hidden]
    }
