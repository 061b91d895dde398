"""`double-descent`: finite data, from memorising data points to generalising features.

After "Superposition, Memorization, and Double Descent" (Henighan et al. 2023): many sparse
features, 2 hidden dimensions, inputs scaled to unit length, a fixed training set of T points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import matplotlib.pyplot as plt
import numpy as np
import torch
from pydantic import Field

from superposition.errors import SuperpositionError
from superposition.experiments.base import Result, register
from superposition.experiments.common import PositiveFloat, Probability, ToyConfig
from superposition.report.html import FigureSpec
from superposition.toy import geometry
from superposition.toy.data import FeatureDistribution, FixedDataset, Normalized
from superposition.toy.model import ToyModel
from superposition.toy.train import evaluate_losses, train_toy_model

DEFAULT_SIZES = [3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000, 3000, 5000, 8000]


class DoubleDescentConfig(ToyConfig):
    """`dataset_sizes` is the sweep over T; each T trains `replicas` models on their own datasets
    and keeps the one with the lowest *training* loss (choosing by test loss would peek)."""

    n_features: int = Field(500, gt=0)
    d_hidden: int = Field(2, gt=0)
    feature_probability: Probability | list[Probability] | None = 0.006
    dataset_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_SIZES), min_length=1
    )
    replicas: int = Field(3, ge=1)
    steps: int = Field(5000, gt=0)
    lr: PositiveFloat = 1e-2
    warmup_steps: int = Field(250, ge=0)
    weight_decay: float = Field(1e-2, ge=0.0)
    normalize: bool = True
    test_points: int = Field(8192, gt=0)


@register(
    "double-descent",
    "finite data: 500 sparse features in 2 dimensions, dataset size T from 3 to 8000: test loss peaks between memorising and generalising",
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
    records = []
    for k, T in enumerate(sorted(cfg.dataset_sizes)):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + k)
        train = FixedDataset.draw(source, T, gen)  # each replica its own T points
        model = ToyModel(reps, cfg.n_features, cfg.d_hidden, generator=gen)
        train_toy_model(
            model,
            train,
            steps=cfg.steps,
            batch_size=T,
            lr=cfg.lr,
            schedule="cosine",
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed + k,
            log_every=max(1, cfg.steps // 10),
            desc=f"double descent T={T}",
        )
        with torch.no_grad():
            train_loss = model.instance_losses(train.x)
        test_loss = evaluate_losses(model, source, n_rows=cfg.test_points, seed=cfg.seed + 10_000)
        best = int(train_loss.argmin())
        W = model.W.detach()[best]  # (hidden, feat)
        H = model.hidden(train.x).detach()[:, best].T  # (hidden, point): each training point's hidden vector
        data_dims = geometry.feature_dimensionality(H)
        feat_norms = geometry.feature_norms(W)
        strong = feat_norms >= 0.1 * feat_norms.max()
        feat_dims = geometry.feature_dimensionality(W)
        records.append(
            {
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
        )
    sizes = np.array([r["T"] for r in records])
    test = np.array([r["test_loss"] for r in records])
    train = np.array([r["train_loss"] for r in records])
    peak = int(np.argmax(test))
    highlights = {
        "setting": f"{cfg.n_features} features, {cfg.d_hidden} hidden dimensions, p = {p}, inputs {'unit-normalised' if cfg.normalize else 'raw'}, "
        f"{cfg.steps} full-batch AdamW steps (weight decay {cfg.weight_decay}), best of {reps} per T",
        "test loss peak": f"T = {sizes[peak]} (test {test[peak]:.4g}; at the smallest T {test[0]:.4g}, at the largest {test[-1]:.4g})",
        "data-point dimensionality at the smallest T": f"{records[0]['mean_data_dimensionality']:.3f} (2/T = {2 / sizes[0]:.3f})",
    }
    figures = [
        FigureSpec(
            "loss_vs_T",
            "Train and test loss against dataset size T. Test loss rises to a peak between the memorising "
            "and generalising regimes, then falls again: double descent.",
            _loss_figure(sizes, train, test),
        ),
        FigureSpec(
            "hidden_geometry",
            "For each T, the hidden vectors of the training points (dots) and the feature directions "
            "W_i (lines, the 20 longest): small T stores data points, large T stores features.",
            _geometry_figure(records),
        ),
        FigureSpec(
            "dimensionality",
            "Dimensionality of each training point's hidden vector and of each feature's direction against T, "
            "with the curve 2/T (T points evenly spread in 2 dimensions).",
            _dimensionality_figure(records),
        ),
    ]
    explanation = f"""
<p>{cfg.n_features} features, each present with probability {p} (so a point has about {cfg.n_features * p:.3g} active features),
compressed into {cfg.d_hidden} hidden dimensions, with every input scaled to unit length. Instead of fresh samples
each step, each model sees one fixed training set of T points, trained full-batch with AdamW (weight decay
{cfg.weight_decay}), warm-up and cosine decay. Test loss is measured on {cfg.test_points} fresh points.</p>
<p><b>What to look for.</b> With few points, the model <i>memorises</i>: it stores the training points themselves
as directions in the hidden plane, spread like a regular T-gon (each point's dimensionality ≈ 2/T), and the
features are a blur. With many points it <i>generalises</i>: it stores features in superposition and the data points
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


def _loss_figure(sizes, train, test):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(sizes, test, "o-", label="test loss (fresh data)", color="tab:red")
    ax.plot(sizes, train, "o-", label="train loss", color="tab:blue")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dataset size T")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Double descent in a toy model")
    fig.tight_layout()
    return fig


def _geometry_figure(records):
    n = len(records)
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, records):
        H = np.asarray(r["hidden_vectors"])
        W = np.asarray(r["W"])
        top = np.argsort(-np.linalg.norm(W, axis=0))[:20]
        scale = max(1e-6, np.abs(H).max(), np.abs(W[:, top]).max())
        for i in top:
            ax.plot([0, W[0, i] / scale], [0, W[1, i] / scale], color="tab:orange", lw=0.8, alpha=0.8)
        ax.scatter(H[:, 0] / scale, H[:, 1] / scale, s=6, color="tab:blue", zorder=3)
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"T = {r['T']}", fontsize=9)
    fig.suptitle("Hidden vectors of training points (blue) and feature directions (orange)")
    fig.tight_layout()
    return fig


def _dimensionality_figure(records):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in records:
        d = np.asarray(r["data_dimensionality"])
        f = np.asarray(r["feature_dimensionality"])
        f = f[f > 1e-3]
        ax.scatter(
            np.full(d.shape, r["T"]) * np.exp(np.random.default_rng(0).uniform(-0.05, 0.05, d.shape)),
            d,
            s=4,
            alpha=0.3,
            color="tab:blue",
        )
        ax.scatter(
            np.full(f.shape, r["T"]) * np.exp(np.random.default_rng(1).uniform(-0.05, 0.05, f.shape)),
            f,
            s=4,
            alpha=0.3,
            color="tab:orange",
        )
    sizes = np.array([r["T"] for r in records], dtype=float)
    grid = np.geomspace(sizes.min(), sizes.max(), 200)
    ax.plot(grid, np.minimum(1.0, 2 / grid), "k--", label="2/T")
    ax.plot(
        sizes,
        [r["mean_data_dimensionality"] for r in records],
        "o-",
        color="tab:blue",
        label="training points (mean)",
    )
    ax.plot(
        sizes,
        [r["mean_feature_dimensionality"] for r in records],
        "o-",
        color="tab:orange",
        label="features (mean of the strong ones)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dataset size T")
    ax.set_ylabel("dimensionality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
